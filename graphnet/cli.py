"""The ``graphnet`` command: render, inspect and run saved plans.

    graphnet render PLAN -o graph.svg [--collapse] [--passes]
    graphnet inspect PLAN [--json] [--report] [--kernels numpy|cupy [-o DIR]]
    graphnet export-onnx PLAN -o model.onnx [--opset N]
    graphnet bisect SCRIPT.py [--tolerance T]
    graphnet run PLAN --input x=batch.npy [--output-dir DIR]

Errors are one line on stderr with exit status 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
from typing import Any, Sequence

import numpy as np

from .errors import GraphnetError


class _CliError(GraphnetError):
    """A bad argument the parser could not catch (an unreadable input array)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphnet", description="Render, inspect and run saved graphnet plans.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser("render", help="draw a plan's graph (png, svg, pdf or dot)",
                                 description="Draw a saved plan's graph with Graphviz; the format follows "
                                             "the output file's suffix.")
    render.add_argument("plan", metavar="PLAN", help="a plan file written by CompiledPlan.save")
    render.add_argument("-o", "--output", required=True, help="output file: .png, .svg, .pdf or .dot")
    render.add_argument("--collapse", action="store_true", help="draw each top-level module as one box")
    render.add_argument("--passes", action="store_true",
                        help="draw the graph after each compile pass, one file per pass")

    inspect = commands.add_parser("inspect", help="print a plan's inputs, outputs, parameters and ops",
                                  description="Print what a saved plan holds: format version, kind, inputs, "
                                              "outputs, parameters with shapes, op counts and size.")
    inspect.add_argument("plan", metavar="PLAN")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--report", action="store_true",
                         help="print the compile report: passes, fusion groups, what was not fused and why, "
                              "kernel counts and kernel generation (loads the plan)")
    inspect.add_argument("--kernels", choices=["numpy", "cupy"],
                         help="print the source of every kernel the plan's fused groups are generated as on "
                              "this backend (numba Python for numpy, CUDA C++ for cupy; no GPU needed)")
    inspect.add_argument("-o", "--output-dir", metavar="DIR",
                         help="with --kernels: write one complete source file per kernel into DIR instead "
                              "(.py for numpy, .cu for cupy: each compiles with NVRTC exactly as written)")

    export_onnx = commands.add_parser("export-onnx", help="write a plan's declared graph as an ONNX model",
                                      description="Write a saved plan's declared graph, in evaluation mode with its "
                                                  "parameters, as an ONNX model (gn.onnx.export).")
    export_onnx.add_argument("plan", metavar="PLAN")
    export_onnx.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export_onnx.add_argument("--opset", type=int, default=None, help="the ONNX opset (default: graphnet's)")

    bisect = commands.add_parser(
        "bisect", help="find the first optimisation that changes a computation's numbers",
        description="Run SCRIPT (a Python file) and call its FUNCTION, which returns a dict with 'outputs', "
                    "'feeds' and optionally 'optimizer' and 'mode'; compile that with every optimisation off, "
                    "switch them on one at a time, and name the first that changes the results beyond the "
                    "tolerance, with the op and source line where the difference first appears.")
    bisect.add_argument("script", metavar="SCRIPT.py")
    bisect.add_argument("--function", default="bisect_case", help="the function to call (default: bisect_case)")
    bisect.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance (default: 1e-4)")

    run = commands.add_parser("run", help="run a plan once on arrays from .npy files",
                              description="Run a saved plan once. A training plan takes one optimizer step "
                                          "(in memory; the file is not changed).")
    run.add_argument("plan", metavar="PLAN")
    run.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                     help="a feed, repeatable")
    run.add_argument("--output-dir", "-o", help="save each output as DIR/NAME.npy instead of printing it")
    run.add_argument("--executor", default="numpy")

    commands.add_parser("prepare", help="compile the NumPy backend's kernels into their caches (install time)",
                        description="Compile the CPU kernel library (every convolution algorithm, the "
                                    "hand-written loops) and the common fused loops into numba's and "
                                    "graphnet's caches, so that a first training step does not compile them.")
    return parser


def _feeds(items: Sequence[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise _CliError(f"--input takes NAME=FILE.npy, got {item!r}")
        try:
            info = os.stat(path)
        except (OSError, ValueError) as exc:
            raise _CliError(f"cannot read input {name!r} from {path!r}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would be read forever
            raise _CliError(f"input {name!r}: {path!r} is not a regular file")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _CliError(f"cannot read input {name!r} from {path!r}: {exc}") from None
        if not isinstance(feeds[name], np.ndarray):
            raise _CliError(f"input {name!r}: {path!r} is an .npz archive; give one array per .npy file")
    return feeds


def _bisect_case(script: str, function: str) -> dict[str, Any]:
    """Run the user's own script (it is code they chose to run, like ``python SCRIPT``) and
    call its ``function`` for the computation to bisect."""
    import runpy

    if not os.path.isfile(script):
        raise _CliError(f"cannot read script {script!r}")
    namespace = runpy.run_path(script, run_name="__graphnet_bisect__")
    if not callable(namespace.get(function)):
        raise _CliError(f"{script!r} defines no function {function!r} (it should return a dict with "
                        f"'outputs', 'feeds' and optionally 'optimizer' and 'mode')")
    case = namespace[function]()
    if not isinstance(case, dict) or not {"outputs", "feeds"} <= set(case) \
            or not set(case) <= {"outputs", "feeds", "optimizer", "mode", "seed"}:
        raise _CliError(f"{function}() must return a dict with 'outputs', 'feeds' and optionally 'optimizer', "
                        f"'mode' and 'seed'")
    return case


def _inspect_text(summary: dict[str, Any]) -> str:
    def spec(s: dict[str, Any]) -> str:
        dims = ",".join("?" if d is None else str(d) for d in s["shape"])
        return f"{s['dtype']}[{dims}]"

    lines = [f"{summary['path']}: graphnet plan, format version {summary['format_version']} "
             f"(written by graphnet {summary['graphnet_version']}), {summary['bytes']:,} bytes",
             f"kind: {summary['kind']}; {summary['steps']} steps; saved from the {summary['executor']} executor"]
    if summary["optimizer"]:
        hyper = ", ".join(f"{k}={v}" for k, v in summary["optimizer"]["hyper"].items() if v is not None)
        lines.append(f"optimizer: {summary['optimizer']['name']} ({hyper}); {summary['step_count']} steps taken")
    lines.append("inputs:")
    lines += [f"  {name}: {spec(s)}" for name, s in summary["inputs"].items()]
    lines.append("outputs:")
    lines += [f"  {name}: {spec(s)}" for name, s in summary["outputs"].items()]
    lines.append(f"parameters ({summary['parameter_count']:,} values):")
    lines += [f"  {name}: {spec(s)}{'' if s['trainable'] else '  (state)'}"
              for name, s in summary["parameters"].items()]
    lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in summary["op_counts"].items()))
    lines.append(f"memory: {summary['memory_at_batch_1']:,} bytes of temporaries at batch 1 (peak)")
    peak = summary["peak_memory"]
    lines.append(f"peak memory: {peak['bytes']:,} + {peak['bytes_per_batch_item']:,} * batch bytes "
                 f"(storage blocks, unplanned results and kernel scratch, before running)")
    return "\n".join(lines)


def _print_kernels(path: str, backend: str, output_dir: str | None) -> None:
    """Every generated kernel of the plan at ``path`` on ``backend``, printed or one file each."""
    from .executors import get_executor
    from .export import load_parts

    sources = get_executor(backend).kernel_sources(load_parts(path).plan)
    if output_dir is None:
        for label, _, source in sources:
            print(f"# --- {label}" if backend == "numpy" else f"// --- {label}")
            print(source)
        if not sources:
            print("(this plan has no generated kernels)")
        return
    os.makedirs(output_dir, exist_ok=True)
    suffix = ".py" if backend == "numpy" else ".cu"
    for _, stem, source in sources:
        target = os.path.join(output_dir, stem + suffix)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(source)
        print(target)


def _command(args: argparse.Namespace) -> None:
    from .compile import load as load_plan
    from .export import file_summary

    if args.command == "inspect" and args.output_dir and not args.kernels:
        raise _CliError("-o/--output-dir goes with --kernels")
    if args.command == "inspect" and args.kernels:
        _print_kernels(args.plan, args.kernels, args.output_dir)
    elif args.command == "inspect" and args.report:
        report = load_plan(args.plan).report
        print(report.to_json(indent=2) if args.json else report)
    elif args.command == "inspect":
        summary = file_summary(args.plan)
        print(json.dumps(summary, indent=2) if args.json else _inspect_text(summary))
    elif args.command == "render":
        from .render import render

        written = render(load_plan(args.plan), args.output, collapse=args.collapse, passes=args.passes)
        for path in written if isinstance(written, list) else [written]:
            print(path)
    elif args.command == "export-onnx":
        from .onnx import DEFAULT_OPSET, export

        print(export(load_plan(args.plan), args.output, args.opset or DEFAULT_OPSET))
    elif args.command == "bisect":
        from .debug import bisect_passes

        print(bisect_passes(tolerance=args.tolerance, **_bisect_case(args.script, args.function)))
    elif args.command == "prepare":
        from .prepare import prepare

        print(" ".join(f"{key}={value}" for key, value in prepare().items()))
    elif args.command == "run":
        outputs = load_plan(args.plan, executor=args.executor).run(_feeds(args.input))
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            for name, value in outputs.items():
                path = os.path.join(args.output_dir, f"{name}.npy")
                np.save(path, value, allow_pickle=False)
                print(path)
        else:
            with np.printoptions(precision=6, threshold=200, edgeitems=3):
                for name, value in outputs.items():
                    print(f"{name}: {value.dtype}{list(value.shape)}\n{value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graphnet`` console script; returns the exit status."""
    args = _parser().parse_args(argv)  # exits with 2 on usage errors
    try:
        _command(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `graphnet inspect PLAN | head`: the reader left, which is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # every failure is one line (a traceback only with GRAPHNET_DEBUG set)
        if os.environ.get("GRAPHNET_DEBUG"):
            traceback.print_exc()
        kind = "" if isinstance(exc, (GraphnetError, OSError)) else f"{type(exc).__name__}: "
        message = " ".join(str(exc).split()).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"graphnet {args.command}: error: {kind}{message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cases run under ``mpiexec -n 2`` by tests/test_distributed.py (not collected by pytest).

    mpiexec -n 2 python tests/mpi_cases.py CASE OUT.json

Rank 0 writes what the test checks to OUT.json. Each case builds the same small model on
every process; the data are deterministic, so rank 0 can also train the single-process
reference on the concatenated batches (under a group of one) and compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

import graphnet as gn
from graphnet.distributed import SingleProcess

B = 6  # per-process batch
STEPS = 5


def _model(seed: int = 0, dropout: float = 0.0, wider: bool = False):
    gn.manual_seed(seed)
    layers = [gn.nn.Linear(7, 12 if not wider else 13), gn.nn.Tanh()]
    if dropout:
        layers.append(gn.nn.Dropout(dropout))
    layers += [gn.nn.Linear(12 if not wider else 13, 4)]
    return gn.nn.Sequential(*layers)


def _data(n: int):
    """The first ``n`` samples of one fixed pool (every case and the test read the same)."""
    rng = np.random.default_rng(42)
    x, y = rng.normal(size=(256, 7)), rng.integers(0, 4, 256)
    return x[:n], y[:n]


def _compile(model, optimizer, data_parallel: bool, seed: int = 3, dtype: str = "float64"):
    model.to_dtype(dtype)
    x = gn.placeholder("x", (None, 7), dtype=dtype)
    y = gn.placeholder("y", (None,), dtype="int64")
    loss = gn.losses.cross_entropy(model(x), y)
    kwargs = {"data_parallel": True, "bucket_bytes": 200} if data_parallel else {}
    return gn.compile(loss, optimizer=optimizer, seed=seed, **kwargs)


def _params(model) -> list[np.ndarray]:
    return [np.array(p.data) for p in model.parameters()]


def _digest(arrays: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


OPTIMIZERS = {
    "sgd_momentum": lambda: gn.optim.SGD(lr=0.1, momentum=0.9),
    "adam": lambda: gn.optim.Adam(lr=0.01),
    "adam_clipped": lambda: gn.optim.Adam(lr=0.01, max_grad_norm=0.05),
}


def equivalence(comm) -> dict:
    """2 processes x batch B against 1 process x batch 2B, per optimizer."""
    x, y = _data(STEPS * B * comm.size)
    result = {}
    for name, make in OPTIMIZERS.items():
        model = _model()
        plan = _compile(model, make(), True)
        for step in range(STEPS):
            start = (step * comm.size + comm.rank) * B
            plan.run(x=x[start:start + B], y=y[start:start + B])
        mine = _params(model)
        digests = comm.allgather_object(_digest(mine))
        gn.distributed.set_communicator(SingleProcess())  # the reference: one process, batch 2B
        reference = _model()
        single = _compile(reference, make(), False)
        for step in range(STEPS):
            start = step * comm.size * B
            single.run(x=x[start:start + comm.size * B], y=y[start:start + comm.size * B])
        gn.distributed.set_communicator(comm)
        error = max(float(np.max(np.abs(a - b))) for a, b in zip(mine, _params(reference)))
        result[name] = {"max_abs_diff": error, "ranks_identical": len(set(digests)) == 1}
    return result


def dropout(comm) -> dict:
    """Dropout masks differ per process; the parameters stay bit-identical across processes."""
    x, y = _data(B)
    model = _model(dropout=0.5)
    x_ = gn.placeholder("x", (None, 7))
    hidden = model[1](model[0](x_))
    masked = model[2](hidden)
    plan = gn.compile({"loss": gn.losses.cross_entropy(model[3](masked), gn.placeholder("y", (None,), dtype="int64")),
                       "masked": masked}, optimizer=gn.optim.SGD(lr=0.1), seed=11, data_parallel=True)
    masks = []
    for _ in range(3):
        out = plan.run(x=x.astype(np.float32), y=y)
        masks.append((np.asarray(out["masked"]) == 0).tolist())
    every = comm.allgather_object(masks)
    digests = comm.allgather_object(_digest(_params(model)))
    # saved by rank 0 and loaded by both: each process draws its own masks again
    path = os.environ["GRAPHNET_TEST_TMP"] + "/dropout.gnplan"
    if comm.rank == 0:
        plan.save(path)
    comm.barrier()
    loaded = gn.load(path)
    out = loaded.run(x=x.astype(np.float32), y=y)
    after = comm.allgather_object((np.asarray(out["masked"]) == 0).tolist())
    loaded_digests = comm.allgather_object(_digest([np.array(loaded.variables[n].data)
                                                    for n in sorted(loaded.variables)]))
    return {"masks_differ": every[0] != every[1], "ranks_identical": len(set(digests)) == 1,
            "loaded_masks_differ": after[0] != after[1], "loaded_identical": len(set(loaded_digests)) == 1}


def checkpoint(comm, path: str) -> dict:
    """Train STEPS steps on 2 processes, rank 0 saves; the test resumes it in one process."""
    x, y = _data(STEPS * B * comm.size)
    model = _model()
    plan = _compile(model, gn.optim.Adam(lr=0.01), True)
    for step in range(STEPS):
        start = (step * comm.size + comm.rank) * B
        plan.run(x=x[start:start + B], y=y[start:start + B])
    if comm.rank == 0:
        plan.save(path)
    comm.barrier()
    return {"saved": path}


def killed(comm) -> dict:
    """Rank 1 dies after two steps; rank 0 must stop with DistributedTimeoutError."""
    x, y = _data(B * 2)
    plan = _compile(_model(), gn.optim.SGD(lr=0.1), True)
    for step in range(2):
        plan.run(x=x[:B], y=y[:B])
    if comm.rank == 1:
        os._exit(3)
    start = time.perf_counter()
    try:
        for _ in range(100):
            plan.run(x=x[:B], y=y[:B])
    except gn.DistributedTimeoutError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "seconds": time.perf_counter() - start}
    return {"error": None}


def mismatch(comm) -> dict:
    """Rank 1 builds a different model: compiling must refuse on both."""
    try:
        _compile(_model(wider=comm.rank == 1), gn.optim.SGD(lr=0.1), True)
    except gn.DistributedError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


def fit(comm) -> dict:
    """gn.train.fit over sharded loaders: rank 0's history is the single process's."""
    x, y = _data(48)
    histories = {}
    for label, group in (("single", SingleProcess()), ("parallel", comm)):
        gn.distributed.set_communicator(group)
        model = _model()
        plan = _compile(model, gn.optim.SGD(lr=0.1, momentum=0.9), label == "parallel")
        loader = gn.data.DataLoader(x, y, batch_size=B if label == "parallel" else B * comm.size, shuffle=True,
                                    seed=5, shard=(group.rank, group.size))
        lines: list[str] = []
        history = gn.train.fit(plan, loader, epochs=2, feed_names=("x", "y"), progress=False, log=lines.append)
        histories[label] = {"loss": history.train_loss, "lines": len(lines)}
    gn.distributed.set_communicator(comm)
    lines = comm.allgather_object(histories["parallel"]["lines"])
    return {"single": histories["single"]["loss"], "parallel": histories["parallel"]["loss"], "lines": lines}


def syncbn(comm) -> dict:
    """SyncBatchNorm on 2 processes x batch B against BatchNorm on 1 process x batch 2B (float64):
    parameters and running statistics after 4 steps; plain BatchNorm's running statistics, per
    process, differ from the big batch's."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(8 * B * comm.size, 3, 4, 4)), rng.integers(0, 2, 8 * B * comm.size)

    def build(sync: bool):
        gn.manual_seed(0)
        norm = gn.nn.SyncBatchNorm(3) if sync else gn.nn.BatchNorm2d(3)
        model = gn.nn.Sequential(gn.nn.Conv2d(3, 3, 3, padding=1), norm, gn.nn.ReLU(), gn.nn.Flatten(),
                                 gn.nn.Linear(48, 2))
        model.to_dtype("float64")
        xs = gn.placeholder("x", (None, 3, 4, 4), dtype="float64")
        ys = gn.placeholder("y", (None,), dtype="int64")
        return model, norm, gn.compile(gn.losses.cross_entropy(model(xs), ys), optimizer=gn.optim.SGD(lr=0.1),
                                       data_parallel=True)

    def state(model, norm):
        return [np.array(p.data) for p in model.parameters()] + [np.array(norm.running_mean.data),
                                                                   np.array(norm.running_var.data)]

    result = {}
    for sync in (True, False):
        model, norm, plan = build(sync)
        for step in range(4):
            start = (step * comm.size + comm.rank) * B
            plan.run(x=x[start:start + B], y=y[start:start + B])
        mine = state(model, norm)
        gn.distributed.set_communicator(SingleProcess())
        ref_model, ref_norm, ref_plan = build(False)
        for step in range(4):
            start = step * comm.size * B
            ref_plan.run(x=x[start:start + comm.size * B], y=y[start:start + comm.size * B])
        gn.distributed.set_communicator(comm)
        result["sync" if sync else "plain"] = max(float(np.max(np.abs(a - b))) for a, b in zip(mine, state(ref_model, ref_norm)))
    return result


def nonfinite(comm) -> dict:
    """Rank 1's batch makes its loss NaN: neither process applies that step."""
    x, y = _data(B)
    model = _model()
    plan = _compile(model, gn.optim.SGD(lr=0.1), True)
    plan.run(x=x, y=y)
    before = _params(model)
    bad = x.copy()
    if comm.rank == 1:
        bad[0, 0] = np.nan
    try:
        plan.run(x=bad, y=y)
        error = None
    except gn.LossNotFiniteError as exc:
        error = str(exc)
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, _params(model)))
    errors = comm.allgather_object(error)
    digests = comm.allgather_object(_digest(_params(model)))
    plan.run(x=x, y=y)  # and training goes on together
    return {"errors": errors, "unchanged": unchanged, "ranks_identical": len(set(digests)) == 1}


CASES = {"syncbn": syncbn, "nonfinite": nonfinite, "equivalence": equivalence, "dropout": dropout, "killed": killed, "mismatch": mismatch, "fit": fit}


def main() -> None:
    case, out = sys.argv[1], sys.argv[2]
    comm = gn.distributed.init()
    result = checkpoint(comm, out + ".gnplan") if case == "checkpoint" else CASES[case](comm)
    result["size"] = comm.size
    if comm.rank == 0:
        with open(out, "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main()

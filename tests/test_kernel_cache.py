"""The generated-kernel cache is kept as trusted caches keep theirs: private folder and files
whatever the umask, no folder another user could write, no planted bytecode, swapped source or
symbolic link ever used. Each case runs in a child process with its own cache folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("numba")

CHILD = '''
import os, sys, warnings
import numpy as np
import graphnet as gn
warnings.simplefilter("always")
x = gn.placeholder("x", (4, 5))
plan = gn.compile({"y": gn.relu(x * 2.0 + 1.0) * 3.0})
y = plan.run(x=np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5))["y"]
expected = np.maximum(np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5) * 2 + 1, 0) * 3
assert np.allclose(y, expected), y
print("ok", plan.report.codegen["numba_groups"])
'''


def _child(cache: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    prefix = f"import os; os.umask({umask:#o})\n" if umask is not None else ""
    env = dict(os.environ, GRAPHNET_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(CHILD)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "ok 1" in done.stdout, done.stdout + done.stderr
    return done


def _kernel_files(cache: Path) -> list[Path]:
    return sorted((cache / "kernels").glob("graphnet_kernel_*.py"))


def test_the_cache_is_private_whatever_the_umask(tmp_path):
    cache = tmp_path / "cache"
    _child(cache, umask=0)
    for folder in (cache, cache / "kernels", cache / "kernels" / "__pycache__"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = _kernel_files(cache)
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not list((cache / "kernels").glob("*.tmp"))


def test_a_folder_others_may_write_is_not_used(tmp_path):
    cache = tmp_path / "shared"
    (cache / "kernels").mkdir(parents=True)
    os.chmod(cache / "kernels", 0o777)
    done = _child(cache)
    assert "UntrustedCacheWarning" in done.stderr and "not private" in done.stderr
    assert not _kernel_files(cache)  # nothing written where others could replace it


def test_planted_bytecode_and_a_swapped_source_never_run(tmp_path):
    cache = tmp_path / "cache"
    _child(cache)
    source = _kernel_files(cache)[0]
    marker = tmp_path / "pwned"
    evil = f"open({str(marker)!r}, 'w').write('ran')\ndef kernel(*a):\n    raise SystemExit(3)\n"
    # bytecode Python would accept for the source (its mtime and size), in both usual places
    code = compile(evil, str(source), "exec")
    data = importlib._bootstrap_external._code_to_timestamp_pyc(code, int(source.stat().st_mtime),
                                                                 source.stat().st_size)
    for folder in (source.parent / "__pycache__", source.parent):
        (folder / f"{source.stem}.{sys.implementation.cache_tag}.pyc").write_bytes(data)
    _child(cache)
    assert not marker.exists()
    source.write_text(evil)  # swapped between runs: detected, rewritten, and the right kernel runs
    _child(cache)
    assert not marker.exists() and "open(" not in source.read_text()


def test_a_planted_link_is_replaced_not_followed(tmp_path):
    cache = tmp_path / "cache"
    _child(cache)
    source = _kernel_files(cache)[0]
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    source.unlink()
    source.symlink_to(outside)
    _child(cache)
    assert outside.read_text() == "keep me"
    assert not source.is_symlink() and source.read_text().startswith("import math")


def test_a_full_disk_under_the_caches_is_a_warning_not_a_failure(tmp_path):
    """Both caches on a nearly full file system (a 256 KB tmpfs): the CNN compiles and trains,
    with one KernelCacheWarning (numba raised OSError: No space left on device before)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'not permitted'})")
    try:
        (small / "fill").write_bytes(b"\0" * 250_000)
        examples = str(Path(__file__).resolve().parent.parent / "examples")
        child = f'''
import sys, warnings, numpy as np
sys.path.insert(0, {examples!r})
import graphnet as gn
from mnist_cnn import seed_cnn
gn.manual_seed(0)
x = gn.placeholder("x", (None, 1, 28, 28)); labels = gn.placeholder("labels", (None,), dtype="int64")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    train = gn.compile(gn.losses.cross_entropy(seed_cnn()(x), labels), optimizer=gn.optim.SGD(lr=0.1))
    rng = np.random.default_rng(0)
    loss = train.run(x=rng.standard_normal((8, 1, 28, 28)).astype(np.float32), labels=rng.integers(0, 10, 8))["loss"]
assert np.isfinite(loss)
print(sorted({{type(w.message).__name__ for w in seen}}))
'''
        env = dict(os.environ, GRAPHNET_CACHE_DIR=str(small / "graphnet"), NUMBA_CACHE_DIR=str(small / "numba"))
        done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "KernelCacheWarning" in done.stdout
        leftovers = [str(p) for p in small.rglob("*") if ".tmp" in p.name]
        assert not leftovers, leftovers  # no half-written temporaries left on the full disk
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_a_read_only_home_and_package_is_a_warning_not_a_failure(tmp_path):
    """graphnet installed read-only (a system package, a container image) and a read-only home:
    numba finds no folder to cache the library's loops in (it raised RuntimeError: cannot cache
    function before) and graphnet's cache folder cannot be made (it works in a private
    temporary folder). The CNN compiles its generated kernels and trains, with one
    KernelCacheWarning."""
    frozen = tmp_path / "frozen"
    (frozen / "home").mkdir(parents=True)
    package = Path(__file__).resolve().parent.parent / "graphnet"
    shutil.copytree(package, frozen / "site" / "graphnet", ignore=shutil.ignore_patterns("__pycache__"))
    examples = Path(__file__).resolve().parent.parent / "examples"
    for name in ("mnist_cnn.py", "_common.py"):
        shutil.copy(examples / name, frozen / "site")
    bound = subprocess.run(["mount", "--bind", str(frozen), str(frozen)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder here ({bound.stderr.decode().strip() or 'not permitted'})")
    try:
        made_read_only = subprocess.run(["mount", "-o", "remount,bind,ro", str(frozen)], capture_output=True)
        if made_read_only.returncode != 0:
            pytest.skip(f"cannot make a mount read-only here ({made_read_only.stderr.decode().strip()})")
        child = '''
import warnings, numpy as np
import graphnet as gn
assert gn.__file__.startswith(%r), gn.__file__
from mnist_cnn import seed_cnn
gn.manual_seed(0)
x = gn.placeholder("x", (None, 1, 28, 28)); labels = gn.placeholder("labels", (None,), dtype="int64")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    train = gn.compile(gn.losses.cross_entropy(seed_cnn()(x), labels), optimizer=gn.optim.SGD(lr=0.1))
    rng = np.random.default_rng(0)
    feeds = dict(x=rng.standard_normal((8, 1, 28, 28)).astype(np.float32), labels=rng.integers(0, 10, 8))
    losses = [float(train.run(**feeds)["loss"]) for _ in range(3)]
assert losses[2] < losses[0], losses
print(sorted({type(w.message).__name__ for w in seen}), train.report.codegen["numba_groups"])
''' % str(frozen / "site")
        env = {k: v for k, v in os.environ.items()
               if k not in ("GRAPHNET_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
        env.update(HOME=str(frozen / "home"), PYTHONPATH=str(frozen / "site"))
        done = subprocess.run([sys.executable, "-c", child], env=env, cwd=str(frozen), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        warned, generated = done.stdout.rsplit(" ", 1)
        assert warned == "['KernelCacheWarning']" and int(generated) > 0, done.stdout
    finally:
        subprocess.run(["umount", str(frozen)], capture_output=True)

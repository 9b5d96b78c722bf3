"""Data-parallel training (graphnet.distributed, the data_parallel pass), with two real MPI
processes where mpiexec and mpi4py are installed (``pip install mpich mpi4py``), and the
pieces that need none (sharding, the pass, a group of one) in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet.distributed import SingleProcess
from helpers import compile_plan, covers

HERE = Path(__file__).resolve().parent
CASES = HERE / "mpi_cases.py"
MPIEXEC = Path(sys.executable).with_name("mpiexec")


def _mpi_reason() -> str | None:
    if not MPIEXEC.exists() and shutil.which("mpiexec") is None:
        return "mpiexec is not installed (pip install mpich mpi4py)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpich mpi4py)"
    return None


MPI_REASON = _mpi_reason()
needs_mpi = pytest.mark.skipif(MPI_REASON is not None, reason=str(MPI_REASON))


def _mpiexec(case: str, tmp_path: Path, *flags: str, timeout: float = 120, env: dict | None = None
             ) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / f"{case}.json"
    launcher = str(MPIEXEC) if MPIEXEC.exists() else shutil.which("mpiexec")
    done = subprocess.run([launcher, *flags, "-n", "2", sys.executable, str(CASES), case, str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=HERE.parent,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "GRAPHNET_NUM_THREADS": "1", **(env or {})})
    return done, json.loads(out.read_text()) if out.exists() else None


@needs_mpi
def test_two_processes_train_as_one_process_with_the_double_batch(tmp_path):
    """SGD with momentum, Adam, Adam with clipping: float64 parameters after 5 steps within 1e-6
    of one process on the concatenated batches, and bit-identical across the processes."""
    done, result = _mpiexec("equivalence", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["size"] == 2
    for name in ("sgd_momentum", "adam", "adam_clipped"):
        assert result[name]["ranks_identical"], name
        assert result[name]["max_abs_diff"] < 1e-6, (name, result[name])


@needs_mpi
def test_dropout_is_seeded_per_process_and_parameters_stay_identical(tmp_path):
    done, result = _mpiexec("dropout", tmp_path, env={"GRAPHNET_TEST_TMP": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["masks_differ"] and result["ranks_identical"]
    assert result["loaded_masks_differ"] and result["loaded_identical"]  # a saved plan loaded on both


@needs_mpi
def test_fit_reduces_its_figures_and_only_rank_0_reports(tmp_path):
    done, result = _mpiexec("fit", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(result["parallel"], result["single"], rtol=1e-12)
    assert result["lines"] == [2, 0]  # one line per epoch, from rank 0 only


@needs_mpi
def test_sync_batch_norm_normalises_with_every_processs_batch(tmp_path):
    """SyncBatchNorm on 2 processes equals BatchNorm on the double batch (parameters and running
    statistics, float64); BatchNorm keeps per-process statistics and does not."""
    done, result = _mpiexec("syncbn", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["sync"] < 1e-9 and result["plain"] > 1e-4, result


@needs_mpi
def test_a_non_finite_loss_on_one_process_stops_the_step_on_every_process(tmp_path):
    done, result = _mpiexec("nonfinite", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(result["errors"]) and "another data-parallel process" in result["errors"][0]
    assert result["unchanged"] and result["ranks_identical"]


@needs_mpi
def test_a_process_with_a_different_model_is_refused(tmp_path):
    done, result = _mpiexec("mismatch", tmp_path)
    assert result is not None, done.stderr[-3000:]
    assert result["error"] == "DistributedError" and "rank 1" in result["message"] and "(7, 13)" in result["message"]


@needs_mpi
def test_a_killed_process_stops_the_other_within_the_timeout(tmp_path):
    # the launcher's own clean-up stops the job at once
    done, _ = _mpiexec("killed", tmp_path, timeout=60, env={"GRAPHNET_DIST_TIMEOUT": "3"})
    assert done.returncode != 0
    # without it, the survivor's wait is bounded: a typed error, then the job is aborted
    done, result = _mpiexec("killed", tmp_path, "-disable-auto-cleanup", timeout=60,
                            env={"GRAPHNET_DIST_TIMEOUT": "3"})
    assert result is not None, done.stderr[-3000:]
    assert result["error"] == "DistributedTimeoutError" and 2.9 < result["seconds"] < 10
    assert "gradient bucket" in result["message"] and done.returncode != 0


@needs_mpi
def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path):
    """Saved after 5 steps on 2 processes (batch B each), loaded in this one process and trained
    3 more steps with batch 2B: the parameters of an uninterrupted single process run."""
    import mpi_cases as M  # the same model and data

    done, result = _mpiexec("checkpoint", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    x, y = M._data((M.STEPS + 3) * 2 * M.B)
    resumed = gn.load(result["saved"])
    assert resumed.data_parallel
    reference = M._model()
    single = M._compile(reference, gn.optim.Adam(lr=0.01), False)
    for step in range(M.STEPS + 3):
        batch = slice(step * 2 * M.B, (step + 1) * 2 * M.B)
        if step >= M.STEPS:
            resumed.run(x=x[batch], y=y[batch])
        single.run(x=x[batch], y=y[batch])
    got = [np.array(p.data) for p in resumed.parameters()] if hasattr(resumed, "parameters") else \
        [np.array(resumed.variables[name].data) for name in sorted(resumed.variables)]
    want = [np.array(single.variables[name].data) for name in sorted(single.variables)]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


# --- without MPI -----------------------------------------------------------------------------

def _plan(data_parallel: bool, bucket_bytes: int | None = None):
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(5, 8), gn.nn.ReLU(), gn.nn.Linear(8, 3))
    x = gn.placeholder("x", (None, 5))
    y = gn.placeholder("y", (None,), dtype="int64")
    kwargs = {"data_parallel": True, "bucket_bytes": bucket_bytes} if data_parallel else {}
    return model, gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=gn.optim.Adam(lr=0.01), seed=1,
                             **kwargs)


def test_a_group_of_one_trains_bit_identically_to_a_plain_plan():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)).astype(np.float32), rng.integers(0, 3, 10)
    plain_model, plain = _plan(False)
    dp_model, dp = _plan(True, bucket_bytes=64)
    for _ in range(4):
        assert plain.run(x=x, y=y)["loss"] == dp.run(x=x, y=y)["loss"]
    for a, b in zip(plain_model.parameters(), dp_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_the_collectives_are_steps_that_print_save_and_load(tmp_path):
    _, plan = _plan(True, bucket_bytes=64)
    ops = [step.op for step in plan.plan.steps]
    starts = [i for i, op in enumerate(ops) if op == "allreduce_start"]
    waits = [i for i, op in enumerate(ops) if op == "allreduce_wait"]
    assert len(starts) == len(waits) == 4  # 64-byte buckets: each of the four parameters alone
    assert max(starts) < min(waits)  # every sum starts before the first wait: they overlap the backward
    assert "allreduce_start" in str(plan) and "gradient bucket 1 of" in str(plan)
    assert "allreduce_wait" in str(plan.report) and len(plan.report.collectives) == 4
    if shutil.which("dot") is not None:  # the rendered graph draws them too
        assert "allreduce_start" in Path(gn.render(plan, tmp_path / "dp.svg")).read_text()
    plan.save(tmp_path / "dp.gnplan")
    loaded = gn.load(tmp_path / "dp.gnplan")
    assert [s.op for s in loaded.plan.steps] == ops and loaded.data_parallel


def test_data_parallel_needs_an_optimizer_and_sensible_buckets():
    x = gn.placeholder("x", (None, 2))
    with pytest.raises(gn.OptimizerError):
        gn.compile(gn.nn.Linear(2, 2)(x), data_parallel=True)
    with pytest.raises(gn.GraphnetError, match="bucket_bytes"):
        _plan(True, bucket_bytes=0)


@pytest.mark.parametrize("n, batch", [(48, 6), (50, 6), (49, 4), (13, 3)])
def test_shards_cover_every_sample_once_and_add_up_to_the_big_batch(n, batch):
    data = np.arange(n)
    single = gn.data.DataLoader(data, batch_size=2 * batch, shuffle=True, seed=7)
    shards = [gn.data.DataLoader(data, batch_size=batch, shuffle=True, seed=7, shard=(r, 2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    for _ in range(2):  # two epochs: the generators advance alike
        big = [b[0] for b in single]
        parts = [[b[0] for b in loader] for loader in shards]
        seen = np.concatenate([np.concatenate(p) for p in parts])
        rest = n % (2 * batch)
        dropped = rest if 0 < rest < 2 else 0
        assert len(seen) == len(set(seen.tolist())) == n - dropped
        for k, (a, b) in enumerate(zip(*parts)):
            np.testing.assert_array_equal(np.concatenate([a, b]), big[k])


def test_a_shuffling_shard_needs_a_seed_and_a_valid_rank():
    with pytest.raises(gn.data.DatasetError, match="seed"):
        gn.data.DataLoader(np.arange(4), batch_size=2, shuffle=True, shard=(0, 2))
    for bad in [(2, 2), (-1, 2), (0, 0), "0,2", (0, 2.0)]:
        with pytest.raises(gn.data.DatasetError, match="shard"):
            gn.data.DataLoader(np.arange(4), batch_size=2, shard=bad)


def test_without_mpiexec_init_is_a_group_of_one(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    group = gn.distributed.init()
    assert isinstance(group, SingleProcess)
    assert (gn.distributed.rank(), gn.distributed.size(), gn.distributed.is_main()) == (0, 1, True)
    assert gn.distributed.shard() == (0, 1)


def test_a_bad_timeout_setting_is_a_config_error(monkeypatch):
    monkeypatch.setenv("GRAPHNET_DIST_TIMEOUT", "soon")
    with pytest.raises(gn.ConfigError, match="GRAPHNET_DIST_TIMEOUT"):
        gn.distributed.timeout_seconds()


class _Mirror:
    """A group of two identical processes, in one: what another process would add is this one's
    own array, so a sum doubles it. Checks the kernels' arithmetic (averaging, in-place views,
    the gradient of a sum) without MPI."""

    rank, size = 0, 2

    def allreduce(self, array, what=""):
        array *= 2

    def start_allreduce(self, array, what=""):
        self.started = array

    def wait(self, array):
        assert array is self.started
        array *= 2

    def broadcast(self, array, root=0, what=""):
        pass

    def allgather_object(self, value):
        return [value, value]

    def barrier(self):
        pass


@covers("allreduce_start", "allreduce_wait", "allreduce_sum")
def test_collective_kernels_average_and_sum_over_the_group(monkeypatch):
    from graphnet.ops.collective import allreduce_start, allreduce_wait

    monkeypatch.setattr(gn.distributed, "_current", _Mirror())
    x = gn.placeholder("x", (None,), dtype="float64")
    w = gn.Parameter(np.array([1.5, -2.0, 0.25]), "w")
    total = gn.ops.allreduce_sum(x * w)                    # 2 (x w): the sum over two equal processes
    averaged = allreduce_wait(allreduce_start(gn.reshape(x * 1.0, (-1,)), "test"), "test")  # 2 x / 2
    loss = gn.sum(total * total)
    grads = gn.grad(loss, [w])
    plan = compile_plan({"total": total, "averaged": averaged, "dw": grads[0]})
    xv = np.array([1.0, 2.0, 3.0])
    out = plan.run(x=xv)
    np.testing.assert_array_equal(out["total"], 2 * xv * w.data)
    np.testing.assert_array_equal(out["averaged"], xv)
    # the cotangent of total is 2 total = 4 x w on each process; the gradient of the sum sums
    # it over the group (8 x w), and x * w passes x on: 8 x^2 w
    np.testing.assert_allclose(out["dw"], 8 * xv * xv * w.data)


def test_sync_batch_norm_in_one_process_is_batch_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 5, 5)).astype(np.float32)
    results = []
    for cls in (gn.nn.BatchNorm2d, gn.nn.SyncBatchNorm):
        gn.manual_seed(0)
        norm = cls(3)
        model = gn.nn.Sequential(gn.nn.Conv2d(3, 3, 3), norm)
        xs = gn.placeholder("x", (None, 3, 5, 5))
        plan = gn.compile(gn.sum(model(xs) ** 2), optimizer=gn.optim.SGD(lr=0.01))
        losses = [float(plan.run(x=x)["loss"]) for _ in range(3)]
        results.append((losses, np.array(norm.running_var.data)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5)


def test_convert_sync_batchnorm_keeps_the_parameters():
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 2, 3), gn.nn.BatchNorm2d(2), gn.nn.ReLU())
    weight = model[1].weight
    converted = gn.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], gn.nn.SyncBatchNorm) and converted[1].weight is weight
    plan = gn.compile(converted(gn.placeholder("x", (None, 1, 5, 5))), mode="train")
    assert "sync_batch_norm" in str(plan.source) and "allreduce_sum" in str(plan)

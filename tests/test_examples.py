"""Quick end-to-end runs of the examples on the real Fashion-MNIST (installed by the set-up)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import graphnet as gn

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").exists() and not os.environ.get("GRAPHNET_DATA"),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def _run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, "--no-progress"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
@needs_fashion
def test_mnist_cnn_quick_run_on_real_fashion_mnist(tmp_path):
    out = _run("mnist_cnn.py", "--limit", "3000", "--epochs", "1", "--out", str(tmp_path))
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.6  # 3000 images, one epoch: well above chance (0.1)
    history = json.loads((tmp_path / "mnist_cnn_history.json").read_text())
    assert len(history["val_accuracy"]) == 1
    for picture in ("mnist_cnn_curves.png", "mnist_cnn_prediction.png"):
        data = (tmp_path / picture).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert "first test image: predicted" in out
    resumed = gn.load(tmp_path / "mnist_cnn.gnp")  # the checkpoint written after the epoch
    assert resumed.step_count == -(-3000 // 64) and resumed.optimizer.name == "rmsprop"


@pytest.mark.slow
@needs_fashion
@pytest.mark.skipif(not Path(sys.executable).with_name("mpiexec").exists(), reason="mpiexec is not installed "
                    "(pip install mpich mpi4py)")
def test_the_main_job_trains_on_two_processes(tmp_path):
    """`mpiexec -n 2 python examples/mnist_cnn.py --distributed`: the same loss as one process
    (the same global batch), one report, from rank 0."""
    args = ["--limit", "2000", "--epochs", "1", "--no-progress"]
    one = _run("mnist_cnn.py", *args, "--out", str(tmp_path / "one"))
    done = subprocess.run([str(Path(sys.executable).with_name("mpiexec")), "-n", "2", sys.executable,
                           str(ROOT / "examples" / "mnist_cnn.py"), *args, "--distributed", "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "GRAPHNET_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("test accuracy:") == 1 and "2 data-parallel processes" in done.stdout
    loss = [float(out.split("loss ")[1].split()[0]) for out in (one, done.stdout)]
    assert abs(loss[0] - loss[1]) < 2e-3, loss  # float rounding only: the sums happen in another order
    assert gn.load(tmp_path / "two" / "mnist_cnn.gnp").data_parallel


@pytest.mark.slow
@needs_fashion
@pytest.mark.parametrize("script", ["mlp.py", "resnet.py"])
def test_other_examples_quick_run(script, tmp_path):
    # 60 small steps: enough for BatchNorm's running statistics (momentum 0.1) to settle
    out = _run(script, "--limit", "1920", "--batch-size", "32", "--epochs", "1", "--out", str(tmp_path))
    assert float(out.split("test accuracy: ")[1].split()[0]) > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("script", ["lstm_lm.py", "char_lm.py"])
def test_language_models_quick_run_on_the_standard_librarys_source(script, tmp_path):
    import math

    out = _run(script, "--steps", "30", "--eval-every", "15", "--chars", "100000", "--sample", "20",
               "--out", str(tmp_path))
    held = [float(line.split("held-out loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("step")]
    vocab = int(out.split(" symbols")[0].split(", ")[-1])
    assert len(held) == 2 and held[-1] < math.log(vocab) - 0.5  # well below a uniform guess
    assert (tmp_path / f"{script[:-3]}_loss.png").read_bytes().startswith(b"\x89PNG")
    assert "sample:" in out

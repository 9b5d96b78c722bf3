"""ONNX in and out (graphnet.onnx): export checked by ONNX's checker and held to ONNX Runtime,
import held to graphnet and to PyTorch, ONNX's own node tests, and hostile files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'graphnet[onnx]')")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT / "examples"))


def _ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (tests only)")


class EveryOp(gn.nn.Module):
    """A network that uses every op the exporter maps (those a classifier or sequence model uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = gn.nn.Conv2d(2, 4, 3, padding=1, dilation=1, groups=2)
        self.dilated = gn.nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.up = gn.nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.norm = gn.nn.BatchNorm2d(3)
        self.group = gn.nn.GroupNorm(1, 3)
        self.pool = gn.nn.MaxPool2d(2, 2)
        self.avg = gn.nn.AvgPool2d(3, 1, padding=1)
        self.embed = gn.nn.Embedding(7, 6)
        self.layer = gn.nn.LayerNorm(6)
        self.proj = gn.nn.Linear(6, 6)
        self.head = gn.nn.Linear(3 * 6 * 6 + 6 + 2, 5)
        self.scale = gn.nn.Parameter(np.linspace(0.5, 1.5, 5).astype(np.float32))

    def forward(self, x: gn.Tensor, tokens: gn.Tensor) -> gn.Tensor:
        h = gn.relu(self.conv(x))
        h = gn.gelu(self.dilated(h)) + gn.elu(h, 0.5)
        h = self.norm(self.up(h))
        h = gn.leaky_relu(self.group(h), 0.1) * gn.sigmoid(h) + gn.tanh(h)
        h = self.avg(self.pool(h))                                    # (N, 3, 6, 6)
        h = gn.softplus(h, 2.0, 5.0) - gn.abs(gn.sin(h)) + gn.cos(h) ** 2.0
        flat = gn.flatten(h)
        e = self.layer(self.embed(tokens))                            # (N, 4, 6)
        q = self.proj(e)
        a = gn.scaled_dot_product_attention(gn.expand_dims(q, 1), gn.expand_dims(e, 1), gn.expand_dims(e, 1),
                                            is_causal=True, training=False)
        a = gn.squeeze(a, 1)
        a = gn.sum(gn.softmax(a, -1) * gn.exp(-gn.abs(a)), 1) + gn.mean(gn.cumsum(a, 1), 1)
        stats = gn.concat([gn.max(flat, 1, keepdims=True), gn.sqrt(gn.mean(flat * flat, 1, keepdims=True))], 1)
        z = gn.concat([flat, a, stats], 1)
        z = gn.where(z > 0.0, z, z * 0.5) + gn.minimum(z, 1.0) - gn.maximum(z, -1.0)
        logits = self.head(gn.pad(z, [(0, 0), (0, 0)]))
        return gn.log_softmax(logits, -1) + gn.einsum("nc,c->nc", logits, self.scale)


def _networks():
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    gn.manual_seed(0)
    image = gn.placeholder("x", (None, 1, 28, 28))
    made = {}
    for name, model in (("seed_cnn", seed_cnn()), ("resnet", ResNet())):
        model.eval()
        made[name] = (gn.compile({"logits": model(image)}), {"x": (1, 28, 28)})
    v = gn.placeholder("x", (None, 784))
    mlp = gn.nn.Sequential(gn.nn.Linear(784, 64), gn.nn.ReLU(), gn.nn.Dropout(0.2), gn.nn.Linear(64, 10))
    mlp.eval()
    made["mlp"] = (gn.compile({"logits": mlp(v)}), {"x": (784,)})
    every = EveryOp()
    _trained_statistics(every)
    every.eval()
    x = gn.placeholder("x", (None, 2, 6, 6))
    tokens = gn.placeholder("tokens", (None, 4), dtype="int64")
    made["every_op"] = (gn.compile({"scores": every(x, tokens)}), {"x": (2, 6, 6), "tokens": (4,)})
    return made


def _trained_statistics(model: gn.nn.Module) -> None:
    """Running statistics that are not the initial ones, so an export that ignored them fails."""
    rng = np.random.default_rng(1)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.data = rng.normal(size=buffer.data.shape).astype(np.float32) * 0.3
        elif name.endswith("running_var"):
            buffer.data = rng.uniform(0.5, 2.0, buffer.data.shape).astype(np.float32)


def _feeds(shapes: dict, batch: int) -> dict:
    rng = np.random.default_rng(batch)
    return {name: (rng.integers(0, 7, (batch,) + shape) if name == "tokens" else
                   rng.normal(size=(batch,) + shape).astype(np.float32)) for name, shape in shapes.items()}


NETWORKS = _networks()


@pytest.mark.parametrize("name", list(NETWORKS))
def test_onnx_runtime_computes_what_graphnet_does(name, tmp_path):
    """Export (which runs onnx.checker.check_model with full_check), then ONNX Runtime against
    graphnet at two batch sizes."""
    ort = _ort()
    plan, shapes = NETWORKS[name]
    path = gn.onnx.export(plan, tmp_path / f"{name}.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == gn.onnx.DEFAULT_OPSET
    assert [i.name for i in model.graph.input] == list(shapes)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch stays symbolic
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    output = model.graph.output[0].name
    for batch in (1, 17):
        feeds = _feeds(shapes, batch)
        want = plan.run(feeds)[output]
        got = session.run([output], feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=f"{name} batch {batch}")


def test_node_names_carry_module_paths(tmp_path):
    plan, _ = NETWORKS["resnet"]
    model = onnx.load(gn.onnx.export(plan, tmp_path / "r.onnx"))
    names = [n.name for n in model.graph.node]
    assert any(n.startswith("stage2/conv1/Conv") for n in names), names[:10]
    assert any(n.startswith("stage2/bn1/BatchNormalization") for n in names)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_export_then_import_gives_the_same_outputs(name, tmp_path):
    plan, shapes = NETWORKS[name]
    gn.onnx.export(plan, tmp_path / "m.onnx")
    outputs = gn.onnx.load(tmp_path / "m.onnx")
    again = gn.compile(outputs)
    feeds = _feeds(shapes, 3)
    (key,) = outputs
    np.testing.assert_allclose(again.run(feeds)[key], plan.run(feeds)[key], rtol=1e-6, atol=1e-6)


def test_a_pytorch_exported_model_imports_and_matches():
    """tests/data/torch_cnn.onnx was written by torch.onnx.export (benchmarks/torch_onnx_model.py)."""
    outputs = gn.onnx.load(DATA / "torch_cnn.onnx")
    reference = np.load(DATA / "torch_cnn_io.npz")
    plan = gn.compile(outputs)
    np.testing.assert_allclose(plan.run(image=reference["image"])["log_probs"], reference["log_probs"],
                               rtol=1e-5, atol=1e-5)
    assert plan.run(image=np.zeros((5, 1, 12, 12), np.float32))["log_probs"].shape == (5, 5)  # a dynamic batch


def test_an_imported_model_fine_tunes_saves_and_renders(tmp_path):
    outputs = gn.onnx.load(DATA / "torch_cnn.onnx")
    labels = gn.placeholder("labels", (None,), dtype="int64")
    loss = -gn.mean(gn.sum(outputs["log_probs"] * gn.one_hot(labels, 5), 1))  # the negative log-likelihood
    train = gn.compile(loss, optimizer=gn.optim.Adam(lr=0.01))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1, 12, 12)).astype(np.float32), rng.integers(0, 5, 16)
    losses = [float(train.run(image=x, labels=y)["loss"]) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    train.save(tmp_path / "tuned.gnp")
    assert gn.load(tmp_path / "tuned.gnp").run(image=x, labels=y)["loss"] < losses[0]


def _model(nodes, inputs, outputs, initializers=(), opset=21):
    helper = onnx.helper
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_everything_graphnet_cannot_import_is_listed_at_once(tmp_path):
    helper = onnx.helper
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Hardmax", ["a"], ["b"]),
             helper.make_node("Selu", ["b"], ["c"]), helper.make_node("Softmax", ["c"], ["y"], axis=1, bogus=3)]
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(nodes, [x], [y]).SerializeToString())
    with pytest.raises(gn.onnx.OnnxImportError) as caught:
        gn.onnx.load(path)
    message = str(caught.value)
    assert "Hardmax" in message and "Selu" in message and "Softmax attribute(s) bogus" in message


def test_an_op_without_an_onnx_counterpart_names_itself_and_its_line(tmp_path):
    x = gn.placeholder("x", (None, 1, 4, 4))
    y = gn.interpolate(x, scale_factor=2.0, mode="bilinear")
    with pytest.raises(gn.onnx.OnnxExportError, match=r"interpolate2d.*test_onnx.py:\d+"):
        gn.onnx.export(gn.compile({"y": y}), tmp_path / "m.onnx")


# --- hostile files -------------------------------------------------------------------------

def _with_external(tmp_path: Path, location: str, offset: str = "0", length: str = "16") -> Path:
    helper = onnx.helper
    weight = helper.make_tensor("w", onnx.TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [weight])
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_is_read_from_inside_the_models_folder_only(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _with_external(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(np.array([1, 2, 3, 4], np.float32).tobytes())
    plan = gn.compile(gn.onnx.load(path))
    np.testing.assert_array_equal(plan.run(x=np.zeros(4, np.float32))["y"], [1, 2, 3, 4])
    for location in ("../secret.bin", str(secret), "sub/../../secret.bin", "a\\..\\..\\secret.bin", ""):
        with pytest.raises(gn.onnx.OnnxFileError, match="external data"):
            gn.onnx.load(_with_external(tmp_path, location))
    (path.parent / "link.bin").symlink_to(secret)
    with pytest.raises(gn.onnx.OnnxFileError, match="outside"):
        gn.onnx.load(_with_external(tmp_path, "link.bin"))
    with pytest.raises(gn.onnx.OnnxFileError, match="past the end|bytes"):
        gn.onnx.load(_with_external(tmp_path, "w.bin", offset="8"))


def test_absurd_sizes_and_malformed_protobufs_are_typed_errors(tmp_path):
    helper = onnx.helper
    huge = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[2 ** 20, 2 ** 20])  # and no data
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    path = tmp_path / "huge.onnx"
    path.write_bytes(_model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [huge]).SerializeToString())
    with pytest.raises(gn.onnx.OnnxFileError, match="elements"):
        gn.onnx.load(path)
    short = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[4], raw_data=b"\x00" * 12)
    path.write_bytes(_model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [short]).SerializeToString())
    with pytest.raises(gn.onnx.OnnxFileError, match="bytes of data"):
        gn.onnx.load(path)
    path.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0fgarbage")
    with pytest.raises(gn.onnx.OnnxFileError):
        gn.onnx.load(path)


def test_onnx_mutants_load_or_raise_typed_errors(tmp_path):
    from plan_fuzz import fuzz_onnx

    plan, shapes = NETWORKS["seed_cnn"]
    source = Path(gn.onnx.export(plan, tmp_path / "seed.onnx")).read_bytes()
    counts, failures = fuzz_onnx(str(tmp_path), source, _feeds(shapes, 2), count=300, seed=4)
    assert not failures, failures[:5]
    assert counts["refused"] > 30 and counts["ran"] > 10, counts


# --- ONNX's own node tests -----------------------------------------------------------------

PASSING = DATA / "onnx_node_tests_passing.json"


def _node_tests():
    import unittest
    import warnings

    import onnx.backend.test

    from graphnet.onnx.backend import GraphnetBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests = onnx.backend.test.BackendTest(GraphnetBackend, "graphnet")
        tests.include(r"^test_.*_cpu$")
        suite = unittest.TestSuite()
        for name, case in tests.test_cases.items():
            if "NodeModel" in name:
                suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
        ids = [t.id().rsplit(".", 1)[-1] for t in suite]
        with np.errstate(all="ignore"):
            result = unittest.TextTestRunner(stream=open(os.devnull, "w"), verbosity=0).run(suite)
    bad = {t.id().rsplit(".", 1)[-1] for t, _ in result.errors + result.failures + result.skipped}
    return sorted(set(ids) - bad), result


def test_onnx_backend_node_tests_pass_list_does_not_shrink():
    passing, result = _node_tests()
    recorded = json.loads(PASSING.read_text())
    lost = sorted(set(recorded) - set(passing))
    assert not lost, f"{len(lost)} ONNX node tests passed before and fail now: {lost[:10]}"
    assert len(passing) >= 500, len(passing)


def test_the_command_line_exports_a_saved_plan(tmp_path):
    from graphnet.cli import main

    plan, shapes = NETWORKS["seed_cnn"]
    plan.save(tmp_path / "seed.gnp")
    assert main(["export-onnx", str(tmp_path / "seed.gnp"), "-o", str(tmp_path / "seed.onnx"), "--opset", "20"]) == 0
    model = onnx.load(tmp_path / "seed.onnx")
    assert model.opset_import[0].version == 20
    again = gn.compile(gn.onnx.load(tmp_path / "seed.onnx"))
    feeds = _feeds(shapes, 2)
    np.testing.assert_allclose(again.run(feeds)["logits"], plan.run(feeds)["logits"], rtol=1e-6, atol=1e-6)


def test_the_backend_runs_a_single_node():
    from graphnet.onnx.backend import GraphnetBackend

    node = onnx.helper.make_node("Gemm", ["a", "b"], ["y"], transB=1, alpha=2.0)
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((4, 3), np.float32)
    (y,) = GraphnetBackend.run_node(node, [a, b])
    np.testing.assert_allclose(y, 2.0 * a @ b.T)

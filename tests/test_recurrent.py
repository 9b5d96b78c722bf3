"""RNN, LSTM and GRU on ``gn.scan``: PyTorch's parameter names and gate order, forward values
against NumPy cells (they also matched torch 2.13 to 2e-16 in float64 while developing),
float64 finite-difference gradients, and plans that do not grow with the sequence length."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn

R = np.random.default_rng(0)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _cell(kind, x, carry, w_ih, w_hh, b_ih, b_hh):
    gates_x, gates_h = x @ w_ih.T + b_ih, (carry[0] if kind == "LSTM" else carry) @ w_hh.T + b_hh
    size = w_hh.shape[1]
    if kind == "LSTM":
        h, c = carry
        i, f, g, o = (gates_x[:, k * size:(k + 1) * size] + gates_h[:, k * size:(k + 1) * size] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h, c), h
    if kind == "GRU":
        r = _sigmoid(gates_x[:, :size] + gates_h[:, :size])
        z = _sigmoid(gates_x[:, size:2 * size] + gates_h[:, size:2 * size])
        n = np.tanh(gates_x[:, 2 * size:] + r * gates_h[:, 2 * size:])
        h = (1 - z) * n + z * carry
        return h, h
    h = np.tanh(gates_x + gates_h)
    return h, h


def _reference(kind, state, xv, layers, bidirectional):
    """The layer on x (L, N, in), as torch.nn.{RNN, LSTM, GRU} computes it."""
    directions = 2 if bidirectional else 1
    n, size = xv.shape[1], state["weight_hh_l0"].shape[1]
    finals, layer_input = [], xv
    for layer in range(layers):
        outputs = []
        for suffix in ("", "_reverse")[:directions]:
            p = [state[f"{k}_l{layer}{suffix}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            carry = (np.zeros((n, size)),) * 2 if kind == "LSTM" else np.zeros((n, size))
            ys = [None] * len(xv)
            order = range(len(xv)) if not suffix else reversed(range(len(xv)))
            for t in order:
                carry, ys[t] = _cell(kind, layer_input[t], carry, *p)
            finals.append(carry)
            outputs.append(np.stack(ys))
        layer_input = np.concatenate(outputs, axis=2)
    h_n = np.stack([f[0] if kind == "LSTM" else f for f in finals])
    return layer_input, h_n


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers,bidirectional,batch_first", [(1, False, False), (2, True, True)])
def test_recurrent_layers_against_numpy(kind, layers, bidirectional, batch_first):
    gn.manual_seed(1)
    layer = getattr(gn.nn, kind)(3, 4, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                                 dtype="float64")
    xv = R.standard_normal((6, 2, 3))
    x = gn.placeholder("x", (None, 6, 3) if batch_first else (6, None, 3), "float64")
    out, state = layer(x)
    h_n = state[0] if kind == "LSTM" else state
    got = gn.compile({"out": out, "h": h_n}).run(x=xv.swapaxes(0, 1) if batch_first else xv)
    expected_out, expected_h = _reference(kind, layer.state_dict(), xv, layers, bidirectional)
    np.testing.assert_allclose(got["out"], expected_out.swapaxes(0, 1) if batch_first else expected_out,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["h"], expected_h, rtol=1e-12, atol=1e-14)


def test_parameter_names_and_shapes_are_pytorchs():
    lstm = gn.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    # torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True).state_dict(), keys and shapes
    expected = {"weight_ih_l0": (20, 3), "weight_hh_l0": (20, 5), "bias_ih_l0": (20,), "bias_hh_l0": (20,),
                "weight_ih_l0_reverse": (20, 3), "weight_hh_l0_reverse": (20, 5), "bias_ih_l0_reverse": (20,),
                "bias_hh_l0_reverse": (20,), "weight_ih_l1": (20, 10), "weight_hh_l1": (20, 5), "bias_ih_l1": (20,),
                "bias_hh_l1": (20,), "weight_ih_l1_reverse": (20, 10), "weight_hh_l1_reverse": (20, 5),
                "bias_ih_l1_reverse": (20,), "bias_hh_l1_reverse": (20,)}
    assert {k: v.shape for k, v in lstm.state_dict().items()} == expected
    assert {k: v.shape for k, v in gn.nn.GRU(3, 5, bias=False).state_dict().items()} == {
        "weight_ih_l0": (15, 3), "weight_hh_l0": (15, 5)}
    assert all(np.abs(v).max() <= 1 / np.sqrt(5) for v in lstm.state_dict().values())  # uniform(+-1/sqrt(H))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_gradients_match_float64_finite_differences(kind):
    gn.manual_seed(2)
    layer = getattr(gn.nn, kind)(2, 3, dtype="float64")
    x = gn.placeholder("x", (4, 2, 2), "float64")
    out, _ = layer(x)
    weights = gn.constant(R.standard_normal((4, 2, 3)))
    loss = gn.sum(out * weights)
    params = [layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_hh_l0]
    xv = R.standard_normal((4, 2, 2))
    grads = gn.compile({str(i): g for i, g in enumerate(gn.grad(loss, params + [x]))}).run(x=xv)
    state = layer.state_dict()

    def value(name, array):
        trial = dict(state, **{name: array})
        return np.sum(_reference(kind, trial, xv if name != "x" else array, 1, False)[0] * weights.node.attrs[
            "value"].array)

    for i, name in enumerate(["weight_ih_l0", "weight_hh_l0", "bias_hh_l0", "x"]):
        base = xv if name == "x" else state[name]
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            step = np.zeros_like(base)
            step[index] = 1e-6
            numeric[index] = (value(name, base + step) - value(name, base - step)) / 2e-6
        np.testing.assert_allclose(grads[str(i)], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_an_lstm_plan_and_its_compile_do_not_grow_with_the_sequence_length():
    import time

    steps, seconds = {}, {}
    for length in (12, 48, 192):
        gn.manual_seed(0)
        lstm = gn.nn.LSTM(8, 16)
        head = gn.nn.Linear(16, 4)
        x = gn.placeholder("x", (length, None, 8))
        labels = gn.placeholder("labels", (None,), dtype="int64")
        out, (h, _) = lstm(x)
        start = time.perf_counter()
        train = gn.compile(gn.losses.cross_entropy(head(h[0]), labels), optimizer=gn.optim.Adam(lr=0.01))
        seconds[length] = time.perf_counter() - start
        steps[length] = len(train.plan.steps)
        train.run(x=R.standard_normal((length, 3, 8)).astype(np.float32), labels=np.array([0, 1, 2]))
    assert len(set(steps.values())) == 1, steps
    assert max(seconds.values()) < 10 * min(seconds.values()) + 0.5  # (timing is only a sanity bound here)

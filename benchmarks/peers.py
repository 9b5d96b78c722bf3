"""The peer sides of benchmarks/train_step.py: PyTorch eager, torch.compile, and JAX jit with optax.

Each builds the same four training steps as graphnet's side (the seed CNN with RMSprop,
the MLP and the ResNet with Adam), layer for layer, and returns a callable that runs one
full step (forward, backward, optimizer update) and returns the loss as a float-able.
Nothing here imports graphnet: these sides run in their own virtualenvs (.venv-torch,
.venv-jax) that do not have it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

PEERS = ("torch", "torch-compile", "jax")


def setup(side: str, threads: int) -> None:
    """Pins this process to `threads` threads; call before the first step is built."""
    if side == "jax":
        # XLA's CPU thread pool is sized by the CPUs this process may run on.
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, cpus[:threads])
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    else:
        import torch

        torch.set_num_threads(threads)


def make_step(side: str, name: str, batch: int, held: dict | None = None) -> Callable[[], object]:
    """A training step; ``held["bytes"]``, where given, is set to a function returning the bytes
    of the tensors the step keeps between calls (parameters, optimizer state, the batch)."""
    if side == "torch":
        return torch_step(name, batch, held=held)
    if side == "torch-compile":
        return torch_step(name, batch, compiled=True)
    if side == "jax":
        return jax_step(name, batch)
    raise ValueError(side)


# --- PyTorch -------------------------------------------------------------------------------


def torch_model(name: str):
    from torch import nn

    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(), nn.Conv2d(10, 20, 5),
                             nn.MaxPool2d(2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 120), nn.ReLU(),
                             nn.Linear(120, 10))
    if name == "resnet":
        return torch_resnet()
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def torch_resnet():
    """examples/resnet.py's network, layer for layer, in PyTorch."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return (self.body(x) + self.skip(x)).relu()

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         Block(16, 16), Block(16, 32), Block(32, 64), nn.AvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 10))


def torch_step(name: str, batch: int, compiled: bool = False, held: dict | None = None) -> Callable[[], object]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = torch_model(name)
    if name == "cnn":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3 if name == "resnet" else 1e-3)
    xb = torch.randn(batch, 784) if name == "mlp" else torch.randn(batch, 1, 28, 28)
    yb = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):
        return loss_fn(model(x), y)

    update = optimizer.step
    if compiled:
        # Model and loss in one graph (forward and, through AOTAutograd, backward), and the
        # optimizer update as a second graph: backward() itself cannot sit inside a graph
        # without compiled autograd, so this is the whole step in two compiled pieces.
        forward = torch.compile(forward)
        update = torch.compile(optimizer.step)

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = forward(xb, yb)
        loss.backward()
        update()
        return loss.detach()

    if held is not None:
        def held_bytes() -> int:
            # the gradients too: they stay alive between steps (until the next zero_grad), so the
            # resident size between steps includes them
            state = [t for slots in optimizer.state.values() for t in slots.values() if torch.is_tensor(t)]
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            tensors = list(model.parameters()) + list(model.buffers()) + state + grads + [xb, yb]
            return sum(t.numel() * t.element_size() for t in tensors)
        held["bytes"] = held_bytes

    return step


# --- JAX -----------------------------------------------------------------------------------
# NHWC activations and HWIO kernels by default, XLA's native layout on CPU (with NCHW it
# transposes around every convolution; BENCH_JAX_LAYOUT=NCHW selects that to compare); the
# layers are the same as on the other sides.


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1 / np.sqrt(fan_in)  # PyTorch's default for Linear and Conv2d
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _linear(rng, cin: int, cout: int) -> dict:
    return {"w": _uniform(rng, (cin, cout), cin), "b": _uniform(rng, (cout,), cin)}


def _conv(rng, cin: int, cout: int, k: int, bias: bool = True) -> dict:
    p = {"w": _uniform(rng, (k, k, cin, cout), cin * k * k)}
    if bias:
        p["b"] = _uniform(rng, (cout,), cin * k * k)
    return p


def _bn(c: int) -> tuple[dict, dict]:
    return ({"gamma": np.ones(c, np.float32), "beta": np.zeros(c, np.float32)},
            {"mean": np.zeros(c, np.float32), "var": np.ones(c, np.float32)})


JAX_LAYOUT = os.environ.get("BENCH_JAX_LAYOUT", "NHWC")


def jax_model(name: str, rng: np.random.Generator):
    """(params, state, apply) where apply(params, state, x) -> (logits, new_state)."""
    import jax.numpy as jnp
    from jax import lax

    nhwc = JAX_LAYOUT == "NHWC"
    spatial = (1, 2) if nhwc else (2, 3)
    red = (0,) + spatial
    win = lambda k: (1, k, k, 1) if nhwc else (1, 1, k, k)
    dn = ("NHWC", "HWIO", "NHWC") if nhwc else ("NCHW", "HWIO", "NCHW")
    chan = lambda v: v if nhwc else v[:, None, None]

    def conv(p, x, stride=1, padding=0):
        y = lax.conv_general_dilated(x, p["w"], (stride, stride), [(padding, padding)] * 2,
                                     dimension_numbers=dn)
        return y + chan(p["b"]) if "b" in p else y

    def maxpool2(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, win(2), win(2), "VALID")

    def linear(p, x):
        return x @ p["w"] + p["b"]

    def bn(p, s, x):
        """Training mode: normalise with the batch's statistics, update the running ones."""
        mean = jnp.mean(x, axis=red)
        var = jnp.mean(jnp.square(x - chan(mean)), axis=red)
        n = x.size // mean.size
        new = {"mean": 0.9 * s["mean"] + 0.1 * mean, "var": 0.9 * s["var"] + 0.1 * var * (n / (n - 1))}
        scale = p["gamma"] * lax.rsqrt(var + 1e-5)
        return (x - chan(mean)) * chan(scale) + chan(p["beta"]), lax.stop_gradient(new)

    relu = lambda x: jnp.maximum(x, 0)

    if name == "mlp":
        params = {"l1": _linear(rng, 784, 512), "l2": _linear(rng, 512, 512), "l3": _linear(rng, 512, 10)}

        def apply(p, s, x):
            return linear(p["l3"], relu(linear(p["l2"], relu(linear(p["l1"], x))))), s

        return params, {}, apply

    if name == "cnn":
        params = {"c1": _conv(rng, 1, 10, 5), "c2": _conv(rng, 10, 20, 5),
                  "l1": _linear(rng, 320, 120), "l2": _linear(rng, 120, 10)}

        def apply(p, s, x):
            h = relu(maxpool2(conv(p["c1"], x)))
            h = relu(maxpool2(conv(p["c2"], h)))
            h = h.reshape(h.shape[0], -1)
            return linear(p["l2"], relu(linear(p["l1"], h))), s

        return params, {}, apply

    # ResNet: stem, three stride-2 basic blocks with projected skips, 4x4 average pool, head.
    params, state = {"stem": _conv(rng, 1, 16, 3, bias=False)}, {}
    params["stem_bn"], state["stem_bn"] = _bn(16)
    for i, (cin, cout) in enumerate([(16, 16), (16, 32), (32, 64)]):
        params[f"b{i}"] = {"c1": _conv(rng, cin, cout, 3, bias=False), "c2": _conv(rng, cout, cout, 3, bias=False),
                           "cs": _conv(rng, cin, cout, 1, bias=False)}
        state[f"b{i}"] = {}
        for bn_name in ("bn1", "bn2", "bns"):
            params[f"b{i}"][bn_name], state[f"b{i}"][bn_name] = _bn(cout)
    params["head"] = _linear(rng, 64, 10)

    def apply(p, s, x):
        new = {}
        h, new["stem_bn"] = bn(p["stem_bn"], s["stem_bn"], conv(p["stem"], x, padding=1))
        h = relu(h)
        for i in range(3):
            b, sb, nb = p[f"b{i}"], s[f"b{i}"], {}
            body, nb["bn1"] = bn(b["bn1"], sb["bn1"], conv(b["c1"], h, stride=2, padding=1))
            body, nb["bn2"] = bn(b["bn2"], sb["bn2"], conv(b["c2"], relu(body), padding=1))
            skip, nb["bns"] = bn(b["bns"], sb["bns"], conv(b["cs"], h, stride=2))
            h, new[f"b{i}"] = relu(body + skip), nb
        h = lax.reduce_window(h, 0.0, lax.add, win(4), win(4), "VALID") / 16
        return linear(p["head"], h.reshape(h.shape[0], -1)), new

    return params, state, apply


def jax_step(name: str, batch: int) -> Callable[[], object]:
    import jax
    import optax

    rng = np.random.default_rng(0)
    params, state, apply = jax_model(name, rng)
    if name == "cnn":  # torch.optim.RMSprop's defaults: alpha 0.99, eps 1e-8 outside the square root
        opt = optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    else:
        opt = optax.adam(3e-3 if name == "resnet" else 1e-3)
    xb = jax.device_put(rng.standard_normal((batch, 784) if name == "mlp" else
                                            (batch, 28, 28, 1) if JAX_LAYOUT == "NHWC" else (batch, 1, 28, 28))
                        .astype(np.float32))
    yb = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))

    def loss_fn(p, s, x, y):
        logits, new_state = apply(p, s, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

    def train(p, s, o, x, y):
        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, loss

    train = jax.jit(train, donate_argnums=(0, 1, 2))
    params, state = jax.device_put(params), jax.device_put(state)
    carry = [params, state, opt.init(params)]

    def step() -> object:
        p, s, o, loss = train(*carry, xb, yb)
        carry[:] = [p, s, o]
        jax.block_until_ready((p, loss))
        return loss

    return step

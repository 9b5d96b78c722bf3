"""Training-step time of the character language models of examples/lstm_lm.py and
examples/char_lm.py, side by side with their peers, each side in its own process (PyTorch
eager, torch.compile, JAX jit + optax): windows of 64 characters, batch 32,
AdamW with clipping. ``--model lstm``: Embedding(95, 64) -> LSTM(64, 256) -> Linear(256, 95).
``--model transformer``: Embedding(95, 128) + positions -> 2 causal pre-norm encoder layers
(4 heads, GELU, feed-forward 512, dropout 0.1) -> LayerNorm -> Linear. Median of many runs
after warm-up; the ratio is to the best peer measured.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/sequence_lm.py --model lstm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VOCAB, EMBED, HIDDEN, LENGTH, BATCH = 95, 64, 256, 64, 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = {"graphnet": ".venv", "torch": ".venv-torch", "torch-compile": ".venv-torch", "jax": ".venv-jax"}


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    window = rng.integers(0, VOCAB, (LENGTH + 1, BATCH))
    return window[:-1], window[1:]


WIDTH, HEADS, LAYERS = 128, 4, 2


def graphnet_step(model: str):
    import numpy as np

    import graphnet as gn

    gn.manual_seed(0)
    tokens = gn.placeholder("tokens", (LENGTH, None), dtype="int64")
    targets = gn.placeholder("targets", (LENGTH, None), dtype="int64")
    if model == "lstm":
        embed, lstm, head = gn.nn.Embedding(VOCAB, EMBED), gn.nn.LSTM(EMBED, HIDDEN), gn.nn.Linear(HIDDEN, VOCAB)
        logits = head(lstm(embed(tokens))[0])
    else:
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from char_lm import char_transformer

        logits = char_transformer(VOCAB, LENGTH, WIDTH, HEADS, LAYERS)(tokens)
    loss = gn.losses.cross_entropy(gn.reshape(logits, (-1, VOCAB)), gn.reshape(targets, (-1,)))
    plan = gn.compile(loss, optimizer=gn.optim.AdamW(lr=1e-3, max_grad_norm=1.0))
    x, y = _data()
    return lambda: plan.run(tokens=x, targets=np.ascontiguousarray(y))["loss"]


def torch_step(compiled: bool, kind: str):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm = torch.nn.Embedding(VOCAB, EMBED), torch.nn.LSTM(EMBED, HIDDEN)
            self.head = torch.nn.Linear(HIDDEN, VOCAB)

        def forward(self, tokens):
            return self.head(self.lstm(self.embed(tokens))[0])

    class Transformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, WIDTH)
            self.position = torch.nn.Parameter(torch.randn(LENGTH, 1, WIDTH) * 0.02)
            layer = torch.nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, 0.1, activation="gelu", norm_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.norm, self.head = torch.nn.LayerNorm(WIDTH), torch.nn.Linear(WIDTH, VOCAB)
            self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(LENGTH))

        def forward(self, tokens):
            x = self.embed(tokens) * WIDTH ** 0.5 + self.position
            return self.head(self.norm(self.encoder(x, mask=self.mask, is_causal=True)))

    model = Model() if kind == "lstm" else Transformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = (torch.tensor(a) for a in _data())

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return torch.compile(step) if compiled else step


def jax_step():
    import jax
    import jax.numpy as jnp
    import optax

    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    bound = 1 / HIDDEN ** 0.5
    params = {"embed": jax.random.normal(keys[0], (VOCAB, EMBED)),
              "w_ih": jax.random.uniform(keys[1], (4 * HIDDEN, EMBED), minval=-bound, maxval=bound),
              "w_hh": jax.random.uniform(keys[2], (4 * HIDDEN, HIDDEN), minval=-bound, maxval=bound),
              "b": jax.random.uniform(keys[3], (4 * HIDDEN,), minval=-bound, maxval=bound),
              "w_out": jax.random.uniform(keys[4], (VOCAB, HIDDEN), minval=-bound, maxval=bound),
              "b_out": jnp.zeros(VOCAB)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = opt.init(params)

    def loss_fn(p, x, y):
        projected = p["embed"][x] @ p["w_ih"].T + p["b"]

        def cell(carry, proj):
            h, c = carry
            i, f, g, o = jnp.split(proj + h @ p["w_hh"].T, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[1], HIDDEN))
        _, hs = jax.lax.scan(cell, (zeros, zeros), projected)
        logits = hs @ p["w_out"].T + p["b_out"]
        return optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, VOCAB), y.reshape(-1)).mean()

    @jax.jit
    def update(p, s, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    x, y = (jnp.asarray(a) for a in _data())
    held = {"p": params, "s": state}

    def step():
        held["p"], held["s"], loss = update(held["p"], held["s"], x, y)
        return loss.block_until_ready()

    return step


def jax_transformer_step():
    """The transformer of examples/char_lm.py in JAX: pre-norm layers, causal attention, exact
    GELU, dropout 0.1 (a key split per step), AdamW with clipping."""
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.PRNGKey(0)
    keys = iter(jax.random.split(key, 64))

    def dense(n_in, n_out):
        bound = 1 / n_in ** 0.5
        return {"w": jax.random.uniform(next(keys), (n_in, n_out), minval=-bound, maxval=bound),
                "b": jnp.zeros(n_out)}

    def norm():
        return {"g": jnp.ones(WIDTH), "b": jnp.zeros(WIDTH)}

    params = {"embed": jax.random.normal(next(keys), (VOCAB, WIDTH)),
              "position": 0.02 * jax.random.normal(next(keys), (LENGTH, 1, WIDTH)),
              "layers": [{"n1": norm(), "qkv": dense(WIDTH, 3 * WIDTH), "out": dense(WIDTH, WIDTH), "n2": norm(),
                          "ff1": dense(WIDTH, 4 * WIDTH), "ff2": dense(4 * WIDTH, WIDTH)} for _ in range(LAYERS)],
              "norm": norm(), "head": dense(WIDTH, VOCAB)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = opt.init(params)
    causal = jnp.tril(jnp.ones((LENGTH, LENGTH), bool))

    def layer_norm(p, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * p["g"] + p["b"]

    def drop(k, x):
        return jnp.where(jax.random.bernoulli(k, 0.9, x.shape), x / 0.9, 0.0)

    def loss_fn(p, x, y, k):
        h = p["embed"][x] * WIDTH ** 0.5 + p["position"]  # (T, N, W)
        ks = iter(jax.random.split(k, 8 * LAYERS))
        head_dim = WIDTH // HEADS
        for lp in p["layers"]:
            a = layer_norm(lp["n1"], h) @ lp["qkv"]["w"] + lp["qkv"]["b"]
            q, kk, v = (t.reshape(LENGTH, -1, HEADS, head_dim).transpose(1, 2, 0, 3) for t in jnp.split(a, 3, -1))
            s = jnp.where(causal, q @ kk.transpose(0, 1, 3, 2) / head_dim ** 0.5, -jnp.inf)
            o = (jax.nn.softmax(s, -1) @ v).transpose(2, 0, 1, 3).reshape(LENGTH, -1, WIDTH)
            h = h + drop(next(ks), o @ lp["out"]["w"] + lp["out"]["b"])
            f = jax.nn.gelu(layer_norm(lp["n2"], h) @ lp["ff1"]["w"] + lp["ff1"]["b"], approximate=False)
            h = h + drop(next(ks), drop(next(ks), f) @ lp["ff2"]["w"] + lp["ff2"]["b"])
        logits = layer_norm(p["norm"], h) @ p["head"]["w"] + p["head"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, VOCAB), y.reshape(-1)).mean()

    @jax.jit
    def update(p, s, x, y, k):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y, k)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    x, y = (jnp.asarray(a) for a in _data())
    held = {"p": params, "s": state, "k": jax.random.PRNGKey(1)}

    def step():
        held["k"], k = jax.random.split(held["k"])
        held["p"], held["s"], loss = update(held["p"], held["s"], x, y, k)
        return loss.block_until_ready()

    return step


def measure(side: str, model: str, warmup: int, repeats: int) -> float:
    step = {"graphnet": lambda: graphnet_step(model), "torch": lambda: torch_step(False, model),
            "torch-compile": lambda: torch_step(True, model),
            "jax": jax_step if model == "lstm" else jax_transformer_step}[side]()
    for _ in range(warmup):
        float(step())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["lstm", "transformer"], default="lstm")
    parser.add_argument("--sides", default="graphnet,torch,torch-compile,jax")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps({"ms": measure(args.side, args.model, args.warmup, args.repeats)}))
        return
    results = {}
    for side in args.sides.split(","):
        python = os.path.join(ROOT, PYTHONS[side], "bin", "python")
        if not os.path.exists(python):
            print(f"{side:<14} skipped ({PYTHONS[side]} is not installed)")
            continue
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env.update(OMP_NUM_THREADS="2", JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_cpu_multi_thread_eigen=true")
        done = subprocess.run([python, os.path.abspath(__file__), "--side", side, "--model", args.model,
                               "--warmup", str(args.warmup), "--repeats", str(args.repeats)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=1200)
        if done.returncode != 0:
            print(f"{side:<14} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'}")
            continue
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])["ms"]
        print(f"{side:<14} {results[side]:8.2f} ms per training step")
    peers = [v for k, v in results.items() if k != "graphnet"]
    if "graphnet" in results and peers:
        print(f"graphnet / best peer: {results['graphnet'] / min(peers):.2f}")


if __name__ == "__main__":
    main()

"""What the language-model examples share: real text (the Python standard library's own
source files, on every machine), a character vocabulary, batches of windows, the held-out
loss, sampling, and the training loop with its report."""

from __future__ import annotations

import argparse
import glob
import math
import os
import sysconfig
import time
from typing import Callable

import numpy as np

import graphnet as gn


def parser(description: str, *, steps: int, lr: float, length: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=steps, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=length, help="characters per training window")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--chars", type=int, default=1_500_000, help="characters of text to read")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--sample", type=int, default=300, help="characters to generate at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out")
    p.add_argument("--no-progress", action="store_true", help="(accepted for the test harness; no progress bar here)")
    return p


def corpus(chars: int) -> str:
    """The first ``chars`` characters of the standard library's ``.py`` files, in sorted order
    (non-ASCII characters become '?': the vocabulary stays small)."""
    root = sysconfig.get_paths()["stdlib"]
    texts, total = [], 0
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        texts.append(text)
        total += len(text)
        if total >= chars:
            break
    text = "".join(texts)[:chars]
    return "".join(c if c == "\n" or 32 <= ord(c) < 127 else "?" for c in text)


class Text:
    """The text as integer codes, split 90/10 into training and held-out parts (the last tenth
    is held out: other files than those trained on)."""

    def __init__(self, text: str) -> None:
        self.alphabet = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        codes = np.array([self.index[c] for c in text], np.int64)
        cut = int(len(codes) * 0.9)
        self.train, self.heldout = codes[:cut], codes[cut:]

    @property
    def vocab(self) -> int:
        return len(self.alphabet)

    def batch(self, rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """``batch`` random windows of the training text: inputs and next characters, (length, batch)."""
        starts = rng.integers(0, len(self.train) - length - 1, batch)
        window = self.train[starts[:, None] + np.arange(length + 1)].T
        return window[:-1], window[1:]

    def heldout_batches(self, batch: int, length: int, limit: int = 20) -> list[tuple[np.ndarray, np.ndarray]]:
        """Consecutive windows of the held-out text (at most ``limit`` batches), the same every call."""
        count = min(limit * batch, (len(self.heldout) - 1) // length)
        starts = np.arange(count) * length
        window = self.heldout[starts[:, None] + np.arange(length + 1)].T
        return [(window[:-1, i:i + batch], window[1:, i:i + batch]) for i in range(0, count - batch + 1, batch)]

    def decode(self, codes: np.ndarray) -> str:
        return "".join(self.alphabet[int(c)] for c in codes)


def train(args: argparse.Namespace, name: str, build: Callable[[gn.Tensor, int], gn.Tensor]) -> dict[str, float]:
    """Train the model ``build(tokens (T, N) int64, vocab) -> logits (T, N, vocab)`` on the
    standard library's source text; print the held-out loss as it goes; plot the curves and
    print a sample. Returns the final held-out loss and perplexity."""
    gn.manual_seed(args.seed)
    text = Text(corpus(args.chars))
    print(f"{name}: {len(text.train):,} training and {len(text.heldout):,} held-out characters of the Python "
          f"standard library's source, {text.vocab} symbols")
    tokens = gn.placeholder("tokens", (args.length, None), dtype="int64")
    targets = gn.placeholder("targets", (args.length, None), dtype="int64")
    logits = build(tokens, text.vocab)
    flat = gn.reshape(logits, (-1, text.vocab))
    loss = gn.losses.cross_entropy(flat, gn.reshape(targets, (-1,)))
    trainer = gn.compile({"loss": loss}, optimizer=gn.optim.AdamW(lr=args.lr, weight_decay=0.01, max_grad_norm=1.0),
                         mode="train")
    evaluate = gn.compile({"loss": loss, "logits": logits}, mode="eval")
    print(f"plan: {len(trainer.plan.steps)} steps per training run")
    rng = np.random.default_rng(args.seed)
    held = text.heldout_batches(args.batch_size, args.length)
    history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_loss": []}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = text.batch(rng, args.batch_size, args.length)
        history["step"].append(step)
        history["loss"].append(float(trainer.run(tokens=x, targets=y)["loss"]))
        if step % args.eval_every == 0 or step == args.steps:
            value = float(np.mean([evaluate.run(tokens=hx, targets=hy)["loss"] for hx, hy in held]))
            history["eval_step"].append(step)
            history["eval_loss"].append(value)
            print(f"step {step:>5}: training loss {np.mean(history['loss'][-args.eval_every:]):.3f}, held-out "
                  f"loss {value:.3f} (perplexity {math.exp(value):.2f}), {time.perf_counter() - start:.0f} s")
    os.makedirs(args.out, exist_ok=True)
    try:
        path = gn.plots.plot_language_model(history["step"], history["loss"], history["eval_step"],
                                            history["eval_loss"], os.path.join(args.out, f"{name}_loss.png"))
        print(f"loss curve and perplexity: {path}")
    except gn.plots.PlotError as exc:
        print(f"(no plot: {exc})")
    print(f"sample:\n{sample(evaluate, text, args.length, args.sample, rng)}")
    final = history["eval_loss"][-1]
    print(f"held-out loss {final:.3f} nats per character, perplexity {math.exp(final):.2f}")
    return {"heldout_loss": final, "perplexity": math.exp(final)}


def sample(plan: gn.CompiledPlan, text: Text, length: int, count: int, rng: np.random.Generator,
           prompt: str = "def ", temperature: float = 0.8) -> str:
    """``count`` characters drawn one at a time from the model's next-character distribution,
    each run reading the last ``length`` characters (the window padded on the left)."""
    codes = [text.index.get(c, 0) for c in prompt]
    pad = text.index.get(" ", 0)
    for _ in range(count):
        window = ([pad] * length + codes)[-length:]
        feed = np.array(window, np.int64)[:, None]
        logits = plan.run(tokens=feed, targets=feed)["logits"][-1, 0].astype(np.float64) / temperature
        p = np.exp(logits - logits.max())
        codes.append(int(rng.choice(len(p), p=p / p.sum())))
    return text.decode(codes)

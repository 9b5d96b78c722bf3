"""What the examples share: command-line options, data, the training run and its report."""

from __future__ import annotations

import argparse
import os
from typing import Callable

import numpy as np

import graphnet as gn

OPTIMIZERS = {"rmsprop": gn.optim.RMSprop, "adam": gn.optim.Adam, "adamw": gn.optim.AdamW, "sgd": gn.optim.SGD,
              "adagrad": gn.optim.Adagrad}


def parser(description: str, *, optimizer: str, lr: float, batch_size: int, epochs: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=optimizer)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out", help="folder for the pictures and the history")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--executor", choices=["numpy", "cupy"], default="numpy",
                   help="the backend: numpy (CPU) or cupy (an NVIDIA GPU; docs/gpu.md)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of `mpiexec -n N` (docs/distributed.md); --batch-size is "
                        "then the global batch, split among the processes")
    return p


def load(args: argparse.Namespace):
    """Train and test splits as float32 (N, 1, 28, 28), normalised, with labels and class names."""
    cls = gn.data.FashionMNIST if args.dataset == "fashion-mnist" else gn.data.MNIST
    train, test = cls(split="train"), cls(split="test")
    x_train, y_train = train.as_float(normalize=True), train.labels
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    return x_train, y_train, test.as_float(normalize=True), test.labels, train.classes, test


def run(args: argparse.Namespace, model: gn.nn.Module, name: str,
        schedule: Callable[[gn.optim.Optimizer], object] | None = None) -> gn.train.History:
    """Compile, train, evaluate, and write the pictures; prints the figures the issue asks for."""
    gn.manual_seed(args.seed)
    group = gn.distributed.init() if args.distributed else gn.distributed.current()
    main_process = group.rank == 0
    if args.distributed and args.batch_size % group.size:
        raise SystemExit(f"--batch-size {args.batch_size} does not split among {group.size} processes")
    x_train, y_train, x_test, y_test, classes, test_set = load(args)
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model.train()
    optimizer = OPTIMIZERS[args.optimizer](lr=args.lr)
    train_logits = model(x)
    # the logits ride along so that fit can report training accuracy
    train_plan = gn.compile({"loss": gn.losses.cross_entropy(train_logits, labels), "logits": train_logits},
                            optimizer=optimizer, seed=args.seed, executor=args.executor,
                            data_parallel=args.distributed)
    model.eval()
    logits = model(x)
    eval_plan = gn.compile({"logits": logits}, executor=args.executor)
    loader = gn.data.DataLoader(x_train, y_train, batch_size=args.batch_size // group.size, shuffle=True,
                                seed=args.seed, prefetch=True, shard=gn.distributed.shard() if args.distributed else None)
    test_loader = gn.data.DataLoader(x_test, y_test, batch_size=1000)
    say = print if main_process else (lambda *_: None)
    say(f"{name}: {sum(p.data.size for p in model.parameters()):,} parameters, "
        f"{len(train_plan.plan.steps)} steps per training run; {len(x_train):,} training images"
        + (f"; {group.size} data-parallel processes" if args.distributed else ""))
    os.makedirs(args.out, exist_ok=True)
    checkpoint = os.path.join(args.out, f"{name}.gnp")

    def save_checkpoint(epoch: int, history: gn.train.History) -> None:
        train_plan.save(checkpoint)  # atomic: an interrupted run keeps the previous epoch's

    history = gn.train.fit(train_plan, loader, epochs=args.epochs, eval_plan=eval_plan, val_data=test_loader,
                           schedule=schedule(optimizer) if schedule else None, progress=not args.no_progress,
                           checkpoint=save_checkpoint)
    if not main_process:  # rank 0 reports and draws
        return history
    print(history.summary())
    print(f"test accuracy: {history.val_accuracy[-1]:.4f} after {args.epochs} epoch(s); "
          f"training throughput {np.median(history.images_per_second):,.0f} images/s")
    print(f"checkpoint (gn.load it to resume training): {checkpoint}")
    history.to_json(os.path.join(args.out, f"{name}_history.json"))
    try:
        curves = gn.plots.plot_history(history, os.path.join(args.out, f"{name}_curves.png"), val_label="test")
        probs = gn.train.softmax(gn.train.predict(eval_plan, x_test[:1]))
        picture = gn.plots.plot_prediction(test_set.images[0], probs[0], classes,
                                           os.path.join(args.out, f"{name}_prediction.png"),
                                           true_label=classes[int(y_test[0])])
        print(f"first test image: predicted {classes[int(np.argmax(probs[0]))]!r}, "
              f"true {classes[int(y_test[0])]!r}; pictures: {curves}, {picture}")
    except gn.GraphnetError as exc:  # matplotlib is an optional extra
        print(f"pictures skipped: {exc}")
    return history


"""Train one set of weights with Adam on training chunks, early-stopped on held-out chunks.

``fit`` measures the objective on the training and held-out chunks before any step, then runs
epochs (chunk order shuffled by a seeded generator; learning rate on a cosine schedule over the
planned steps). After every epoch the held-out objective is measured; the weights with the lowest
held-out value so far are kept, and training stops after ``patience`` epochs without a new best,
at ``epochs``, or when the time share runs out. The kept weights are restored at the end: if no
epoch beat the starting weights on held-out samples, the starting weights stay, and the report
says so. Masked tensors keep their zero pattern exactly (gradients and values are zeroed there
after every step).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from onnxprune.repair.chunks import Chunk
from onnxprune.repair.losses import Objective

__all__ = ["FitSettings", "fit"]

Forward = Callable[[Chunk], torch.Tensor]  # per-sample losses of one chunk


@dataclass(frozen=True)
class FitSettings:
    """Optimiser and stopping settings of one ``fit`` call."""

    epochs: int
    lr: float
    patience: int
    deadline: float  # time.monotonic() value after which training stops
    progress: bool
    label: str


def evaluate(forward: Forward, chunks: list[Chunk], objective: Objective) -> float:
    """The objective over all of ``chunks`` at once (no gradients)."""
    if not chunks:
        return float("nan")
    with torch.no_grad():
        losses = torch.cat([forward(chunk) for chunk in chunks])
        indices = np.concatenate([chunk.indices for chunk in chunks])
        return float(objective(losses, indices))


def _bar(settings: FitSettings, total: int):
    if not settings.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=settings.label[:30], unit="step", file=sys.stderr, leave=False)


def _step(params, masks, optimizer, scheduler, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    for name, mask in masks.items():
        params[name].grad.mul_(mask)
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].copy_(torch.where(mask, params[name], torch.zeros_like(params[name])))


def fit(
    params: dict[str, torch.nn.Parameter],
    masks: dict[str, torch.Tensor],
    forward: Forward,
    train: list[Chunk],
    held: list[Chunk],
    objective: Objective,
    settings: FitSettings,
    rng: np.random.Generator,
) -> dict:
    """Train ``params``; return the losses before/after, epochs run and why training stopped."""
    start = {
        "calibration_loss_before": evaluate(forward, train, objective),
        "held_out_loss_before": evaluate(forward, held, objective),
    }
    best, best_epoch = start["held_out_loss_before"], 0
    saved = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=settings.lr)
    steps = max(1, settings.epochs * len(train))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + np.cos(np.pi * min(step, steps) / steps))
    )
    bar, epoch, stopped, stale = _bar(settings, steps), 0, "epochs", 0
    while epoch < settings.epochs and stopped == "epochs":
        for index in rng.permutation(len(train)):
            chunk = train[index]
            _step(params, masks, optimizer, scheduler, objective(forward(chunk), chunk.indices))
            if bar is not None:
                bar.update()
            if time.monotonic() > settings.deadline:
                stopped = "time"
                break
        epoch += 1
        held_loss = evaluate(forward, held, objective)
        if held_loss < best:
            best, best_epoch, stale = held_loss, epoch, 0
            saved = {name: p.detach().clone() for name, p in params.items()}
        else:
            stale += 1
            if stale >= settings.patience and stopped == "epochs":
                stopped = "patience"
        if bar is not None:
            bar.set_postfix(held_out=f"{held_loss:.4g}")
    if bar is not None:
        bar.close()
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    return {
        **start,
        "calibration_loss_after": evaluate(forward, train, objective),
        "held_out_loss_after": best,
        "epochs": epoch,
        "best_epoch": best_epoch,
        "stopped": stopped,
        "kept": "trained" if best_epoch else "initial (no epoch beat it on held-out samples)",
    }

"""Train one set of weights with Adam; pick the epoch on validation samples, prove it on test ones.

``fit`` measures the objective on the calibration chunks (the real training samples, not their
augmented copies), validation and test chunks before any step, then
runs epochs (chunk order shuffled by a seeded generator; learning rate on a cosine schedule over
the planned steps). After every epoch the validation objective is measured; the weights with the
lowest value so far are kept, and training stops after ``patience`` epochs without a new best, at
``epochs``, or when the time share runs out. The kept weights must then show their gain on the
test samples, which took part in no choice so far: the mean per-sample loss reduction must be
at least ``SHOWN`` standard errors above zero (so at least two test samples are needed). If it is
not, the starting weights are restored and the report says why. Masked tensors keep their zero
pattern exactly (gradients and values are zeroed there after every step).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from onnxprune.repair.chunks import Chunk
from onnxprune.repair.losses import Objective

__all__ = ["SHOWN", "FitSettings", "evaluate", "fit"]

Forward = Callable[[Chunk], torch.Tensor]  # per-sample losses of one chunk
SHOWN = 1.645  # standard errors a test gain must clear (one-sided 95%)


@dataclass(frozen=True)
class FitSettings:
    """Optimiser and stopping settings of one ``fit`` call."""

    epochs: int
    lr: float
    patience: int
    deadline: float  # time.monotonic() value after which training stops
    progress: bool
    label: str


def _losses(forward: Forward, chunks: list[Chunk]) -> tuple[torch.Tensor, np.ndarray]:
    with torch.no_grad():
        losses = torch.cat([forward(chunk) for chunk in chunks])
    return losses, np.concatenate([chunk.indices for chunk in chunks])


def evaluate(forward: Forward, chunks: list[Chunk], objective: Objective) -> float:
    """The objective over all of ``chunks`` at once (no gradients); NaN without chunks."""
    if not chunks:
        return float("nan")
    return float(objective(*_losses(forward, chunks)))


def _shown(before: torch.Tensor, after: torch.Tensor) -> tuple[bool, str]:
    """Whether the per-sample gains clear ``SHOWN`` standard errors, and the evidence."""
    gains = (before - after).double()
    count = gains.numel()
    if count < 2:
        return False, f"{count} test sample(s): at least 2 are needed to show a gain"
    mean, error = float(gains.mean()), float(gains.std()) / math.sqrt(count)
    shown = mean > SHOWN * error and mean > 0
    return shown, f"mean gain {mean:.3g} = {mean / error if error else math.inf:.1f} std errors"


def _bar(settings: FitSettings, total: int):
    if not settings.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=settings.label[:30], unit="step", file=sys.stderr, leave=False)


def _step(params, kept, optimizer, scheduler, loss: torch.Tensor) -> None:
    """One Adam step; ``kept`` (name -> 1.0 where the weight may change, 0.0 at its zeros)
    keeps the zeros zero: their gradient is multiplied by 0, so Adam's moments and update there
    stay 0, and the values are multiplied by the mask again after the step."""
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    if kept:
        names = list(kept)
        torch._foreach_mul_([params[n].grad for n in names], [kept[n] for n in names])
    optimizer.step()
    scheduler.step()
    if kept:
        with torch.no_grad():
            torch._foreach_mul_([params[n] for n in names], [kept[n] for n in names])


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused CPU kernel (elementwise, deterministic). The multi-tensor ("foreach")
    one spent ten times as long per step on MiniLM's masked weights: its square root is slow on
    the exact zeros and subnormal second moments that pruned weights leave; its results differ
    from the fused kernel's by rounding (about 1e-8)."""
    return torch.optim.Adam(params.values(), lr=lr, fused=True)


def _restore(params: dict[str, torch.nn.Parameter], saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def _epochs(params, masks, forward, setup, settings, rng, bar) -> dict:
    """The training loop; returns the best validation value, its epoch, weights and why it
    stopped."""
    objective, train = setup.objective, setup.train
    best = {"loss": evaluate(forward, setup.validation, objective), "epoch": 0}
    best["weights"] = {name: p.detach().clone() for name, p in params.items()}
    optimizer = _adam(params, settings.lr)
    kept = {name: mask.to(torch.float32) for name, mask in masks.items()}
    steps = max(1, settings.epochs * len(train))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    )
    epoch, stopped, stale = 0, "epochs", 0
    objective.reset()
    while epoch < settings.epochs and stopped == "epochs":
        for index in rng.permutation(len(train)):
            chunk = train[index]
            loss = objective.step(forward(chunk), chunk.indices)
            _step(params, kept, optimizer, scheduler, loss)
            if bar is not None:
                bar.update()
            if time.monotonic() > settings.deadline:
                stopped = "time"
                break
        epoch += 1
        loss = evaluate(forward, setup.validation, objective)
        if loss < best["loss"]:
            best = {
                "loss": loss,
                "epoch": epoch,
                "weights": {n: p.detach().clone() for n, p in params.items()},
            }
            stale = 0
        elif (stale := stale + 1) >= settings.patience and stopped == "epochs":
            stopped = "patience"
        if bar is not None:
            bar.set_postfix(validation=f"{loss:.4g}")
    return {**best, "epochs": epoch, "stopped": stopped}


def _verdict(params, forward, setup, best: dict, initial: dict, before) -> str:
    """Keep the best epoch's weights only if the test part shows the gain; else restore the
    starting weights. Returns what was kept and why."""
    if not best["epoch"]:
        return "initial (no epoch beat it on validation samples)"
    after = _losses(forward, setup.test)[0] if setup.test else torch.zeros(0)
    shown, evidence = _shown(before, after)
    if shown:
        return f"trained ({evidence})"
    _restore(params, initial)
    return f"initial (test gain not shown: {evidence})"


def fit(params, masks, forward: Forward, setup, settings: FitSettings, rng) -> dict:
    """Train ``params`` (see the module docstring); return losses before/after on every part,
    epochs run, the epoch kept, why training stopped and what was kept."""
    objective = setup.objective
    initial = {name: p.detach().clone() for name, p in params.items()}
    before = _losses(forward, setup.test)[0] if setup.test else torch.zeros(0)
    row = {
        "calibration_loss_before": evaluate(forward, setup.calibration, objective),
        "validation_loss_before": evaluate(forward, setup.validation, objective),
        "held_out_loss_before": evaluate(forward, setup.test, objective),
    }
    bar = _bar(settings, max(1, settings.epochs * len(setup.train)))
    best = _epochs(params, masks, forward, setup, settings, rng, bar)
    if bar is not None:
        bar.close()
    _restore(params, best["weights"])
    kept = _verdict(params, forward, setup, best, initial, before)
    row.update(
        calibration_loss_after=evaluate(forward, setup.calibration, objective),
        validation_loss_after=evaluate(forward, setup.validation, objective),
        held_out_loss_after=evaluate(forward, setup.test, objective),
        epochs=best["epochs"],
        best_epoch=best["epoch"],
        stopped=best["stopped"],
        kept=kept,
    )
    return row

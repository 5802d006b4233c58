"""Command-line options of the repair engine, shared by ``repair`` and ``compress --repair``.

``repair_options(prefix)`` builds the decorators (``--epochs`` for ``repair``,
``--repair-epochs`` for ``compress``); ``repair_options_from`` turns the parsed values into a
``RepairOptions``. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxprune.repair.options import RepairOptions

__all__ = ["repair_options", "repair_options_from"]

_DEFAULTS = RepairOptions()


def _specs() -> list[tuple[str, dict[str, Any]]]:
    d = _DEFAULTS
    return [
        ("epochs", {"type": int, "default": d.epochs, "help": "Most epochs per block."}),
        (
            "distill-epochs",
            {
                "type": int,
                "default": d.distill_epochs,
                "help": "Then end-to-end distillation on the model outputs for this many epochs.",
            },
        ),
        ("lr", {"type": float, "default": d.lr, "help": "Adam learning rate (cosine schedule)."}),
        ("train-batch-size", {"type": int, "default": d.batch_size, "help": "Samples per step."}),
        (
            "held-out",
            {
                "type": float,
                "default": d.held_out,
                "help": "Fraction of calibration samples held out for early stopping.",
            },
        ),
        (
            "validation",
            {
                "type": click.Path(path_type=Path),
                "default": None,
                "help": "Held-out .npz the compression never saw (instead of --held-out).",
            },
        ),
        ("patience", {"type": int, "default": d.patience, "help": "Epochs without a new best."}),
        (
            "max-time",
            {"type": float, "default": None, "help": "Seconds for the whole repair (shared)."},
        ),
        (
            "augment",
            {
                "type": int,
                "default": d.augment,
                "help": "Altered copies of each training sample (token replacement, noise).",
            },
        ),
        ("augment-rate", {"type": float, "default": d.augment_rate, "help": "Tokens replaced."}),
        (
            "beta",
            {"type": float, "default": d.beta, "help": "--group-balanced: worst-group weight."},
        ),
        (
            "label-weight",
            {"type": float, "default": d.label_weight, "help": "Cross-entropy weight (labels)."},
        ),
        (
            "train-zeros",
            {"default": None, "help": "Regex: weights whose zeros may change (grown layers)."},
        ),
        ("seed", {"type": int, "default": d.seed, "help": "Seed of the split and shuffling."}),
    ]


def repair_options(prefix: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The repair options, named ``--<prefix><name>``."""
    decorators = [
        click.option(f"--{prefix}{name}", show_default=True, **spec) for name, spec in _specs()
    ]
    decorators.append(
        click.option(
            f"--{prefix}group-balanced",
            is_flag=True,
            help="Weight groups (group.<attribute> in the calibration data) equally and add "
            "beta x the worst group's loss.",
        )
    )
    decorators.append(
        click.option(
            f"--{prefix}changed-only",
            is_flag=True,
            help="Train only the blocks whose weights differ from the teacher's (what the "
            "compression changed); run the others forward.",
        )
    )

    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def repair_options_from(
    params: dict[str, Any], calibration: Path | None, prefix: str = ""
) -> RepairOptions:
    """``RepairOptions`` from parsed options named with ``prefix`` (``repair_`` in compress)."""

    def get(name: str) -> Any:
        return params[prefix + name]

    options = RepairOptions(
        calibration=None if calibration is None else str(calibration),
        epochs=get("epochs"),
        distill_epochs=get("distill_epochs"),
        lr=get("lr"),
        batch_size=get("train_batch_size"),
        held_out=get("held_out"),
        validation=None if get("validation") is None else str(get("validation")),
        patience=get("patience"),
        max_time=get("max_time"),
        augment=get("augment"),
        augment_rate=get("augment_rate"),
        group_balanced=get("group_balanced"),
        beta=get("beta"),
        label_weight=get("label_weight"),
        train_zeros=get("train_zeros"),
        changed_only=get("changed_only"),
        seed=get("seed"),
        mask_input=params.get("calibration_mask"),
    )
    options.validate()
    return options

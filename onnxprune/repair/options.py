"""Options of the repair engine (no torch needed to build or check them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from onnxprune.errors import InputError, compiled_regex

__all__ = ["RepairOptions"]


@dataclass(frozen=True)
class RepairOptions:
    """How to repair a compressed model from its original.

    Attributes:
        calibration: the calibration ``.npz`` (inputs; optional ``label`` and ``group.*``).
        epochs: most epochs per block (block-wise reconstruction).
        distill_epochs: epochs of end-to-end distillation on the model outputs afterwards
            (0: none).
        lr: Adam's learning rate (cosine schedule over the planned steps).
        batch_size: samples per mini-batch.
        held_out: fraction of the calibration samples held out for early stopping.
        validation: a separate ``.npz`` of held-out samples (then all calibration samples train).
            Give one when the compression itself was fitted on the calibration data (SparseGPT,
            structured least squares): samples it saw are not held out for it.
        patience: epochs without a new held-out best before a block stops.
        max_time: seconds for the whole repair (None: no limit), shared among the blocks.
        group_balanced: weight the groups of every ``group.<attribute>`` equally and add
            ``beta`` x the worst group's loss.
        label_weight: weight of the cross-entropy with labels in the output loss (when the
            calibration data has labels).
        augment: altered copies of every training sample to add (``augment``): token
            replacement for table indices, noise for floats; 0 adds none.
        augment_rate: fraction of tokens replaced, or noise relative to each feature's spread.
        train_zeros: regex of weight names whose zeros may change (a ``grow --deeper`` layer
            starts as an identity matrix, almost all zeros); every other weight keeps its zeros.
        changed_only: train only the segments holding a weight that differs from the
            teacher's initializer of the same name (what the compression changed; a structured
            FFN prune leaves the attention blocks as they were); the others are run forward.
        seed: seeds the held-out split, the shuffling and torch.
        mask_input: input marking real positions (default ``attention_mask`` when present).
        progress: progress bars (None: only on a terminal).
    """

    calibration: str | None = None
    epochs: int = 8
    distill_epochs: int = 0
    lr: float = 1e-4
    batch_size: int = 8
    held_out: float = 0.2
    validation: str | None = None
    patience: int = 2
    max_time: float | None = None
    group_balanced: bool = False
    beta: float = 1.0
    label_weight: float = 0.5
    augment: int = 0
    augment_rate: float = 0.15
    train_zeros: str | None = None
    changed_only: bool = False
    seed: int = 0
    mask_input: str | None = None
    progress: bool | None = None

    def validate(self) -> None:
        if self.calibration is None:
            raise InputError("repair trains on calibration data: give --calibration DATA.npz")
        if self.epochs < 0 or self.distill_epochs < 0 or self.epochs + self.distill_epochs == 0:
            raise InputError("--epochs and --distill-epochs must be >= 0, one of them > 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1 or self.patience < 1:
            raise InputError("--batch-size and --patience must be at least 1")
        if not 0 < self.held_out < 1:
            raise InputError(f"--held-out must be in (0, 1), got {self.held_out}")
        if self.max_time is not None and not self.max_time > 0:
            raise InputError(f"--max-time must be positive (seconds), got {self.max_time}")
        if self.augment < 0 or not 0 < self.augment_rate <= 1:
            raise InputError("--augment must be >= 0 and --augment-rate in (0, 1]")
        compiled_regex("--train-zeros", self.train_zeros)
        if self.beta < 0 or self.label_weight < 0:
            raise InputError("--beta and --label-weight must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

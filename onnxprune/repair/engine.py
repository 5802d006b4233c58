"""The repair engine: block-wise reconstruction, then optional end-to-end distillation.

``repair_weights`` trains the student's weights (``trainable``) towards the teacher on
calibration chunks and returns the new values by initializer name with a report. Block by block
(``segments``), each segment's weights learn to reproduce the teacher's tensor at the segment's
cut from the student's own inputs there (student-propagated, so earlier errors are corrected
rather than compounded); the repaired segment is then run forward to give the next its inputs.
With ``distill_epochs``, all weights are then trained together on the model-output loss.
Everything runs single-threaded, seeded and with torch's deterministic algorithms, so the same
inputs give byte-identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

from onnxprune.repair.chunks import Chunk
from onnxprune.repair.losses import output_loss, tensor_loss
from onnxprune.repair.segments import Segment
from onnxprune.repair.setup import Setup
from onnxprune.repair.train import FitSettings, evaluate, fit

__all__ = ["repair_weights", "torch_settings"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_settings(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms, seeded; previous settings restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _outputs_loss(setup: Setup, chunk: Chunk, values: dict) -> torch.Tensor:
    losses = [
        output_loss(
            values[name] if name in values else chunk.env[name],
            chunk.targets[name],
            setup.tasks[name],
            chunk.keep,
            setup.scales[name],
            chunk.labels,
            setup.options.label_weight,
            setup.probabilities[name],
        )
        for name in setup.outputs
    ]
    return torch.stack(losses).sum(dim=0)


def _segment_forward(setup: Setup, segment: Segment):
    def forward(chunk: Chunk) -> torch.Tensor:
        values = setup.program.run(chunk.env, segment.start, segment.stop, setup.params)
        if segment.final:
            return _outputs_loss(setup, chunk, values)
        (name,) = segment.targets
        return tensor_loss(values[name], chunk.targets[name], chunk.keep, setup.scales[name])

    return forward


def _model_forward(setup: Setup):
    def forward(chunk: Chunk) -> torch.Tensor:
        feed = {name: torch.from_numpy(array) for name, array in chunk.feed.items()}
        values = setup.program.run(feed, 0, len(setup.program.nodes), setup.params)
        return _outputs_loss(setup, chunk, values)

    return forward


def _settings(setup: Setup, label: str, epochs: int, share: float, end: float) -> FitSettings:
    now = time.monotonic()
    progress = setup.options.progress
    if progress is None:
        progress = sys.stderr.isatty()
    return FitSettings(
        epochs=epochs,
        lr=setup.options.lr,
        patience=setup.options.patience,
        deadline=now + max(0.0, end - now) * share,
        progress=progress,
        label=label,
    )


def _subset(setup: Setup, names: tuple[str, ...]):
    params = {name: setup.params[name] for name in names}
    masks = {name: setup.masks[name] for name in names if name in setup.masks}
    return params, masks


def _untouched(setup: Setup, segment: Segment) -> bool:
    """With ``changed_only``: none of the segment's weights differs from the teacher's."""
    return setup.options.changed_only and not setup.changed.intersection(segment.params)


def _blockwise(setup: Setup, end: float, rng: np.random.Generator) -> list[dict]:
    """Train each segment in turn, then run it forward on every chunk."""
    rows = []
    pending = sum(1 for s in setup.segments if s.params and not _untouched(setup, s)) + (
        setup.options.distill_epochs > 0 and setup.options.epochs > 0
    )
    for segment in setup.segments:
        row = {"block": segment.label, "target": list(segment.targets), "weights": 0}
        if segment.params and _untouched(setup, segment):
            row["stopped"] = "unchanged from the teacher (--changed-only)"
        elif segment.params and time.monotonic() >= end:
            row["stopped"] = "time (--max-time spent before this block)"
        elif segment.params and setup.options.epochs > 0:
            params, masks = _subset(setup, segment.params)
            row["weights"] = int(sum(p.numel() for p in params.values()))
            settings = _settings(setup, segment.label, setup.options.epochs, 1 / pending, end)
            forward = _segment_forward(setup, segment)
            row.update(fit(params, masks, forward, setup, settings, rng))
            pending -= 1
        else:
            row["stopped"] = "no weights to train" if not segment.params else "epochs = 0"
        rows.append(row)
        logger.info("repair %s: %s", segment.label, row.get("stopped"))
        with torch.no_grad():
            for chunk in setup.chunks:
                setup.program.advance(chunk.env, segment.start, segment.stop, setup.params)
    return rows


def repair_weights(setup: Setup) -> tuple[dict[str, np.ndarray], dict]:
    """Train ``setup``'s weights; return the new values by name and the report section."""
    options = setup.options
    started = time.monotonic()
    end = started + options.max_time if options.max_time else float("inf")
    rng = np.random.default_rng(options.seed)
    model_forward = _model_forward(setup)
    before = {
        "calibration": evaluate(model_forward, setup.calibration, setup.objective),
        "held_out": evaluate(model_forward, setup.test, setup.objective),
    }
    blocks = _blockwise(setup, end, rng) if options.epochs > 0 else []
    distillation = None
    if options.distill_epochs > 0:
        names = [n for s in setup.segments if not _untouched(setup, s) for n in s.params]
        params, masks = _subset(setup, tuple(names))
        settings = _settings(setup, "distillation", options.distill_epochs, 1.0, end)
        distillation = fit(params, masks, model_forward, setup, settings, rng)
    after = {
        "calibration": evaluate(model_forward, setup.calibration, setup.objective),
        "held_out": evaluate(model_forward, setup.test, setup.objective),
    }
    values = {name: p.detach().numpy().copy() for name, p in setup.params.items()}
    section = {
        "blocks": blocks,
        "distillation": distillation,
        "output_loss": {
            "calibration_before": before["calibration"],
            "calibration_after": after["calibration"],
            "held_out_before": before["held_out"],
            "held_out_after": after["held_out"],
        },
        "seconds": time.monotonic() - started,
    }
    return values, section

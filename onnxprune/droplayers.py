"""``drop-layers``: remove the residual blocks that change their input the least.

Blocks are found by ``onnxprune.residual``; each is scored on calibration data by
1 - cos(x, x + f(x)). ``blocks=N`` removes the N lowest-scoring blocks; ``max_cosine_drop=X``
removes blocks in that order while the model's first output keeps a mean cosine of at least
1 - X to the original on the calibration data (measured after each removal).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.calibration import capture_model, detect_mask_input
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.metrics import agreement_metrics
from onnxprune.model_io import (
    check_distinct_output,
    model_files,
    save_model,
    uses_external_data,
)
from onnxprune.normalize import load_normalized
from onnxprune.residual import RemoveBlocksPass, ResidualBlock, find_residual_blocks
from onnxprune.runtime import create_session, fixed_batch, run_dataset, run_feed

__all__ = ["DropOptions", "drop_layers_file"]

# Local scores spread less than this cannot rank blocks (every one prints as 0.0000); the
# model output decides instead.
TIE = 1e-4

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropOptions:
    """How many blocks to drop: a count, or a budget on the output cosine."""

    blocks: int | None = None
    max_cosine_drop: float | None = None
    calibration: str | None = None
    batch_size: int = 16

    def validate(self) -> None:
        if (self.blocks is None) == (self.max_cosine_drop is None):
            raise InputError("give exactly one of --blocks N and --max-cosine-drop X")
        if self.blocks is not None and self.blocks < 1:
            raise InputError(f"--blocks must be at least 1, got {self.blocks}")
        if self.max_cosine_drop is not None and not 0 < self.max_cosine_drop < 1:
            raise InputError(f"--max-cosine-drop must be in (0, 1), got {self.max_cosine_drop}")
        if self.calibration is None:
            raise InputError("drop-layers scores blocks on data: give --calibration DATA.npz")


def _scores(model: ir.Model, blocks: list[ResidualBlock], data: Dataset, batch: int) -> dict:
    """Streaming mean of cos(x, x + f(x)) per block (padded positions left out)."""
    adds = {n.name: n.outputs[0].name for n in model.graph if n.name in {b.add for b in blocks}}
    tensors = {b.skip for b in blocks} | set(adds.values())
    mask = detect_mask_input(data, None)
    sums = {b.add: 0.0 for b in blocks}
    counts = dict.fromkeys(sums, 0)
    with tempfile.TemporaryDirectory(prefix="onnxprune-blocks-") as folder:
        session = create_session(capture_model(model, tensors, Path(folder)))
        fetch = sorted(tensors - set(data.inputs))
        batch = fixed_batch(session) or batch
        for start in range(0, data.samples, batch):
            feed = data.slice(start, start + batch)
            fetched = run_feed(session, fetch, feed, start)
            values = {**feed, **dict(zip(fetch, fetched, strict=True))}
            keep = feed.get(mask) if mask else None
            for block in blocks:
                x, y = values[block.skip], values[adds[block.add]]
                x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
                if keep is not None and keep.size == len(x):
                    rows = keep.reshape(-1).astype(bool)
                    x, y = x[rows], y[rows]
                norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
                cosine = np.sum(x * y, axis=1) / np.maximum(norms, 1e-30)
                sums[block.add] += float(cosine.sum())
                counts[block.add] += len(cosine)
    return {name: 1.0 - sums[name] / max(counts[name], 1) for name in sums}


def _without(model: ir.Model, blocks: list[ResidualBlock]) -> ir.Model:
    candidate = model.clone()
    RemoveBlocksPass(blocks)(candidate)
    return candidate


def _output_cosine(reference: dict, model: ir.Model, data: Dataset, folder: Path) -> float:
    path = folder / "candidate.onnx"
    ir.save(model, path, external_data="candidate.onnx.data")
    outputs = run_dataset(create_session(path), data)
    name = next(iter(reference))
    return agreement_metrics(reference[name], outputs[name])["cosine_mean"]


class _Trials:
    """Output cosine to the original model, on the calibration data, of the model without
    some blocks (the original's outputs computed once, on first use)."""

    def __init__(self, model: str | os.PathLike, working: ir.Model, data: Dataset, folder: Path):
        self.model, self.working, self.data, self.folder = model, working, data, folder
        self.reference: dict | None = None

    def cosine_without(self, blocks: list[ResidualBlock]) -> float:
        if self.reference is None:
            self.reference = run_dataset(create_session(self.model), self.data)
        candidate = _without(self.working, blocks)
        return _output_cosine(self.reference, candidate, self.data, self.folder)


def _ranking(
    working: ir.Model, blocks: list[ResidualBlock], data: Dataset, batch: int, trials: _Trials
) -> tuple[dict[str, float], str]:
    """Block scores (lower = less influential) and what they measure: the local proxy, or the
    model output's cosine drop with the block removed where the local scores tie."""
    scores = _scores(working, blocks, data, batch)
    if max(scores.values()) - min(scores.values()) >= TIE:
        return scores, "local 1 - cos(x, x + f(x))"
    effects = {b.add: 1.0 - trials.cosine_without([b]) for b in blocks}
    return effects, "model output 1 - cosine with the block removed (local scores tied)"


def _within_budget(
    ranked: list[ResidualBlock], max_drop: float, trials: _Trials
) -> tuple[list[ResidualBlock], float | None]:
    """Blocks in ranked order while the output cosine stays at 1 - ``max_drop`` or more."""
    chosen: list[ResidualBlock] = []
    cosine = None
    for block in ranked:
        trial = trials.cosine_without([*chosen, block])
        if 1.0 - trial > max_drop:
            break
        chosen.append(block)
        cosine = trial
    return chosen, cosine


def drop_layers_file(
    model: str | os.PathLike, output: str | os.PathLike, options: DropOptions
) -> dict:
    """Remove residual blocks from ``model`` into ``output``; return the report section."""
    options.validate()
    working = load_normalized(model)
    external = uses_external_data(working)
    protected = model_files(model, working)
    check_distinct_output(output, protected, external)
    data = load_dataset(options.calibration, input_specs(working))
    blocks = find_residual_blocks(working)
    if not blocks:
        raise InputError(f"{model}: no residual blocks (x + f(x)) found")
    with tempfile.TemporaryDirectory(prefix="onnxprune-drop-") as folder:
        trials = _Trials(model, working, data, Path(folder))
        scores, ranking = _ranking(working, blocks, data, options.batch_size, trials)
        ranked = sorted(blocks, key=lambda b: (scores[b.add], b.add))
        if options.blocks is not None:
            chosen, cosine = ranked[: options.blocks], None
        else:
            chosen, cosine = _within_budget(ranked, options.max_cosine_drop, trials)
    if not chosen:
        raise InputError("no block can be dropped within --max-cosine-drop")
    RemoveBlocksPass(chosen)(working)
    save_model(working, output, protected=protected, external_data=external)
    return {
        "blocks": [
            {
                "add": b.add,
                "skip": b.skip,
                "nodes": len(b.nodes),
                "score": scores[b.add],
                "dropped": b in chosen,
            }
            for b in blocks
        ],
        "dropped": [b.add for b in chosen],
        "ranked_by": ranking,
        "calibration_output_cosine": cosine,
    }

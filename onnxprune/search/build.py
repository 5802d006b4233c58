"""Build one candidate model: prune (unstructured per layer, or structured), repair, int8.

A candidate's method names all of it: ``magnitude``, ``wanda``, ``sparsegpt`` (per-layer
sparsity from the allocation) or ``structured:<target>`` (``ffn``, ``heads``, ``channels``,
``all``; one sparsity, ``allocation[STRUCTURED]``, with OBS importance and least-squares
reconstruction when there is calibration data), optionally followed by ``+int8`` (dynamic int8
quantization after pruning and repair, through ``onnxprune.quantize``'s public API). An
allocation of all zeros skips pruning (``+int8`` alone, for instance).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from onnxprune.api import prune_file
from onnxprune.calibration import CalibrationOptions
from onnxprune.errors import InputError
from onnxprune.pruning import PruneOptions
from onnxprune.quantize import QuantizeOptions, quantize_model_file
from onnxprune.repair.options import RepairOptions
from onnxprune.repair.stage import run_repair_stage
from onnxprune.scoring import METHODS
from onnxprune.structured.pipeline import TARGETS, StructuredOptions

__all__ = ["STRUCTURED", "CandidateBuilder", "check_method", "split_method"]

STRUCTURED = "*structured*"  # the allocation key of a structured candidate's one sparsity
PRECISIONS = ("float", "int8")


def split_method(method: str) -> tuple[str, str, str | None]:
    """``(base, precision, structured target or None)`` of a candidate's method name."""
    base, _, precision = method.partition("+")
    target = base.split(":", 1)[1] if base.startswith("structured:") else None
    return base, precision or "float", target


def check_method(method: str) -> None:
    """Refuse a method name the builder does not know."""
    base, precision, target = split_method(method)
    known = base in METHODS or (target is not None and target in TARGETS)
    if not known or precision not in PRECISIONS:
        raise InputError(
            f"unknown search method '{method}' (choose from {', '.join(METHODS)}, "
            f"structured:{{{','.join(TARGETS)}}}, each optionally +int8)"
        )


@dataclass
class CandidateBuilder:
    """Turns (method, allocation) into a model file and its pruning section."""

    prune_options: PruneOptions
    calibration_options: CalibrationOptions
    repair: RepairOptions | None = None

    def _prune(
        self, base: str, target: str | None, allocation: dict, source: Path, out: Path
    ) -> dict | None:
        if not any(allocation.values()):
            shutil.copyfile(source, out)
            return None
        base_options = self.prune_options
        if target is not None:
            calibration = base_options.calibration
            options = StructuredOptions(
                target=target,
                sparsity=allocation[STRUCTURED],
                reconstruct=calibration is not None,
                include=base_options.include,
                exclude=base_options.exclude,
                calibration=calibration,
            )
        else:
            options = replace(
                base_options,
                method=base,
                target_sparsity=0.0,
                allocation="uniform",
                layer_targets=tuple(sorted(allocation.items())),
            )
        return prune_file(source, out, options, self.calibration_options)["pruning"]

    def build(
        self, method: str, allocation: dict[str, float], source: Path, out: Path, teacher: Path
    ) -> dict:
        """Prune ``source`` into ``out`` (repairing towards ``teacher``, the dense model);
        its sections (``pruning`` may be None)."""
        base, precision, target = split_method(method)
        stages = out.with_name(f"{out.stem}.stages")
        stages.mkdir(exist_ok=True)
        current = stages / "pruned.onnx"
        sections: dict = {"pruning": self._prune(base, target, allocation, source, current)}
        if self.repair is not None and sections["pruning"] is not None:
            repaired = stages / "repaired.onnx"
            sections["repair"] = run_repair_stage(current, teacher, repaired, self.repair)
            current = repaired
        if precision == "int8":
            quantized = stages / "quantized.onnx"
            sections["quantization"] = quantize_model_file(
                current, quantized, QuantizeOptions(mode="dynamic")
            )
            current = quantized
        shutil.copyfile(current, out)
        shutil.rmtree(stages)
        return sections

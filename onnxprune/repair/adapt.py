"""``adapt``: a model that removes or grows layers by what validation says, repairing each step.

Starting from MODEL (its teacher: ``teacher``, by default MODEL itself), under a budget (the
verification gates, measured on ``--data`` against the teacher):

* if MODEL breaks the budget, it is repaired; if it still breaks it, a ``grow --deeper`` layer
  is inserted and the grown model repaired (its new layer may fill its zeros), each kept only if
  the validation metric improves. Where: after ``grow_after`` when it names a node; otherwise
  adapt chooses by validation: it tries up to ``GROW_CANDIDATES`` activation outputs (Relu, Gelu,
  ... spread evenly over the graph), grows and repairs each, and keeps the best;
* while the budget holds, the least influential residual block is dropped (``drop-layers``) and
  the model repaired; the step is kept only if the budget still holds, and the loop stops at the
  first refused step, when no block is left, or after ``max_steps`` steps.

Every step, taken or refused, is reported with the metric before and after. The metric is the
first active gate's value (cosine, agreement or accuracy drop) on the verification data.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from onnxprune.droplayers import DropOptions, drop_layers_file
from onnxprune.errors import InputError
from onnxprune.grow import DeepenPass
from onnxprune.model_io import load_model, model_files, save_model, uses_external_data
from onnxprune.repair.api import repair_file
from onnxprune.repair.extra import require_torch
from onnxprune.repair.options import RepairOptions
from onnxprune.report import build_report
from onnxprune.verify import (
    Gates,
    VerifyOptions,
    evaluate_gates,
    prepare_verification,
    verify_models,
)

__all__ = ["GROW_CANDIDATES", "AdaptOptions", "adapt", "grow_candidates"]

GROW_CANDIDATES = 3  # activation outputs tried when adapt chooses where to grow
_ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "Gelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "Softplus"}
)


@dataclass(frozen=True)
class AdaptOptions:
    """The repair settings of every step, the most steps, and where growth may insert."""

    repair: RepairOptions
    max_steps: int = 4
    grow_after: str | None = None

    def validate(self) -> None:
        self.repair.validate()
        if self.max_steps < 1:
            raise InputError(f"--max-steps must be at least 1, got {self.max_steps}")


class _Judge:
    """Measures a candidate against the teacher and the budget."""

    def __init__(self, teacher, verify_options: VerifyOptions, dataset, gates: Gates) -> None:
        self.teacher, self.dataset, self.gates = teacher, dataset, gates
        self.options = replace(verify_options, latency_runs=0)

    def __call__(self, path: Path) -> dict:
        verification = verify_models(self.teacher, path, self.options, self.dataset)
        results = evaluate_gates(self.gates, verification)
        first = results[0]
        better = 1 if first["gate"].startswith("min_") else -1
        return {
            "metric": first["gate"],
            "value": first["value"],
            "score": better * first["value"],
            "budget_holds": all(g["passed"] for g in results),
        }


def _step(kind: str, before: dict, after: dict | None, taken: bool, note: str = "") -> dict:
    row = {"step": kind, "before": before["value"], "after": after and after["value"]}
    row.update(taken=taken, budget_holds=bool(after and after["budget_holds"]))
    if note:
        row["note"] = note
    return row


def _repair(student: Path, teacher, out: Path, options: RepairOptions) -> None:
    repair_file(student, teacher, out, options)


def _recover(current, teacher, work, options, judge, steps) -> tuple[Path, dict]:
    """Repair (then grow and repair) a model that breaks the budget; keep what improves."""
    state = judge(current)
    candidate = work / "repaired.onnx"
    _repair(current, teacher, candidate, options.repair)
    after = judge(candidate)
    taken = after["score"] > state["score"]
    steps.append(_step("repair", state, after, taken))
    if taken:
        current, state = candidate, after
    if state["budget_holds"]:
        return current, state
    places = [options.grow_after] if options.grow_after else grow_candidates(load_model(current))
    best, rows = (current, state), []
    for index, place in enumerate(places):
        grown, candidate = work / f"grown{index}.onnx", work / f"grown{index}.repaired.onnx"
        model = load_model(current)
        DeepenPass(place)(model)
        save_model(model, grown, external_data=uses_external_data(model))
        _repair(grown, teacher, candidate, replace(options.repair, train_zeros="^grown_after_"))
        after = judge(candidate)
        rows.append(_step(f"grow --deeper {place} + repair", state, after, False))
        if after["score"] > best[1]["score"]:
            best = (candidate, after)
            for row in rows:  # only the best growth is taken
                row["taken"] = row is rows[-1]
    steps.extend(rows)
    return best


def grow_candidates(model, limit: int = GROW_CANDIDATES) -> list[str]:
    """Up to ``limit`` activation outputs (float, not graph outputs), spread evenly in graph
    order: where an identity layer can be grown and then learn."""
    outputs = {v.name for v in model.graph.outputs}
    names = [
        node.outputs[0].name
        for node in model.graph
        if node.op_type in _ACTIVATIONS and node.outputs[0].name not in outputs
    ]
    if len(names) <= limit:
        return names
    if limit == 1:
        return [names[len(names) // 2]]
    return [names[round(i * (len(names) - 1) / (limit - 1))] for i in range(limit)]


def _reduce(current, teacher, work, options, judge, state, steps) -> Path:
    """Drop the least influential block and repair, while the budget holds."""
    for index in range(options.max_steps):
        dropped, candidate = work / f"drop{index}.onnx", work / f"drop{index}.repaired.onnx"
        try:
            section = drop_layers_file(
                current, dropped, DropOptions(blocks=1, calibration=options.repair.calibration)
            )
        except InputError as error:
            steps.append(_step("drop 1 block + repair", state, None, False, str(error)))
            break
        _repair(dropped, teacher, candidate, options.repair)
        after = judge(candidate)
        row = _step("drop 1 block + repair", state, after, after["budget_holds"])
        steps.append({**row, "dropped": section["dropped"]})  # the residual Add(s) removed
        if not after["budget_holds"]:
            break
        current, state = candidate, after
    return current


def adapt(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: AdaptOptions,
    verify_options: VerifyOptions,
    gates: Gates,
    teacher: str | os.PathLike | None = None,
) -> dict:
    """Adapt ``model`` under the budget ``gates``; write the kept model; return the report."""
    options.validate()
    require_torch()
    if not gates.active:
        raise InputError(
            "adapt needs a budget: --min-cosine, --min-agreement or --max-accuracy-drop"
        )
    teacher = teacher or model
    gates, dataset = prepare_verification(teacher, verify_options, gates)
    steps: list[dict] = []
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix=".adapt-", dir=output.parent) as folder:
        work, judge = Path(folder), _Judge(teacher, verify_options, dataset, gates)
        current, state = Path(model), judge(Path(model))
        if not state["budget_holds"]:
            current, state = _recover(current, teacher, work, options, judge, steps)
        if state["budget_holds"]:
            current = _reduce(current, teacher, work, options, judge, state, steps)
        kept = load_model(current)
        protected = model_files(model) + model_files(teacher)
        save_model(kept, output, protected=protected, external_data=uses_external_data(kept))
    verification = verify_models(teacher, output, verify_options, dataset)
    report = build_report(
        "adapt",
        teacher,
        output,
        verification=verification,
        gates=evaluate_gates(gates, verification),
    )
    report["adapt"] = {"model": str(model), "steps": steps}
    return report

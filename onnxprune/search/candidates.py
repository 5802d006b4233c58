"""Build and verify one candidate of the search: prune, (repair), verify on the selection half.

A candidate is a method and a per-layer sparsity allocation. It is pruned from the cleaned
model, verified against the original with ``onnxprune.verify`` (every gate it knows, so new
gates apply to the search as they are added), and logged. Its objective (lower is better):
``size``, the candidate's DEFLATE-compressed bytes; ``macs`` and ``latency``, the MACs left in
the pruned layers (their nonzero share) plus every other layer's, which is deterministic;
with ``latency`` the best few passing candidates are then timed (``choose.choose_fastest``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from onnxprune.calibration import CalibrationOptions
from onnxprune.data import Dataset
from onnxprune.pruning import PruneOptions
from onnxprune.repair.options import RepairOptions
from onnxprune.search.bisect import Budget, Outcome
from onnxprune.search.bound import bounded
from onnxprune.search.build import STRUCTURED, CandidateBuilder, split_method
from onnxprune.search.log import SearchLog
from onnxprune.search.units import UnitPlans
from onnxprune.verify import Gates, VerifyOptions, evaluate_gates, verify_models

__all__ = ["Evaluator", "candidate_key", "summary", "tightened"]

logger = logging.getLogger(__name__)


def candidate_key(method: str, allocation: dict[str, float], source: str = "") -> str:
    """A stable text key for a configuration (levels rounded to 1e-4). Nothing pruned: the
    precision alone, whichever method asked (``structured:heads+int8`` at 0 is int8 alone)."""
    if not source and not any(allocation.values()):
        return json.dumps({"precision alone": split_method(method)[1]})
    layers = sorted((name, round(level, 4)) for name, level in allocation.items())
    return json.dumps({"method": method, "layers": layers, "from": source}, sort_keys=True)


def summary(verification: dict, gates: list[dict]) -> dict:
    """The numbers of a verification that the log and the report compare across halves."""
    quality = verification["quality"]
    worst = [
        g["worst_group_drop"]
        for g in quality.get("groups", {}).values()
        if g.get("worst_group_drop") is not None
    ]
    return {
        "accuracy_drop": quality.get("accuracy_drop"),
        "top1_agreement": quality.get("top1_agreement"),
        "cosine_mean": quality.get("cosine_mean"),
        "worst_group_drop": max(worst) if worst else None,
        "gates": {g["gate"]: {"value": g["value"], "passed": g["passed"]} for g in gates},
    }


def tightened(gates: Gates, margin: float) -> Gates:
    """The gates the search applies on the selection half: every ``max_*`` limit times
    ``1 - margin``, every ``min_*`` limit moved that share of its distance to 1 closer to 1.
    Choosing the best of many candidates on one half flatters it (the winner's curse); the
    margin leaves room for that, and the confirmation half uses the gates as given."""
    changes = {}
    for item in fields(gates):
        value = getattr(gates, item.name)
        if not isinstance(value, float):
            continue
        if item.name.startswith("max_"):
            changes[item.name] = value * (1.0 - margin) if value > 0 else value
        elif item.name.startswith("min_") and value <= 1.0:
            changes[item.name] = 1.0 - (1.0 - value) * (1.0 - margin)
    return replace(gates, **changes)


def _sparsity(pruning: dict | None, allocation: dict[str, float]) -> float:
    """Unstructured: the share of prunable weights zeroed; structured: the target."""
    if pruning is None:
        return 0.0
    if STRUCTURED in allocation:
        return allocation[STRUCTURED]
    return pruning["totals"]["sparsity_after"]


@dataclass
class Evaluator:
    """Everything a candidate needs; ``evaluate`` is called by the search with allocations."""

    baseline: Path
    source: Path
    work: Path
    selection: Dataset
    gates: Gates
    verify_options: VerifyOptions
    prune_options: PruneOptions
    calibration_options: CalibrationOptions
    objective: str
    macs: dict[str, int]
    other_macs: int
    log: SearchLog
    budget: Budget
    repair: RepairOptions | None = None
    best: Outcome | None = None
    seen: dict[str, Outcome] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    z: float = 0.0  # gates judged on drop + z * paired SE (``bound``)
    kept: dict[str, Path] = field(default_factory=dict)  # latency: passing candidates' files
    timing: dict | None = None  # latency: the timed candidates (``choose.choose_fastest``)
    plans: UnitPlans | None = None  # structured: the units a level keeps (``units``)
    plan_keys: dict[tuple, str] = field(default_factory=dict)

    def build(self, method: str, allocation: dict[str, float], source: Path, out: Path) -> dict:
        """Write the candidate to ``out``; its sections (see ``build.CandidateBuilder``)."""
        builder = CandidateBuilder(self.prune_options, self.calibration_options, self.repair)
        return builder.build(method, allocation, source, out, teacher=self.source)

    def _objective(self, method: str, pruning: dict | None, verification: dict) -> float:
        """Lower is better: compressed bytes (size); MACs left (macs); MACs left with int8
        layers counted at half (latency: a deterministic proxy, measured at the end)."""
        if self.objective == "size":
            return float(verification["size"]["candidate"]["compressed_bytes"])
        if pruning is not None and "macs" in pruning:  # structured: the graph got smaller
            left = float(pruning["macs"]["after"])
        else:
            layers = pruning["layers"] if pruning is not None else []
            removed = sum(
                layer["sparsity_after"] * self.macs.get(layer["name"], 0) for layer in layers
            )
            left = float(sum(self.macs.values()) + self.other_macs - removed)
        factor = 0.5 if self.objective == "latency" and split_method(method)[1] == "int8" else 1
        return left * factor

    def evaluate(
        self, method: str, allocation: dict[str, float], source: Path | None = None
    ) -> Outcome:
        """Verify one configuration on the selection half (or reuse its logged result)."""
        source = source or self.source
        key = candidate_key(method, allocation, "" if source == self.source else source.name)
        if key in self.seen:  # tried earlier in this run (a revert can land on one)
            return self.seen[key]
        plan = self._plan(method, allocation, source)
        if plan in self.plan_keys:  # another level that keeps the same units: the same model
            logger.info("candidate %s %s keeps the units of an earlier one", method, allocation)
            return self.seen[self.plan_keys[plan]]
        logged = self.log.lookup(key)
        self.budget.spend()
        if logged is not None:
            self.budget.reused += 1
            outcome = Outcome(key, logged["passed"], logged["objective"], allocation, logged)
        else:
            self.budget.evaluated += 1
            outcome = self._verify(key, method, allocation, source)
        if outcome.beats(self.best):
            self.best = outcome
        self.seen[key] = outcome
        if plan is not None:
            self.plan_keys[plan] = key
        return outcome

    def _plan(self, method: str, allocation: dict[str, float], source: Path) -> tuple | None:
        """``(method, units kept per group)`` of a structured level (None otherwise)."""
        target = split_method(method)[2]
        if target is None or source != self.source or not any(allocation.values()):
            return None
        if self.plans is None:
            options = self.prune_options
            self.plans = UnitPlans(self.source, options.include, options.exclude)
        has_calibration = self.prune_options.calibration is not None
        return (method, self.plans.plan(target, allocation[STRUCTURED], has_calibration))

    def _verify(self, key: str, method: str, allocation: dict, source: Path) -> Outcome:
        candidate = self.work / "candidate.onnx"
        pruning = self.build(method, allocation, source, candidate)["pruning"]
        # the search needs point values only: no latency, no bootstrap intervals
        groups = replace(self.verify_options.groups, bootstrap=0)
        quick = replace(self.verify_options, latency_runs=0, groups=groups)
        verification = verify_models(self.baseline, candidate, quick, self.selection)
        judged = bounded(verification, self.z)
        gates = evaluate_gates(self.gates, judged)
        passed = all(g["passed"] for g in gates)
        record = {
            "method": method,
            "allocation": dict(sorted(allocation.items())),
            "passed": passed,
            "objective": self._objective(method, pruning, verification),
            "sparsity": _sparsity(pruning, allocation),
            "selection": summary(verification, gates),
            "bound": {
                k: v
                for k, v in summary(judged, []).items()
                if k in ("accuracy_drop", "worst_group_drop")
            },
        }
        self.log.record(key, record)
        outcome = Outcome(key, passed, record["objective"], allocation, record)
        if outcome.beats(self.best):
            self.log.save_best(candidate)
        if passed and self.objective == "latency":  # timed at the end (``choose_fastest``)
            self.kept[key] = self.work / f"passed-{len(self.kept)}.onnx"
            shutil.copyfile(candidate, self.kept[key])
        logger.info(
            "candidate %s sparsity %.4f: %s",
            method,
            record["sparsity"],
            "pass" if passed else "fail",
        )
        return outcome

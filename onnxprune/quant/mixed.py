"""Mixed smoothing: keep a SmoothQuant ``Mul`` only where it measurably helps the model output.

A smoothing scale that cannot be folded into constants (``onnxprune.quant.fold``) costs a ``Mul``
over the whole activation at run time; on MiniLM (post-LN) 18 such ``Mul``s cost more than static
int8 saves over dynamic int8. The static quantizer therefore quantizes the model twice, with
every group smoothed (``smoothed``) and with only the folded groups smoothed (``plain``), and
this step measures, on the calibration data, what taking one ``Mul`` group from ``plain`` does to
the model's output: the mean cosine of the output rows (real tokens) to the float model's.

Groups are then dropped, smallest loss per activation channel first (a ``Mul``'s cost grows with
its channels), while the output cosine stays within ``budget`` of the all-smoothed model; each
drop is checked on the combined model and undone when the combination leaves the budget.
Deterministic: the same data gives the same choice (ties break by tensor name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.data import Dataset
from onnxprune.quant.capture import capture_rows

__all__ = [
    "MUL_BUDGET",
    "ChooseSmoothingMulsPass",
    "Mixing",
    "mix_smoothing",
    "output_cosine",
    "smoothing_reasons",
    "transplant",
]

logger = logging.getLogger(__name__)
SUFFIX = "__plain"
# calibration samples on which the Mul choice is measured
MIX_SAMPLES = 64
# default: keep every Mul. Dropping them (``--mul-budget X``) triples static quantize time on
# MiniLM (61 -> 204 s) for a speed change inside the benchmark's spread (onnxruntime 1.32, CPU).
MUL_BUDGET: float | None = None


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _chain(source: onnx.ModelProto, start: str, tensor: str) -> list[onnx.NodeProto]:
    """Nodes of ``source`` from ``tensor`` (exclusive) to ``start``, last first; each reads one
    non-constant tensor."""
    producers, constants = _producers(source), {t.name for t in source.graph.initializer}
    chain, name = [], start
    while name != tensor:
        node = producers.get(name)
        moving = [i for i in node.input if i and i not in constants] if node else []
        if node is None or len(moving) != 1:
            raise ValueError(f"{start}: no single path back to {tensor}")
        chain.append(node)
        name = moving[0]
    return chain


def transplant(
    target: onnx.ModelProto, source: onnx.ModelProto, tensor: str, matmuls: list[str]
) -> None:
    """Make the int8 ``matmuls`` of ``target`` compute as in ``source``: their quantization
    chain from ``tensor`` (``QuantizeLinear``, a smoothing ``Mul``), weights, scales and bias are
    copied under new names (suffix ``__plain``); what ``target`` no longer reads is dropped."""
    nodes = {n.name: n for n in source.graph.node}
    constants = {t.name: t for t in source.graph.initializer}
    copied: dict[str, str] = {tensor: tensor}
    new_nodes: list[onnx.NodeProto] = []

    def copy_name(name: str) -> str:
        if name and name not in copied:
            copied[name] = name + SUFFIX
            if name in constants:
                tensor_proto = onnx.TensorProto()
                tensor_proto.CopyFrom(constants[name])
                tensor_proto.name = copied[name]
                target.graph.initializer.append(tensor_proto)
        return copied.get(name, name)

    for name in matmuls:
        for node in reversed(_chain(source, nodes[name].input[0], tensor)):
            if node.output[0] not in copied:
                clone = onnx.NodeProto()
                clone.CopyFrom(node)
                clone.name += SUFFIX
                clone.input[:] = [copy_name(i) for i in node.input]
                for index, output in enumerate(node.output):
                    copied[output] = output + SUFFIX
                    clone.output[index] = copied[output]
                new_nodes.append(clone)
    by_name = {n.name: n for n in target.graph.node}
    old = [n for m in matmuls for n in _chain(target, by_name[m].input[0], tensor)]
    old_inputs = {i for m in matmuls for i in by_name[m].input}
    first = min(list(target.graph.node).index(by_name[m]) for m in matmuls)
    for offset, node in enumerate(new_nodes):
        target.graph.node.insert(first + offset, node)
    for name in matmuls:
        by_name[name].input[:] = [copy_name(i) for i in nodes[name].input]
    _drop_unread(target, old, old_inputs)


def _drop_unread(model: onnx.ModelProto, nodes: list[onnx.NodeProto], names: set[str]) -> None:
    """Remove those of ``nodes`` (and then initializers among their and ``names``' inputs) that
    nothing reads any more."""
    candidates = {id(n): n for n in nodes}
    while True:
        read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if id(n) in candidates and not read & set(n.output)]
        if not dead:
            break
        for node in dead:
            names.update(node.input)
            candidates.pop(id(node))
            model.graph.node.remove(node)
    read = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name not in names or t.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def output_cosine(rows: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Mean over output rows (tokens) of the cosine to the reference rows, over all outputs."""
    values = []
    for name, expected in reference.items():
        got = rows[name].astype(np.float64)
        expected = expected.astype(np.float64)
        norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        values.append(np.sum(got * expected, axis=1) / np.maximum(norms, 1e-30))
    return float(np.mean(np.concatenate(values)))


# model -> output rows over the calibration data
Outputs = Callable[[onnx.ModelProto], dict[str, np.ndarray]]


@dataclass
class ChooseSmoothingMulsPass:
    """Drop smoothing ``Mul`` groups from the all-smoothed model where the output allows.

    Attributes:
        plain: the same model quantized without the groups' smoothing.
        groups: smoothed activation tensor -> its int8 MatMuls (names) and channel count.
        outputs: runs a model on the calibration data (output rows over real tokens).
        reference: the float model's output rows.
        budget: largest drop of the output cosine (to the float model) below the all-smoothed
            model's that dropping ``Mul``s may cost.
        decisions: tensor -> what was decided and the measured cosines (for the report).
    """

    plain: onnx.ModelProto
    groups: dict[str, tuple[list[str], int]]
    outputs: Outputs
    reference: dict[str, np.ndarray]
    budget: float
    decisions: dict[str, dict] = field(default_factory=dict)

    def _cosine(self, model: onnx.ModelProto) -> float:
        return output_cosine(self.outputs(model), self.reference)

    def _without(self, model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        for tensor in tensors:
            transplant(trial, self.plain, tensor, self.groups[tensor][0])
        return trial

    def call(self, model: onnx.ModelProto) -> list[str]:
        """Drop what the budget allows from ``model`` in place; returns the dropped tensors."""
        full = self._cosine(model)
        loss = {t: full - self._cosine(self._without(model, [t])) for t in sorted(self.groups)}
        order = sorted(loss, key=lambda t: (max(loss[t], 0.0) / self.groups[t][1], t))
        dropped: list[str] = []
        for tensor in order:
            cosine = self._cosine(self._without(model, [*dropped, tensor]))
            keep = full - cosine > self.budget
            self.decisions[tensor] = {
                "smoothing": "Mul kept" if keep else "dropped (no Mul)",
                "cosine_loss_alone": round(loss[tensor], 6),
                "cosine_loss_with_earlier_drops": round(full - cosine, 6),
            }
            if not keep:
                dropped.append(tensor)
        for tensor in dropped:
            transplant(model, self.plain, tensor, self.groups[tensor][0])
        logger.info(
            "smoothing Muls: %d of %d dropped (budget %g)", len(dropped), len(loss), self.budget
        )
        return dropped


@dataclass
class Mixing:
    """What :func:`mix_smoothing` dropped, the dropped layers' errors, the report."""

    dropped: list[str]
    errors: dict[str, float]
    report: dict


def mix_smoothing(chosen, quantize_plain: Callable, data: Dataset, budget: float) -> Mixing | None:
    """Run :class:`ChooseSmoothingMulsPass` on ``chosen.quantized`` (the all-smoothed static
    quantization) against ``quantize_plain()`` (the same without the unfoldable groups' smoothing)
    on the first ``MIX_SAMPLES`` calibration samples; None when no group has a ``Mul``."""
    smoother = chosen.smoother
    muls = {t: names for t, names in smoother.unfolded.items() if smoother.placed.get(t) == "Mul"}
    if not muls:
        return None
    plain = quantize_plain()
    probe = Dataset(data.slice(0, MIX_SAMPLES), sample_axes=dict(data.sample_axes))
    outputs = [o.name for o in chosen.model.graph.output]

    def run(model: onnx.ModelProto) -> dict:
        return capture_rows(model, outputs, probe, max_rows=1 << 30)

    groups = {t: (names, int(smoother.rows[t].shape[1])) for t, names in muls.items()}
    chooser = ChooseSmoothingMulsPass(plain.quantized, groups, run, run(chosen.model), budget)
    try:
        dropped = chooser.call(chosen.quantized)
    except ValueError as error:  # a graph the transplant does not follow: keep every Mul
        logger.warning("smoothing Muls not chosen, all kept: %s", error)
        return Mixing([], {}, {"budget": budget, "not_chosen": f"every Mul kept: {error}"})
    names = {n for t in dropped for n in muls[t]}
    errors = {n: e for n, e in plain.corrector.errors.items() if n in names}
    report = {"budget": budget, "samples": probe.samples, "kept": len(muls) - len(dropped)}
    report |= {"dropped": len(dropped), "groups": chooser.decisions}
    return Mixing(dropped, errors, report)


def smoothing_reasons(smoother, mixing: Mixing | None) -> dict[str, str]:
    """int8 MatMul -> how its input activation was smoothed, and why."""
    if smoother is None:
        return {}
    decisions = mixing.report.get("groups", {}) if mixing else {}
    reasons = {}
    for tensor, names in smoother.groups.items():
        alpha = smoother.chosen.get(tensor, 0.0)
        if tensor in decisions:
            loss = decisions[tensor]["cosine_loss_with_earlier_drops"]
            kept = tensor not in mixing.dropped
            why = "Mul kept" if kept else "not smoothed, no Mul"
            reason = f"SmoothQuant {alpha}: {why} (without it output cosine -{loss:.6f})"
        elif smoother.placed.get(tensor) == "Mul":
            reason = f"SmoothQuant {alpha}: Mul kept (no choice made: every Mul kept)"
        elif tensor in smoother.placed:
            reason = f"SmoothQuant {alpha}, scale folded into the {smoother.placed[tensor]}"
        else:
            reason = "not smoothed: no strength lowered the simulated int8 error"
        reasons |= dict.fromkeys(names, reason)
    return reasons

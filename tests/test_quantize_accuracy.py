"""Accuracy control: layers revert to float in order of measured error, within the evaluation
budget; a revert that does not help is undone; the report names every layer's precision."""

from __future__ import annotations

from pathlib import Path

import pytest
from quant_models import tiny_transformer, token_data

import onnxprune
from onnxprune.quant.accuracy import gate_score, revert_greedily
from onnxprune.quantize import QuantizeOptions
from onnxprune.verify import Gates, VerifyOptions

ERRORS = {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.2}


def _fake(helps: set[str], needed: set[str]):
    calls: list[tuple[str, ...]] = []
    state: dict[str, tuple[str, ...]] = {"float": ()}

    def quantize(excluded: tuple[str, ...]) -> dict:
        calls.append(excluded)
        state["float"] = excluded
        return {"excluded_nodes": list(excluded)}

    def evaluate() -> tuple[bool, dict, float]:
        score = float(len(helps & set(state["float"])))
        return needed <= set(state["float"]), {"score": score}, score

    return quantize, evaluate, calls


def test_reverts_in_order_of_measured_error_until_gates_hold() -> None:
    quantize, evaluate, calls = _fake(helps={"b", "c"}, needed={"b", "c"})
    section, report = revert_greedily(quantize, evaluate, ERRORS, max_evaluations=8)
    assert calls == [("b",), ("b", "c")]
    assert report["satisfied"] and report["float_layers"] == ["b", "c"]
    assert [r["node"] for r in report["ranking"]] == ["b", "c", "d", "a"]
    assert section["excluded_nodes"] == ["b", "c"]


def test_a_revert_that_does_not_help_is_undone() -> None:
    quantize, evaluate, _ = _fake(helps={"c"}, needed={"c", "x"})
    section, report = revert_greedily(quantize, evaluate, ERRORS, max_evaluations=8)
    assert [a["kept"] for a in report["attempts"]] == [False, True, False, False]
    assert not report["satisfied"] and report["float_layers"] == ["c"]
    assert section["excluded_nodes"] == ["c"]  # the model on disk is the best one found


def test_budget_bounds_evaluations_and_groups_layers() -> None:
    quantize, evaluate, _ = _fake(helps=set(ERRORS), needed={"zzz"})
    _, report = revert_greedily(quantize, evaluate, ERRORS, max_evaluations=2)
    assert report["evaluations"] == 2
    assert [a["reverted"] for a in report["attempts"]] == [["b", "c"], ["d", "a"]]


@pytest.mark.parametrize(
    ("results", "score"),
    [
        ([{"passed": True, "value": 0.5, "limit": 0.9}], 0.0),
        ([{"passed": False, "value": 0.95, "limit": 0.99}], -0.04),
        ([{"passed": False, "value": None, "limit": 0.99}], float("-inf")),
    ],
)
def test_gate_score(results: list[dict], score: float) -> None:
    assert gate_score(results) == pytest.approx(score)


def test_auto_exclude_static_reports_every_layer(tmp_path: Path) -> None:
    model = tiny_transformer(tmp_path / "tiny.onnx")
    tokens = token_data(tmp_path / "tokens.npz")
    options = QuantizeOptions(mode="static", calibration=str(tokens), max_evaluations=2)
    verify = VerifyOptions(data=str(tokens), latency_runs=0)
    report = onnxprune.quantize_file(
        model, tmp_path / "q.onnx", options, verify, Gates(min_cosine=0.9999999), auto_exclude=True
    )
    section = report["quantization"]
    auto = section["auto_exclude"]
    assert auto["needed"] and 1 <= auto["evaluations"] <= 2
    ranked = [r["error"] for r in auto["ranking"]]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) == 6
    layers = {d["node"]: d for d in section["layers"]}
    for name in auto["float_layers"]:
        assert layers[name]["precision"] == "float"
        assert layers[name]["why"] == "kept float by accuracy control"
    assert all("why" in d and d["precision"] in ("int8", "float") for d in section["layers"])

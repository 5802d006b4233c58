"""compress --auto: honest split, allocation, verified search, verdicts, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from cli.main import main
from onnxprune.data import Dataset
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.search import NO_CONFIGURATION, AutoOptions, auto_compress
from onnxprune.search.allocate import allocate_levels, removed_fraction
from onnxprune.search.bisect import revert_most_sensitive
from onnxprune.search.candidates import tightened
from onnxprune.search.log import SearchLog
from onnxprune.search.sensitivity import LayerCurve
from onnxprune.search.split import split_indices
from onnxprune.verify import Gates, VerifyOptions

ADULT = FIXTURES / "adult_mlp.onnx"
ADULT_DATA = FIXTURES / "adult_mlp-eval.npz"
ADULT_CALIBRATION = FIXTURES / "adult_mlp-calibration.npz"
QUICK = ("--latency-runs", "0", "--bootstrap", "0", "--threads", "1")


def run_cli(*args: object):
    """``onnxprune ARGS`` in this process (a subprocess would spend seconds on imports)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    result.returncode = result.exit_code
    return result


def _dataset(labels: np.ndarray, groups: dict[str, np.ndarray]) -> Dataset:
    inputs = {"x": np.arange(len(labels), dtype=np.float32).reshape(-1, 1)}
    return Dataset(inputs=inputs, labels=labels, groups=groups)


def test_split_is_seeded_disjoint_and_stratified():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 301)
    sex = rng.choice(np.array(["F", "M"]), 301)
    race = rng.choice(np.array(["a", "b", "c"]), 301, p=[0.8, 0.15, 0.05])
    data = _dataset(labels, {"sex": sex, "race": race})
    selection, confirmation = split_indices(data, seed=3)
    assert sorted([*selection, *confirmation]) == list(range(301))
    for key in {(y, s, r) for y, s, r in zip(labels, sex, race, strict=True)}:
        stratum = (labels == key[0]) & (sex == key[1]) & (race == key[2])
        assert abs(stratum[selection].sum() - stratum[confirmation].sum()) <= 1
    again = split_indices(data, seed=3)
    assert np.array_equal(again[0], selection)
    assert not np.array_equal(split_indices(data, seed=4)[0], selection)


def _curves() -> list[LayerCurve]:
    return [
        LayerCurve("robust", 600, 0, (0.0, 0.01, 0.02, 0.05)),
        LayerCurve("fragile", 300, 0, (0.0, 0.2, 0.5, 0.9)),
        LayerCurve("small", 100, 0, (0.0, 0.001, 0.002, 0.003)),
    ]


def test_allocation_is_the_cheapest_that_reaches_the_level():
    levels = (0.0, 0.3, 0.6, 0.9)
    curves = _curves()
    allocation = allocate_levels(curves, levels, 0.6, "size")
    assert removed_fraction(curves, "size", allocation) >= 0.6 - 1e-9
    cost = sum(c.errors[levels.index(allocation[c.name])] for c in curves)
    best = min(  # brute force over all 64 choices
        sum(c.errors[k] for c, k in zip(curves, ks, strict=True))
        for ks in np.ndindex(4, 4, 4)
        if sum(levels[k] * c.size for c, k in zip(curves, ks, strict=True)) >= 600 - 1e-6
    )
    assert cost == pytest.approx(best)
    assert allocation["fragile"] < allocation["robust"]


def test_revert_lowers_the_layer_whose_step_costs_most():
    levels = (0.0, 0.3, 0.6, 0.9)
    allocation = {"robust": 0.9, "fragile": 0.3, "small": 0.9}
    assert revert_most_sensitive(_curves(), levels, allocation)["fragile"] == 0.0
    assert revert_most_sensitive(_curves(), levels, dict.fromkeys(allocation, 0.0)) is None


def test_layer_targets_set_each_layers_sparsity():
    model = ir.load(ADULT)
    targets = (("net.0.weight", 0.9), ("net.2.weight", 0.25), ("net.4.weight", 0.0))
    result = prune_model(model, PruneOptions(target_sparsity=0.5, layer_targets=targets))
    achieved = {layer.name: layer.zeros_after / layer.size for layer in result.layers}
    assert achieved == pytest.approx(dict(targets), abs=1e-3)


def test_search_gates_are_tightened_by_the_margin():
    gates = tightened(Gates(max_accuracy_drop=0.01, min_cosine=0.95), 0.2)
    assert gates.max_accuracy_drop == pytest.approx(0.008)
    assert gates.min_cosine == pytest.approx(0.96)
    assert gates.max_group_drop is None


def _auto(tmp_path: Path, name: str, *extra: object):
    out = tmp_path / f"{name}.onnx"
    result = run_cli(
        "compress",
        ADULT,
        "--auto",
        "--data",
        ADULT_DATA,
        "--calibration",
        ADULT_CALIBRATION,
        "--search-methods",
        "magnitude",
        "--search-precisions",
        "float",
        "--max-accuracy-drop",
        "0.01",
        "-o",
        out,
        *QUICK,
        *extra,
    )
    report = tmp_path / f"{name}.report.json"
    return result, out, json.loads(report.read_text()) if report.exists() else None


def test_auto_finds_a_feasible_configuration_and_confirms_it(tmp_path):
    result, out, report = _auto(tmp_path, "a", "--json", "--search-z", "1")
    assert result.returncode == 0, result.stderr
    search = report["search"]
    # magnitude at 50% of every layer holds 1 pt on this data, also by its bound at z 1 (at
    # z 1.5 the search stops lower, at 35%); the search must do at least that
    assert search["chosen"]["sparsity"] >= 0.5
    assert search["selection"]["gates"]["max_accuracy_drop"]["passed"]
    assert search["confirmation"]["samples"] + search["split"]["selection"] == 4000
    assert report["verification"]["data"]["samples"] == search["confirmation"]["samples"]
    assert set(search["gap"]) >= {"accuracy_drop", "cosine_mean"}
    assert search["candidates_evaluated"] >= 3
    assert out.exists() and Path(f"{out}.search.jsonl.best.onnx").exists()


def test_auto_reports_an_impossible_budget(tmp_path):
    result, out, report = _auto(tmp_path, "b", "--max-group-drop", "-0.5")
    assert result.returncode == 1
    assert NO_CONFIGURATION in result.stdout
    assert report["passed"] is False and report["search"]["verdict"] == NO_CONFIGURATION
    assert not out.exists()


def test_auto_is_deterministic_and_resumes_from_its_log(tmp_path):
    options = dict(
        prune_options=PruneOptions(calibration=str(ADULT_CALIBRATION)),
        verify_options=VerifyOptions(data=ADULT_DATA, latency_runs=0, threads=1),
        gates=Gates(max_accuracy_drop=0.01),
    )
    log = tmp_path / "log.jsonl"
    auto = AutoOptions(log=str(log), methods=("magnitude",), seed=1)
    first = auto_compress(ADULT, tmp_path / "one.onnx", options=auto, **options)
    second = auto_compress(ADULT, tmp_path / "two.onnx", options=auto, **options)
    assert (tmp_path / "one.onnx").read_bytes() == (tmp_path / "two.onnx").read_bytes()
    assert first["search"]["chosen"] == second["search"]["chosen"]
    evaluated = first["search"]["candidates_evaluated"]
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # killed mid-write
    resumed = auto_compress(
        ADULT,
        tmp_path / "three.onnx",
        options=AutoOptions(**{**auto.__dict__, "resume": True}),
        **options,
    )
    assert resumed["search"]["candidates_from_log"] == 2
    assert resumed["search"]["candidates_evaluated"] == evaluated - 2
    assert (tmp_path / "three.onnx").read_bytes() == (tmp_path / "one.onnx").read_bytes()


def test_resume_refuses_another_searchs_log(tmp_path):
    log = tmp_path / "log.jsonl"
    SearchLog(log, {"seed": 0}, resume=False)
    with pytest.raises(Exception, match="another model, data or options"):
        SearchLog(log, {"seed": 1}, resume=True)


def test_gradual_schedule_stops_at_the_last_step_that_holds(tmp_path):
    report = auto_compress(
        ADULT,
        tmp_path / "g.onnx",
        PruneOptions(),
        AutoOptions(log=str(tmp_path / "g.jsonl"), schedule="gradual", z=1.0),
        VerifyOptions(data=ADULT_DATA, latency_runs=0, threads=1),
        Gates(max_accuracy_drop=0.01),
    )
    trace = report["search"]["trace"]
    levels = [step["level"] for step in trace]
    assert levels == sorted(levels) and all(s["passed"] for s in trace[:-1])
    assert not trace[-1]["passed"] and report["passed"]
    assert report["search"]["chosen"]["sparsity"] >= 0.45


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--auto", "--target-sparsity", "0.5"), "--target-sparsity does not go with --auto"),
        (("--objective", "macs"), "--objective goes with --auto"),
        (("--auto", "--max-evals", "0"), "--max-evals"),
        (("--search-timed", "1"), "--search-timed goes with --auto"),
        (("--auto", "--search-timed", "11"), "--search-timed must be in [0, 10]"),
    ],
)
def test_auto_refusals(tmp_path, args, message):
    result = run_cli("compress", ADULT, "--data", ADULT_DATA, "-o", tmp_path / "x.onnx", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_latency_objective_searches_structured_pruning_and_int8(tmp_path):
    report = auto_compress(
        ADULT,
        tmp_path / "l.onnx",
        PruneOptions(calibration=str(ADULT_CALIBRATION)),
        AutoOptions(log=str(tmp_path / "l.jsonl"), objective="latency"),
        VerifyOptions(data=ADULT_DATA, latency_runs=5, threads=1),
        Gates(max_accuracy_drop=0.01),
    )
    search = report["search"]
    assert search["methods"] == [
        "structured:ffn+int8",
        "structured:heads+int8",
        "structured:ffn",
        "structured:heads",
    ]
    assert {"step": "precision alone", "method": "structured:ffn+int8"}.items() <= next(
        step for step in search["trace"] if step["step"] == "precision alone"
    ).items()
    assert report["passed"] and report["pruning"]["mode"] == "structured"
    assert report["pruning"]["macs"]["after"] < report["pruning"]["macs"]["before"]
    assert ("quantization" in report) == search["chosen"]["method"].endswith("+int8")
    assert "latency" in report["verification"]  # measured once, on the chosen model


def test_unknown_search_method_is_refused(tmp_path):
    result = run_cli(
        "compress",
        ADULT,
        "--auto",
        "--data",
        ADULT_DATA,
        "--search-methods",
        "structured:fins",
        "-o",
        tmp_path / "x.onnx",
    )
    assert result.exit_code == 2
    assert "unknown search method 'structured:fins'" in result.output


def test_the_fairest_near_best_candidate_is_chosen():
    from types import SimpleNamespace

    from onnxprune.search.bisect import Outcome
    from onnxprune.search.choose import choose_fairest

    def outcome(key, passed, objective, worst):
        record = {"selection": {"worst_group_drop": worst, "accuracy_drop": 0.0}}
        return Outcome(key, passed, objective, {}, record)

    seen = [
        outcome("best", True, 100.0, 0.02),
        outcome("fair", True, 101.5, 0.005),
        outcome("far", True, 110.0, 0.0),
        outcome("failed", False, 100.5, 0.0),
    ]
    evaluator = SimpleNamespace(best=seen[0], seen={o.key: o for o in seen})
    assert choose_fairest(evaluator, 0.02).key == "fair"
    assert choose_fairest(evaluator, 0.0).key == "best"


def test_revert_never_offers_the_dense_model():
    levels = (0.0, 0.3, 0.6, 0.9)
    last = {"robust": 0.0, "fragile": 0.3, "small": 0.0}
    assert revert_most_sensitive(_curves(), levels, last) is None


def test_bisection_looks_higher_when_a_level_prunes_nothing():
    """A structured level that rounds to no unit is a no-op (passes), not the end of the method:
    the search goes on above it and keeps what it tried; at the top level it means 'skip'."""
    from onnxprune.errors import NothingToPrune
    from onnxprune.search.bisect import Outcome, verified_bisection

    def evaluate(allocation):
        level = allocation["x"]
        if level < 0.12:
            raise NothingToPrune(f"level {level} rounds to no unit", [], {})
        return Outcome(f"l{level}", level <= 0.15, -level, allocation, {})

    def search(high):
        return verified_bisection(evaluate, lambda level: {"x": level}, lambda a: None, high, 5, 0)

    best, trace = search(0.8)
    assert [(step["level"], step.get("passed")) for step in trace] == [
        (0.8, False), (0.4, False), (0.2, False), (0.1, None), (0.15, True), (0.175, False),
    ]  # fmt: skip
    assert "rounds to no unit" in trace[3]["nothing_to_prune"] and best.key == "l0.15"
    with pytest.raises(NothingToPrune):  # the top level itself prunes nothing: not applicable
        search(0.1)

"""Structured levels that keep the same units are evaluated once."""

from __future__ import annotations

from conftest import FIXTURES

from onnxprune.pruning import PruneOptions
from onnxprune.search import AutoOptions, auto_compress
from onnxprune.search.units import UnitPlans
from onnxprune.verify import Gates, VerifyOptions

ADULT = FIXTURES / "adult_mlp.onnx"


def test_plans_follow_the_pipeline_rounding():
    plans = UnitPlans(ADULT, None, None)
    # 64 and 32 units, kept counts rounded up to multiples of 8
    assert plans.plan("ffn", 0.6562, True) == (("net.0.weight", 24), ("net.2.weight", 16))
    assert plans.plan("ffn", 0.7031, True) == plans.plan("ffn", 0.6562, True)
    assert plans.plan("ffn", 0.5, True) == (("net.0.weight", 32), ("net.2.weight", 16))
    heads = UnitPlans(FIXTURES / "digits_transformer.onnx", None, None)
    assert heads.plan("heads", 0.2, True) == heads.plan("heads", 0.3, True)
    assert heads.plan("heads", 0.2, True) != heads.plan("heads", 0.5, True)


def test_a_level_with_the_units_of_an_earlier_one_is_not_evaluated_again(tmp_path):
    search = auto_compress(
        ADULT,
        tmp_path / "l.onnx",
        PruneOptions(calibration=str(FIXTURES / "adult_mlp-calibration.npz")),
        AutoOptions(
            log=str(tmp_path / "l.jsonl"),
            objective="latency",
            methods=("structured:ffn",),
            precisions=("float",),
            timed=0,
            z=2**-0.5,  # x sqrt 2 for equal halves: the z 1 this path was recorded with
        ),
        VerifyOptions(data=FIXTURES / "adult_mlp-eval.npz", latency_runs=0, threads=1),
        Gates(max_accuracy_drop=0.002),
    )["search"]
    levels = [step["level"] for step in search["trace"]]
    assert levels == [0.75, 0.375, 0.5625, 0.6562, 0.7031, 0.7266, 0.7383]
    # 0.7031 and 0.7266 keep 24 and 16 units like 0.6562: one model, one evaluation;
    # 0.7383 keeps 24 and 8
    assert search["candidates_evaluated"] == 5
    keys = [step["key"] for step in search["trace"]]
    assert keys[4] == keys[5] == keys[3] != keys[6]
    assert (tmp_path / "l.jsonl").read_text().count("\n") == 1 + 5  # header and 5 candidates

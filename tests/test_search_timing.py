"""--objective latency: the shortlist is timed and the fastest chosen, beyond the noise only."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

from onnxprune.pruning import PruneOptions
from onnxprune.search import AutoOptions, auto_compress
from onnxprune.search import choose as choose_module
from onnxprune.search.candidates import candidate_key
from onnxprune.search.timing import block_ratios, pick_fastest, time_models
from onnxprune.verify import Gates, VerifyOptions

ADULT = FIXTURES / "adult_mlp.onnx"
ADULT_DATA = FIXTURES / "adult_mlp-eval.npz"
ADULT_CALIBRATION = FIXTURES / "adult_mlp-calibration.npz"


def _times(**p50: float) -> dict[str, dict[str, list[float]]]:
    """160 rounds per model around the given median, with the same seeded jitter for each."""
    jitter = np.random.default_rng(0).uniform(-0.05, 0.05, 160)
    return {
        name: {"cpu_ms": list(value * (1 + jitter)), "wall_ms": list(value * (1 + jitter))}
        for name, value in p50.items()
    }


def test_block_ratios_by_hand():
    reference = [2.0] * 4 + [4.0] * 4
    other = [1.0] * 4 + [4.0] * 4
    ratio = block_ratios(reference, other, blocks=4)
    # per-block medians: 2/1, 2/1, 4/4, 4/4; overall medians 3 / 2.5
    assert ratio["ratio"] == pytest.approx(3.0 / 2.5)
    assert ratio["p25"] == pytest.approx(1.0)
    assert ratio["p75"] == pytest.approx(2.0)


def test_a_clearly_faster_candidate_replaces_the_fewest_macs():
    chosen, comparisons = pick_fastest(["few_macs", "int8"], _times(few_macs=10.0, int8=8.0))
    assert chosen == "int8"
    assert comparisons[0]["replaced"] and comparisons[0]["p25"] > 1.2


@pytest.mark.parametrize("challenger", [10.0, 9.95, 11.0])
def test_within_the_noise_or_slower_the_fewest_macs_stays(challenger):
    rng = np.random.default_rng(1)
    times = _times(few_macs=10.0, other=challenger)
    times["other"]["cpu_ms"] = list(np.asarray(times["other"]["cpu_ms"])[rng.permutation(160)])
    chosen, comparisons = pick_fastest(["few_macs", "other"], times)
    assert chosen == "few_macs"
    assert not comparisons[0]["replaced"]


def test_time_models_interleaves_both_clocks():
    models = {"a": ADULT, "b": ADULT}
    feed = {"input": np.load(ADULT_DATA)["input"][:1]}
    times = time_models(models, feed, threads=1, rounds=12)
    for name in models:
        assert len(times[name]["wall_ms"]) == len(times[name]["cpu_ms"]) == 12
        assert min(times[name]["wall_ms"]) > 0 and min(times[name]["cpu_ms"]) >= 0


def test_nothing_pruned_is_the_precision_alone_whatever_the_method():
    zero = {"*structured*": 0.0}
    assert candidate_key("structured:ffn+int8", zero) == candidate_key(
        "structured:heads+int8", zero
    )
    assert candidate_key("structured:ffn+int8", zero) != candidate_key("structured:ffn", zero)
    half = {"*structured*": 0.5}
    assert candidate_key("structured:ffn+int8", half) != candidate_key(
        "structured:heads+int8", half
    )


def _search(tmp_path, timed: int) -> dict:
    return auto_compress(
        ADULT,
        tmp_path / "l.onnx",
        PruneOptions(calibration=str(ADULT_CALIBRATION)),
        AutoOptions(log=str(tmp_path / "l.jsonl"), objective="latency", timed=timed),
        VerifyOptions(data=ADULT_DATA, latency_runs=0, threads=1),
        Gates(max_accuracy_drop=0.01),
    )["search"]


def test_the_measured_fastest_is_chosen_not_the_fewest_macs(tmp_path, monkeypatch):
    def int8_alone_fastest(models, feed, threads):
        # the shortlist in proxy order; the last one (int8 alone, most MACs) is fastest
        return _times(**{key: 10.0 - index for index, key in enumerate(models)})

    monkeypatch.setattr(choose_module, "time_models", int8_alone_fastest)
    search = _search(tmp_path, timed=1)
    timing = search["timing"]
    assert timing["reference"]["sparsity"] == 0.0  # int8 alone
    # the one with the fewest MACs (FFN 75% + int8) and the precision alone, nothing else
    assert [(c["method"], c["sparsity"]) for c in timing["candidates"]] == [
        ("structured:ffn+int8", 0.75),
        ("structured:ffn+int8", 0.0),
    ]
    assert search["chosen"]["sparsity"] == 0.0
    assert search["chosen"]["method"].endswith("+int8")
    assert timing["chosen"] == {k: search["chosen"][k] for k in timing["chosen"]}
    assert [s["method"] for s in search["trace"] if s["step"] == "skipped"] == [
        "structured:heads+int8",
        "structured:heads",
    ]


def test_timed_zero_keeps_the_mac_proxy(tmp_path):
    search = _search(tmp_path, timed=0)
    assert "timing" not in search
    assert search["chosen"]["method"] == "structured:ffn+int8"
    assert search["chosen"]["sparsity"] > 0

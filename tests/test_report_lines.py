"""Terminal report lines that summarise a stage table and --auto-exclude honestly."""

from __future__ import annotations

from onnxprune.report import _extra_lines


def _quantization(satisfied: bool, ranked: int, tried: list[int]) -> dict:
    auto = {
        "needed": True,
        "satisfied": satisfied,
        "evaluations": len(tried),
        "ranking": [{"node": f"n{i}", "error": 1.0 / (i + 1)} for i in range(ranked)],
        "attempts": [{"float_layers": n} for n in tried],
    }
    return {
        "quantization": {
            "mode": "static",
            "per_channel": True,
            "quantizable_nodes": ranked,
            "excluded_nodes": [],
            "auto_exclude": auto,
        }
    }


def _verdict(report: dict) -> str:
    return next(line for line in _extra_lines(report) if "auto-exclude" in line)


def test_auto_exclude_says_all_float_only_when_every_layer_was_tried() -> None:
    assert _verdict(_quantization(True, 6, [2])).endswith("budget holds")
    assert "even with all 6 ranked layers in float" in _verdict(_quantization(False, 6, [2, 6]))
    stopped = _verdict(_quantization(False, 6, [2, 4]))
    assert "within 2 evaluation(s), 4 of 6 ranked layers" in stopped
    assert "raise --max-evaluations" in stopped and "even" not in stopped


def test_stage_table_shows_each_stage_batch_size() -> None:
    stage = {
        "stage": "quantize",
        "bytes": 4096,
        "compressed_bytes": 2048,
        "accuracy": 0.9,
        "top1_agreement": 0.95,
        "cosine_mean": 0.99,
        "speedup": 1.5,
        "batch_size": 1,
    }
    header, row = _extra_lines({"stages": [stage]})
    assert header.split()[-1] == "batch" and row.split()[-1] == "1"

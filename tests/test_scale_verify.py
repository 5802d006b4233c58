"""Verification of big models: one onnxruntime session at a time, sizes estimated by sampling."""

from __future__ import annotations

import gc
import weakref
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODELS

import onnxprune.sizes as sizes
import onnxprune.verify as verify
from onnxprune import PruneOptions, VerifyOptions, prune_file
from onnxprune.verify import verify_models


def _live_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch ``verify.create_session`` to record how many sessions are alive at each creation."""
    alive: weakref.WeakSet = weakref.WeakSet()
    counts: list[int] = []
    original = verify.create_session

    def counting(path, threads=0):
        gc.collect()
        counts.append(len(alive))
        session = original(path, threads)
        alive.add(session)
        return session

    monkeypatch.setattr(verify, "create_session", counting)
    return counts


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "digits_cnn.onnx"
    prune_file(FIXTURE_MODELS["digits_cnn"][0], out, PruneOptions(0.7))
    return out


def test_big_models_are_verified_one_session_at_a_time(
    pruned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    options = VerifyOptions(data=data, latency_runs=3, latency_warmup=1)
    counts = _live_sessions(monkeypatch)
    together = verify_models(model, pruned, options)
    assert counts == [0, 1] and "latency" in together and "latency_skipped" not in together
    counts.clear()
    monkeypatch.setattr(verify, "TOGETHER_BYTES", 0)
    in_turn = verify_models(model, pruned, options)
    assert counts == [0, 0]
    assert "latency" not in in_turn and "one after the other" in in_turn["latency_skipped"]
    assert in_turn["quality"] == together["quality"]
    assert in_turn["max_abs_diff_per_output"] == together["max_abs_diff_per_output"]
    assert in_turn["batch_size"] == {
        k: v for k, v in together["batch_size"].items() if k != "latency"
    }


def test_big_files_compressed_size_is_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    data = np.where(rng.random(12 << 18) < 0.5, 0.0, rng.standard_normal(12 << 18))
    path = tmp_path / "weights.data"
    path.write_bytes(data.astype(np.float32).tobytes())  # 12 MiB, half zeros
    exact = len(zlib.compress(path.read_bytes(), 6))
    assert "compressed_bytes_estimated" not in sizes.model_size([path])
    monkeypatch.setattr(sizes, "SAMPLED_ABOVE", 1 << 20)
    monkeypatch.setattr(sizes, "SAMPLE_CHUNKS", 4)
    sizes._deflated_size_of.cache_clear()
    estimated = sizes.model_size([path])
    assert estimated["compressed_bytes_estimated"] == "from 4 chunks of 1 MiB per file"
    assert estimated["compressed_bytes"] == pytest.approx(exact, rel=0.02)
    assert estimated["compressed_bytes"] != exact

"""Verification of big models: one onnxruntime session at a time, sizes estimated by sampling."""

from __future__ import annotations

import gc
import json
import sys
import weakref
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODELS, run_cli

import onnxprune.sizes as sizes
import onnxprune.staged as staged
import onnxprune.verify as verify
import onnxprune.verify_in_turn as verify_in_turn
from onnxprune import PruneOptions, VerifyOptions, prune_file
from onnxprune.data import input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.metrics import agreement_metrics
from onnxprune.model_io import load_model, model_files
from onnxprune.runtime import create_session, run_dataset
from onnxprune.verify import verify_models

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402  (bench/scale.py builds the synthetic decoder stacks)


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


def test_big_models_are_verified_one_slice_at_a_time(
    pruned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    options = VerifyOptions(data=data, latency_runs=3, latency_warmup=1)
    counts = _live_sessions(monkeypatch)
    together = verify_models(model, pruned, options)
    assert counts == [0, 1] and "latency" in together and "latency_skipped" not in together
    counts.clear()
    slices = _slice_sessions(monkeypatch)
    monkeypatch.setattr(verify, "TOGETHER_BYTES", 0)
    monkeypatch.setattr(staged, "SLICE_BYTES", 1)  # one node with weights per slice
    in_turn = verify_models(model, pruned, options)
    assert counts == [] and len(slices) > 4  # no whole-model session: slices only
    assert "latency" not in in_turn and "one after the other" in in_turn["latency_skipped"]
    quality, expected = in_turn["quality"], together["quality"]
    assert quality["top1_agreement"] == expected["top1_agreement"]
    assert quality["accuracy_after"] == expected["accuracy_after"]
    assert quality["cosine_mean"] == pytest.approx(expected["cosine_mean"], abs=1e-6)
    assert quality["max_abs_diff"] == pytest.approx(expected["max_abs_diff"], rel=1e-3)
    assert in_turn["batch_size"]["quality"] == together["batch_size"]["quality"]
    task = verify.baseline_task(model, options, load_dataset(data, input_specs(load_model(model))))
    assert task.classification


def _slice_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    starts: list[int] = []
    original = staged.slice_session

    def counting(model, piece, *args, **kwargs):
        starts.append(piece.start)
        return original(model, piece, *args, **kwargs)

    monkeypatch.setattr(staged, "slice_session", counting)
    return starts


def test_outputs_in_slices_equal_one_session_on_the_stack(tmp_path: Path) -> None:
    path = scale.build(0.3, tmp_path, d=64, samples=12)
    model = load_model(path)
    data = load_dataset(path.with_suffix(".npz"), input_specs(model))
    expected = run_dataset(create_session(path), data, 5)
    outputs = staged.outputs_in_slices(model, data, 5, ["y"], tmp_path, 1)
    assert outputs is not None and list(outputs) == ["y"]
    assert np.array_equal(outputs["y"], expected["y"])


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


def _slice_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Record (samples, streamed) for every sliced run: streamed runs hand each batch on."""
    runs: list[tuple[int, bool]] = []
    original = staged.outputs_in_slices

    def recording(model, dataset, *args, **kwargs):
        streamed = kwargs.get("on_batch", args[4] if len(args) > 4 else None) is not None
        runs.append((dataset.samples, streamed))
        return original(model, dataset, *args, **kwargs)

    monkeypatch.setattr(verify_in_turn, "outputs_in_slices", recording)
    monkeypatch.setattr(verify, "TOGETHER_BYTES", 0)
    return runs


def test_a_big_baseline_runs_each_sample_once(
    pruned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    runs = _slice_runs(monkeypatch)
    options = VerifyOptions(data=data, batch_size=16, latency_runs=0)
    _, dataset = verify.prepare_verification(model, options, None)
    assert runs == [(16, False)]  # the task is found on the first batch only
    first = verify_models(model, pruned, options, dataset)
    second = verify_models(model, pruned, options, dataset)
    samples = dataset.samples
    # the baseline runs the samples after its first batch, once; the candidate twice, streamed
    assert runs == [(16, False), (samples - 16, False), (samples, True), (samples, True)]
    assert first == second
    default = VerifyOptions(data=data, latency_runs=0)
    assert verify.baseline_task(model, default, dataset).classification
    assert runs[-1] == (1, False)  # without a batch size: one sample


def test_streamed_in_turn_verification_equals_the_held_outputs(
    pruned: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    monkeypatch.setattr(staged, "SLICE_BYTES", 1)
    options = VerifyOptions(data=data, batch_size=16, latency_runs=0)
    dataset = load_dataset(data, input_specs(load_model(model)))
    runs = _slice_runs(monkeypatch)
    streamed = verify_models(model, pruned, options, dataset)
    meta = verify_in_turn.described(pruned)
    base = verify_in_turn.outputs_of(model, meta, dataset, 16)
    cand = staged.outputs_in_slices(load_model(pruned), dataset, 16, ["logits"], tmp_path, 0)
    samples = dataset.samples
    assert runs == [(samples, False), (samples, True)]  # the baseline's outputs were held
    quality = streamed["quality"]
    expected = agreement_metrics(base["logits"], cand["logits"])
    assert {k: quality[k] for k in expected} == expected
    diff = float(np.max(np.abs(base["logits"].astype(np.float64) - cand["logits"])))
    assert streamed["max_abs_diff_per_output"]["logits"] == diff


def test_a_big_model_is_not_run_before_the_work_when_nothing_needs_its_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = FIXTURE_MODELS["digits_cnn"][0]
    runs = _slice_runs(monkeypatch)
    synthetic = VerifyOptions(latency_runs=0)  # no labels, no gates
    _, dataset = verify.prepare_verification(model, synthetic, None)
    assert dataset.synthetic and runs == []
    with pytest.raises(InputError, match="no model output named 'nope'"):
        verify.prepare_verification(model, VerifyOptions(output="nope"), None)
    verify.prepare_verification(model, synthetic, verify.Gates(min_cosine=0.9))
    assert runs == [(1, False)]  # a gate needs the task: the first sample is run


def test_a_big_model_without_data_is_checked_on_fewer_synthetic_samples_and_says_so(
    pruned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = FIXTURE_MODELS["digits_cnn"][0]
    small = verify.prepare_dataset(model, VerifyOptions())
    assert small.samples == verify.SYNTHETIC_SAMPLES and "by default" not in small.source
    monkeypatch.setattr(verify, "TOGETHER_BYTES", 0)
    big = verify.prepare_dataset(model, VerifyOptions())
    assert big.samples == verify.BIG_SYNTHETIC_SAMPLES < verify.SYNTHETIC_SAMPLES
    assert "4 by default for a model over 0 MB (more with --samples" in big.source
    given = verify.prepare_dataset(model, VerifyOptions(synthetic_samples=7))
    assert given.samples == 7 and "by default" not in given.source
    report = verify_models(model, pruned, VerifyOptions(latency_runs=0), big)
    assert report["data"]["samples"] == 4 and report["data"]["source"] == big.source


def test_samples_option_reaches_the_report(pruned: Path, tmp_path: Path) -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    report = tmp_path / "report.json"
    args = ["verify", model, pruned, "--samples", "3", "--latency-runs", "0", "--report", report]
    assert run_cli(*args).returncode == 0
    synthetic = json.loads(report.read_text())["verification"]["data"]
    assert synthetic["samples"] == 3 and synthetic["synthetic"]
    assert run_cli(*args, "--data", data).returncode == 0
    first = json.loads(report.read_text())["verification"]["data"]
    assert first["samples"] == 3 and not first["synthetic"]
    assert first["source"].endswith("(the first 3 of 540 samples: --samples)")


def test_the_first_samples_of_the_data_keep_their_labels() -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    whole = verify.prepare_dataset(model, VerifyOptions(data=data))
    first = verify.prepare_dataset(model, VerifyOptions(data=data, data_samples=10))
    assert first.samples == 10 and np.array_equal(first.labels, whole.labels[:10])
    assert np.array_equal(first.inputs["input"], whole.inputs["input"][:10])
    everything = VerifyOptions(data=data, data_samples=10**6)
    assert verify.prepare_dataset(model, everything).samples == whole.samples == 540


def test_files_of_reads_the_graph_alone_and_agrees_with_model_files(tmp_path: Path) -> None:
    path = scale.build(0.3, tmp_path, d=64, samples=2)
    assert verify_in_turn.files_of(path) == model_files(path)
    assert len(model_files(path)) == 2  # the graph and its data file
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        verify_in_turn.files_of(damaged)
    (tmp_path / "stack0.3.onnx.data").unlink()
    with pytest.raises(InputError, match="external data"):
        verify_in_turn.files_bytes(path)  # the graph file is unchanged: still checked

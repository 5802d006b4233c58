"""Unstructured pruning on the real exported fixtures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import FIXTURE_MODELS

from onnxprune import InputError, PruneOptions, prune
from onnxprune.model_io import load_model
from onnxprune.pruning import parse_pattern, prune_model
from onnxprune.weights import find_weights


def _weights(model) -> dict[str, np.ndarray]:
    return {n: v.const_value.numpy().copy() for n, v in model.graph.initializers.items()}


@pytest.mark.parametrize("name", sorted(FIXTURE_MODELS))
@pytest.mark.parametrize("scope", ["uniform", "global"])
@pytest.mark.parametrize("target", [0.5, 0.7, 0.9])
def test_sparsity_hits_target(name: str, scope: str, target: float) -> None:
    model = load_model(FIXTURE_MODELS[name][0])
    before = _weights(model)
    result = prune_model(model, PruneOptions(target, allocation=scope))
    totals = result.totals()
    assert abs(totals["sparsity_after"] - target) <= 0.005
    if scope == "uniform":
        for layer in result.layers:
            assert abs(layer.zeros_after - round(target * layer.size)) <= 0
    after = _weights(model)
    pruned = {layer.name for layer in result.layers}
    for tensor, old in before.items():
        new = after[tensor]
        if tensor not in pruned:
            assert np.array_equal(old, new), tensor
        else:
            kept = new != 0
            assert np.array_equal(old[kept], new[kept]), tensor
            assert new.dtype == old.dtype and new.shape == old.shape


def test_global_scope_uses_one_threshold() -> None:
    model = load_model(FIXTURE_MODELS["digits_cnn"][0])
    before = _weights(model)
    result = prune_model(model, PruneOptions(0.6, allocation="global"))
    after = _weights(model)
    names = [layer.name for layer in result.layers]
    pruned_max = max(np.abs(before[n][after[n] == 0]).max() for n in names)
    kept_min = min(np.abs(before[n][after[n] != 0]).min() for n in names)
    assert pruned_max <= kept_min


def test_two_of_four_on_transformer_skips_indivisible_layers() -> None:
    model = load_model(FIXTURE_MODELS["digits_transformer"][0])
    layouts = {w.name: w.layout for w in find_weights(model)[0]}
    result = prune_model(model, PruneOptions(None, pattern=(2, 4)))
    assert result.totals()["sparsity_after"] == 0.5
    assert {layer.op_type for layer in result.layers} == {"MatMul", "Gemm"}
    for layer in result.layers:
        array = model.graph.initializers[layer.name].const_value.numpy()
        runs = np.moveaxis(array != 0, layouts[layer.name].in_axis, -1).reshape(-1, 4)
        assert (runs.sum(axis=1) == 2).all(), layer.name
    # The 8-feature embedding MatMul is divisible by 4; nothing here is refused for N:M.
    assert all("multiple of 4" not in s.reason for s in result.skipped)


def test_include_exclude_select_weights() -> None:
    model = load_model(FIXTURE_MODELS["digits_mlp"][0])
    result = prune_model(model, PruneOptions(0.5, include=r"net\.[02]\.", exclude=r"net\.2"))
    assert [layer.name for layer in result.layers] == ["net.0.weight"]
    reasons = {s.name: s.reason for s in result.skipped}
    assert reasons["net.2.weight"] == "excluded by --exclude 'net\\.2'"
    assert reasons["net.4.weight"] == "not matched by --include 'net\\.[02]\\.'"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PruneOptions(1.0), "target sparsity must be in [0, 1)"),
        (PruneOptions(-0.1), "target sparsity must be in [0, 1)"),
        (PruneOptions(0.5, method="random"), "unknown method 'random'"),
        (PruneOptions(0.5, allocation="model"), "unknown allocation 'model'"),
        (PruneOptions(0.7, pattern=(2, 4)), "--pattern 2:4 means sparsity 0.5"),
        (PruneOptions(None, pattern=(2, 4), allocation="global"), "does not apply"),
        (PruneOptions(0.5, include="("), "is not a valid regex"),
        (PruneOptions(0.5, include="nothing-matches"), "nothing to prune"),
    ],
    ids=[
        "one",
        "negative",
        "method",
        "scope",
        "pattern_conflict",
        "pattern_global",
        "regex",
        "none",
    ],
)
def test_bad_options_are_refused(options: PruneOptions, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace(")", r"\)")):
        prune_model(load_model(FIXTURE_MODELS["digits_mlp"][0]), options)


@pytest.mark.parametrize("text", ["2-4", "4:2", "0:4", "x:y"])
def test_bad_patterns_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_pattern(text)


def test_prune_returns_same_kind_and_leaves_input_alone() -> None:
    proto = onnx.load(str(FIXTURE_MODELS["digits_mlp"][0]))
    original = proto.SerializeToString()
    pruned, result = prune(proto, PruneOptions(0.5))
    assert isinstance(pruned, onnx.ModelProto)
    assert proto.SerializeToString() == original
    assert result.totals()["sparsity_after"] == 0.5
    ir_model = load_model(FIXTURE_MODELS["digits_mlp"][0])
    pruned_ir, _ = prune(ir_model, PruneOptions(0.5))
    assert pruned_ir is not ir_model
    assert (
        np.count_nonzero(ir_model.graph.initializers["net.0.weight"].const_value.numpy())
        > 0.9 * 8192
    )

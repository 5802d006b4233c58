"""ONNX's backend node-test models (and their frozen-weight variants) never cause an internal
error in inspect, prune or compress. A deterministic sixth of them runs here; `make node-sweep`
runs all of them."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from node_sweep import sweep


def test_node_models_cause_no_internal_error() -> None:
    result = sweep(every=6)
    assert result["cases"] > 400
    assert result["internal"] == []
    assert result["tallies"]["compress"].get("ok", 0) > 0  # frozen weights are really pruned

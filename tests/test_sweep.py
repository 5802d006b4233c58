"""sweep: every grid point verified, table in grid order, Pareto front, verdict, Ray."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from cli.main import main
from onnxprune.errors import InputError
from onnxprune.pruning import PruneOptions
from onnxprune.search import NO_CONFIGURATION
from onnxprune.search.parallel import RAY_INSTALL_HINT, require_ray
from onnxprune.search.sweep import SweepOptions, pareto_front, run_sweep
from onnxprune.verify import Gates, VerifyOptions

ADULT = FIXTURES / "adult_mlp.onnx"
DATA = FIXTURES / "adult_mlp-eval.npz"
CALIBRATION = FIXTURES / "adult_mlp-calibration.npz"
QUICK = ("--bootstrap", "0", "--threads", "1")


def _row(objective, drop, worst):
    return {
        "objective": objective,
        "accuracy_drop": drop,
        "cosine_mean": None,
        "worst_group_drop": worst,
    }


def test_pareto_front_marks_the_undominated_rows():
    rows = [_row(10, 0.01, 0.02), _row(5, 0.03, 0.02), _row(10, 0.02, 0.02), _row(5, 0.03, 0.01)]
    assert pareto_front(rows) == [True, False, False, True]


GRID = ("--sparsities", "0.5,0.9", "--methods", "magnitude,sparsegpt")


def _sweep(tmp_path, *extra, grid=GRID):
    """``onnxprune sweep`` on Adult; ``grid`` gives the sparsity (and method) options."""
    prefix = tmp_path / "table"
    args = ("sweep", ADULT, "--data", DATA, "--calibration", CALIBRATION, "-o", prefix)
    result = CliRunner().invoke(main, [str(a) for a in (*args, *grid, *QUICK, *extra)])
    return result, prefix


def test_sweep_writes_every_combination_with_the_front(tmp_path):
    result, prefix = _sweep(tmp_path, "--max-accuracy-drop", "0.01")
    assert result.exit_code == 0, result.output
    table = json.loads(prefix.with_suffix(".json").read_text())
    rows = table["rows"]
    grid = [(r["sparsity"], r["method"]) for r in rows]
    assert grid == [(0.5, "magnitude"), (0.5, "sparsegpt"), (0.9, "magnitude"), (0.9, "sparsegpt")]
    assert [r["pareto"] for r in rows] == pareto_front(rows)
    assert rows[0]["passed"] and not rows[2]["passed"]  # magnitude 90% breaks 1 pt
    with open(prefix.with_suffix(".csv"), newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [w["method"] for w in written] == [r["method"] for r in rows]
    assert "configurations hold the budget" in result.output


def test_sweep_says_when_no_configuration_holds(tmp_path):
    result, prefix = _sweep(tmp_path, "--max-accuracy-drop", "-0.5")
    assert result.exit_code == 1
    assert NO_CONFIGURATION in result.output
    assert json.loads(prefix.with_suffix(".json").read_text())["verdict"] == NO_CONFIGURATION


def _table(**where):
    return run_sweep(
        ADULT,
        PruneOptions(calibration=str(CALIBRATION)),
        SweepOptions((0.5, 0.8), ("magnitude",), **where),
        VerifyOptions(data=DATA, threads=1),
        Gates(max_accuracy_drop=0.01),
    )["rows"]


def test_sweep_gives_the_same_table_in_worker_processes():
    assert _table(workers=2) == _table()


def test_sweep_gives_the_same_table_on_ray():
    pytest.importorskip("ray")
    assert _table(ray="local") == _table()


def test_ray_without_the_extra_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match="needs the 'ray' extra") as error:
        require_ray()
    assert RAY_INSTALL_HINT in str(error.value) and "\n" not in str(error.value)


def test_sweep_refuses_more_than_two_workers(tmp_path):
    result, _ = _sweep(tmp_path, "--workers", "3")
    assert result.exit_code == 2


def test_structured_sweep_ranks_by_macs(tmp_path):
    result, prefix = _sweep(tmp_path, "--structured", "--objective", "macs")
    assert result.exit_code == 2 and "unknown importance 'magnitude'" in result.output
    structured = ("--structured", "--objective", "macs", "--min-agreement", "0.5")
    result, prefix = _sweep(tmp_path, *structured, grid=("--sparsities", "0.25,0.5"))
    assert result.exit_code == 0, result.output
    rows = json.loads(prefix.with_suffix(".json").read_text())["rows"]
    assert rows[0]["objective"] > rows[1]["objective"]  # fewer MACs at 50%
    assert {r["method"] for r in rows} == {"obs"}  # no --methods: prune's default importance

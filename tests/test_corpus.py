"""Every command on every corpus model (models this project did not build, issue #8).

Each case runs one command as a child process. It must exit 0 (or 1: a gate failed, outputs
written), or 2 with exactly one line on stderr and nothing written; never 3, never a
traceback. A written model passes the full ONNX checker, loads in onnxruntime and keeps the
input's graph inputs and outputs; the input files are byte-for-byte unchanged; ``verify M M``
reports full agreement and ``compress``'s clean-up stage keeps the outputs. A refusal may not
blame the tool's own result (every corpus input passes the checker) nor onnxruntime failing on
the model's own eval data (``verify`` runs the model on it).

The cases run two at a time (one per core) in a session fixture, only those selected. The corpus
comes from ``make corpus`` (``fixtures/corpus/fetch.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES / "corpus"))
from corpus_matrix import Outcome, cases, input_files, run_case
from corpus_models import CorpusModel, features, load_corpus, sha256

# (model, command) -> what fails today. Each is a strict xfail: when a fix makes the case pass,
# the suite fails with XPASS until the entry is removed here.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
# Refusals that blame the tool's own result: a bug, since every corpus input passes the checker.
OWN_RESULT_BROKEN = ("the result fails the ONNX checker", "the result does not load in onnxruntime")
# A refusal because onnxruntime failed on the eval data: a bug when that data is the model's own
# (``verify`` runs the model on it), not made-up inputs.
RUNTIME_FAILED = "onnxruntime failed on samples"

MODELS = load_corpus()
WORKERS = 2
READ_ONLY = ("inspect", "inspect --json", "verify")  # every other command writes a model


@dataclass
class Checked:
    """One case's outcome and the problems found in what it wrote or touched."""

    outcome: Outcome
    problems: list[str] = field(default_factory=list)


def _check_output(model: CorpusModel, path: Path) -> list[str]:
    try:
        onnx.checker.check_model(str(path), full_check=True)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # any failure is a finding to report, not to raise here
        return [f"written model does not check or load: {type(error).__name__}: {error}"]
    before = onnx.load(model.path, load_external_data=False).graph
    after = onnx.load(path, load_external_data=False).graph
    names = [
        (
            [i.name for i in g.input if i.name not in {t.name for t in g.initializer}],
            [o.name for o in g.output],
        )
        for g in (before, after)
    ]
    return [] if names[0] == names[1] else [f"graph inputs/outputs changed: {names}"]


def _promises(command: str, outcome: Outcome) -> list[str]:
    """What ``inspect --json``, ``verify M M`` and ``compress``'s clean-up promise."""
    if command == "inspect --json" and outcome.code == 0:
        try:
            json.loads(outcome.stdout)
        except json.JSONDecodeError as error:
            return [f"inspect --json printed no JSON: {error}"]
    if command == "verify" and outcome.code == 0:
        quality = json.loads(outcome.stdout)["verification"]["quality"]
        agreement = quality["top1_agreement"]  # None when the output is not a classifier's
        if agreement not in (None, 1.0) or quality["max_abs_diff"] > 1e-5:
            return [f"verify M M disagrees with itself: {quality}"]
    if command == "compress" and outcome.code in (0, 1):
        report_path = next(outcome.output.parent.glob("*.report.json"), None)
        if report_path is None:
            return ["compress wrote no report"]
        report = json.loads(report_path.read_text())
        cleanup = [s for s in report["stages"] if s["stage"] == "cleanup"]
        if cleanup and cleanup[0]["cosine_mean"] < 0.9999:
            return [f"clean-up changed the outputs: {cleanup[0]}"]
    return []


def _run(model: CorpusModel, command: str, folder: Path, digests: dict[Path, str]) -> Checked:
    folder.mkdir(parents=True)
    checked = Checked(run_case(model, command, folder))
    changed = [str(p) for p in input_files(model) if sha256(p) != digests[p]]
    if changed:
        checked.problems.append(f"input files changed: {changed}")
    if checked.outcome.code in (0, 1) and command not in READ_ONLY:
        if checked.outcome.output.exists():
            checked.problems += _check_output(model, checked.outcome.output)
        else:
            checked.problems.append(f"exit {checked.outcome.code} but no model written")
    checked.problems += _promises(command, checked.outcome)
    stderr = checked.outcome.stderr.strip()
    if checked.outcome.code == 2 and any(t in stderr for t in OWN_RESULT_BROKEN):
        checked.problems.append(f"refused its own result: {stderr}")
    if checked.outcome.code == 2 and model.data is not None and RUNTIME_FAILED in stderr:
        checked.problems.append(f"failed on the model's own eval data: {stderr}")
    return checked


def _selected(session: pytest.Session) -> list[tuple[CorpusModel, str]]:
    """The (model, command) cases of this module that pytest is about to run."""
    chosen = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module.__name__ == __name__ and "command" in params:
            chosen.append((params["model"], params["command"]))
    return chosen


@pytest.fixture(scope="session")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory
) -> Iterator[dict[tuple[str, str], Future]]:
    """Run every selected case (two at a time) once; futures keyed by (model name, command)."""
    for model in MODELS:
        if not model.path.exists() or sha256(model.path) != model.entry["sha256"]:
            pytest.fail(f"corpus model {model.name} missing or changed: run `make corpus`")
    selected = _selected(request.session)
    digests = {p: sha256(p) for model, _ in selected for p in input_files(model)}
    root = tmp_path_factory.mktemp("corpus")
    pool = ThreadPoolExecutor(WORKERS)
    yield {
        (model.name, command): pool.submit(_run, model, command, root / f"{index:03d}", digests)
        for index, (model, command) in enumerate(selected)
    }
    pool.shutdown(cancel_futures=True)


def _param(model: CorpusModel, command: str):
    reason = KNOWN_FAILURES.get((model.name, command))
    marks = [pytest.mark.xfail(strict=True, reason=f"#8: {reason}")] if reason else []
    return pytest.param(model, command, id=f"{model.name}-{command}", marks=marks)


@pytest.mark.parametrize(("model", "command"), [_param(m, c) for m, c in cases(MODELS)])
def test_command_on_corpus_model(model: CorpusModel, command: str, outcomes) -> None:
    checked = outcomes[(model.name, command)].result()
    code, stderr = checked.outcome.code, checked.outcome.stderr
    assert code in (0, 1, 2), f"exit {code}: {stderr.strip()[-500:]}"
    assert "Traceback" not in stderr, stderr[-2000:]
    if code == 2:
        assert len(stderr.strip().splitlines()) == 1, f"exit 2 stderr: {stderr.strip()}"
        assert not checked.outcome.output.exists(), "exit 2 but a model was written"
    assert not checked.problems, checked.problems


def test_known_failures_name_real_cases() -> None:
    names = {(m.name, c) for m, c in cases(MODELS)}
    assert set(KNOWN_FAILURES) <= names


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
def test_corpus_model_is_valid_and_as_recorded(model: CorpusModel) -> None:
    onnx.checker.check_model(str(model.path), full_check=True)
    assert features(model.path) == model.entry["features"]


def test_models_without_data_say_what_they_need() -> None:
    for model in MODELS:
        assert (model.data is None) == bool(model.needs), model.name

"""bench/repair.py --calibration-sentences: more calibration sentences keep the first 128 and
never reuse a held-out or validation sentence (with a stand-in sentence pool and tokeniser)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import repair

POOL = 1200  # stand-in sentences "s0" .. "s1199", in pool order


def _tokenise(texts: list[str]) -> dict[str, np.ndarray]:
    ids = np.zeros((len(texts), 4), dtype=np.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 101, [int(t[1:]) for t in texts], 102
    mask = (ids != 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _sentences(limit: int) -> list[str]:
    if limit > POOL:
        sys.exit(f"only {POOL} sentences found, need {limit}")
    return [f"s{i}" for i in range(limit)]


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """Files as on the bench machine: written from an earlier pool order, so held-out and
    calibration sentences lie anywhere in today's order, also after position 704."""
    monkeypatch.setattr(repair, "WORK", tmp_path)
    monkeypatch.setattr(repair.minilm_export, "tokenise", _tokenise)
    monkeypatch.setattr(repair.minilm_export, "sentences", _sentences)
    layout = {
        "calibration": [*range(0, 1200, 10), *range(5, 85, 10)],
        "heldout": [*range(701, 1200, 3)],
        "repair_validation": [*range(640, 704)],
    }
    for name, ids in layout.items():
        np.savez(tmp_path / f"{name}.npz", **_tokenise([f"s{i}" for i in ids]))
    return tmp_path, layout


def _ids(path) -> list[int]:
    return [int(i) for i in np.load(path)["input_ids"][:, 1]]


def test_default_is_the_existing_file(work):
    path, _ = work
    assert repair.calibration_file() == path / "calibration.npz"
    assert not list(path.glob("calibration_*.npz"))


def test_more_sentences_keep_the_first_and_avoid_every_other_set(work):
    path, layout = work
    chosen = _ids(repair.calibration_file(256))
    assert repair.calibration_file(256) == path / "calibration_256.npz"
    assert chosen[:128] == layout["calibration"]
    extra = chosen[128:]
    used = {i for ids in layout.values() for i in ids}
    assert len(extra) == 128 and len(set(extra)) == 128
    assert not set(extra) & used
    assert min(extra) >= 704
    assert _ids(path / "calibration.npz") == layout["calibration"]


def test_a_pool_too_small_is_refused(work):
    path, _ = work
    with pytest.raises(SystemExit, match="sentences"):
        repair.calibration_file(400)
    assert not (path / "calibration_400.npz").exists()

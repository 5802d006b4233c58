"""The HTML report: every figure and table present, every number shown equal to the JSON's."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURE_MODELS, FIXTURES

from cli.main import main
from onnxprune.html import format_value, render_html

ADULT, ADULT_DATA = FIXTURE_MODELS["adult_mlp"]
MLP, MLP_DATA = FIXTURE_MODELS["digits_mlp"]
RUN_KEYS = {"schema_version", "tool", "command", "model", "output", "passed", "error", "gates"}


class _Page(HTMLParser):
    """What a reader would see: shown values by JSON path, figures, sections, references."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[str, str]] = []
        self.figures: dict[str, dict] = {}
        self.sections: dict[str, int] = {}
        self.references: list[str] = []
        self.tags: set[str] = set()
        self._open: list[tuple[str, list[str]]] = []
        self._section: str | None = None
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        self.references += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section":
            self._section = attributes["id"]
            self.sections[self._section] = 0
        if tag == "table" and self._section:
            self.sections[self._section] += 1
        if tag == "figure":
            self._figure = attributes["id"]
            self.figures[self._figure] = {"sources": attributes["data-sources"].split()}
        if tag == "img" and self._figure:
            self.figures[self._figure]["src"] = attributes["src"]
        if "data-path" in attributes:
            self._open.append((attributes["data-path"], []))

    def handle_data(self, data: str) -> None:
        for _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        if tag == "span" and self._open:  # a data-path span holds text only
            path, text = self._open.pop()
            self.values.append((path, "".join(text)))


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _lookup(data: Any, path: str) -> Any:
    """The value at a data-path: ``a.b``, ``a[3]``, ``a["any key"]``."""
    for key, index, quoted in re.findall(
        r'([A-Za-z_][\w-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]', path
    ):
        data = data[int(index)] if index else data[json.loads(quoted) if quoted else key]
    return data


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            plain = re.fullmatch(r"[A-Za-z_][\w-]*", key) and key.isascii()
            child = (f"{path}.{key}" if path else key) if plain else f"{path}[{json.dumps(key)}]"
            found.update(_leaves(item, child))
        return found
    if isinstance(value, list):
        found = {}
        for index, item in enumerate(value):
            found.update(_leaves(item, f"{path}[{index}]"))
        return found
    return {path: value}


def _invoke(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def adult_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    """compress of the Adult fixture (structured + int8, groups, gates, explanations), --html."""
    folder = tmp_path_factory.mktemp("html")
    report, page = folder / "r.json", folder / "r.html"
    result = _invoke(
        "compress", ADULT, "-o", folder / "m.onnx", "--structured", "--reconstruct",
        "--quantize", "int8", "--calibration", FIXTURES / "adult_mlp-calibration.npz",
        "--data", ADULT_DATA, "--latency-runs", 6, "--warmup", 1,
        "--max-accuracy-drop", 0.02, "--max-group-drop", 0.03, "--explain", 6,
        "--report", report, "--html", page,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"HTML report: {page}" in result.output
    return json.loads(report.read_text()), page.read_text(encoding="utf-8"), folder


def _check_every_value(data: dict, text: str) -> _Page:
    """Every JSON scalar is shown, and every value shown equals the JSON's."""
    page = _parse(text)
    shown = {path for path, _ in page.values}
    assert set(_leaves(data)) <= shown
    for path, text_shown in page.values:
        value = _lookup(data, path)
        assert text_shown == format_value(value), path
        if isinstance(value, float):
            assert float(text_shown) == pytest.approx(value, rel=1e-5, abs=1e-300), path
        elif isinstance(value, bool):
            assert text_shown == ("yes" if value else "no")
        elif isinstance(value, int):
            assert int(text_shown) == value, path
    return page


def _check_figures(data: dict, page: _Page, expected: set[str]) -> None:
    assert set(page.figures) == expected
    for key, figure in page.figures.items():
        prefix = "data:image/svg+xml;base64,"
        assert figure["src"].startswith(prefix), key
        svg = ET.fromstring(base64.b64decode(figure["src"][len(prefix) :]))
        assert svg.tag.endswith("svg")
        for source in figure["sources"]:
            _lookup(data, source)  # a figure names the JSON it plots; it must exist


def test_compress_page_shows_every_number_figure_and_section(adult_run) -> None:
    data, text, _ = adult_run
    page = _check_every_value(data, text)
    groups = {f"fig-{kind}-{a}" for kind in ("groups", "explain-groups") for a in ("race", "sex")}
    explain = {"fig-explain-samples", "fig-explain-global"}
    _check_figures(data, page, {"fig-sparsity", "fig-latency", "fig-size", *groups, *explain})
    for key in set(data) - RUN_KEYS:
        assert page.sections[f"sec-{key}"] >= 1, key  # every section has its table(s)
    assert page.sections["sec-gates"] == 1 and page.sections["sec-run"] >= 1
    assert 'class="verdict pass">PASS<' in text


def test_page_is_self_contained(adult_run) -> None:
    _, text, _ = adult_run
    page = _parse(text)
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert all(r.startswith(("data:", "#")) for r in page.references)
    assert "http" not in re.sub(r"data:[^\"]+", "", text)


def test_report_command_rerenders_the_same_page(adult_run) -> None:
    _, text, folder = adult_run
    again = folder / "again.html"
    result = _invoke("report", folder / "r.json", "--html", again)
    assert result.exit_code == 0, result.output
    assert again.read_text(encoding="utf-8") == text


def test_report_command_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"schema_version": 1}))
    out = tmp_path / "x.html"
    result = _invoke("report", other, "--html", out)
    assert result.exit_code == 2 and "not an onnxprune report" in result.output
    assert not out.exists()


def test_unstructured_verify_page_and_latency_distribution(tmp_path: Path) -> None:
    pruned, report, page_path = tmp_path / "p.onnx", tmp_path / "r.json", tmp_path / "r.html"
    assert _invoke("prune", MLP, "-o", pruned, "--target-sparsity", 0.6).exit_code == 0
    result = _invoke(
        "verify", MLP, pruned, "--data", MLP_DATA, "--latency-runs", 7, "--warmup", 1,
        "--report", report, "--html", page_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    page = _check_every_value(data, page_path.read_text(encoding="utf-8"))
    _check_figures(data, page, {"fig-latency", "fig-size"})  # verify has no pruning section
    latency = data["verification"]["latency"]
    for side in ("baseline", "candidate"):
        times = latency[side]["times_ms"]
        assert len(times) == 7
        assert float(np.median(times)) == pytest.approx(latency[side]["p50_ms"], rel=1e-3)


def test_sparsity_figure_of_unstructured_pruning(adult_run) -> None:
    data, _, _ = adult_run
    pruning = {
        "mode": "unstructured",
        "layers": [{"name": "w", "sparsity_before": 0.0, "sparsity_after": 0.5}],
    }
    page = _parse(render_html({**data, "pruning": pruning}))
    assert "fig-sparsity" in page.figures and page.figures["fig-sparsity"]["sources"] == [
        "pruning.layers"
    ]


def test_non_finite_values_are_shown_as_null_and_listed(adult_run) -> None:
    data, _, _ = adult_run
    broken = json.loads(json.dumps(data))
    broken["verification"]["quality"]["cosine_min"] = math.nan
    page = _parse(render_html(broken))
    values = dict(page.values)
    assert values["verification.quality.cosine_min"] == "-"
    assert values["non_finite[0]"] == "verification.quality.cosine_min"


def test_missing_matplotlib_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    result = _invoke(
        "verify", MLP, MLP, "--data", MLP_DATA, "--latency-runs", 0,
        "--report", report, "--html", page,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "pip install 'onnxprune[html]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium to render the page")
def test_page_renders_its_figures_in_chromium(adult_run, tmp_path: Path) -> None:
    from matplotlib.image import imread

    folder = adult_run[2]
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1000,2600", f"--screenshot={shot}", (folder / "r.html").as_uri(),
        ],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = imread(shot)[..., :3]
    orange = np.all(np.abs(pixels - np.array([0xD9, 0x82, 0x2B]) / 255) < 0.02, axis=-1)
    assert orange.sum() > 2000  # the candidate's bars and points: the SVG figures were drawn

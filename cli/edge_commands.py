"""Commands that turn results into artefacts: ``report`` (HTML) and ``export-edge``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.command_io import MODEL, emit, finish, outputs
from cli.common_options import debug_option
from cli.verify_options import gate_options, gates_from, verify_options, verify_options_from
from onnxprune.edge import (
    EdgeOptions,
    export_edge,
    package_files,
    package_manifest,
    render_package,
)
from onnxprune.html import load_report, require_matplotlib, write_html
from onnxprune.ort_format import PLATFORMS, OrtOptions
from onnxprune.paths import model_reads, unstaged
from onnxprune.report import write_json

__all__ = ["export_edge_command", "report_command"]


@click.command("report")
@click.argument("report_file", metavar="REPORT", type=click.Path(path_type=Path))
@click.option(
    "--html",
    type=click.Path(path_type=Path),
    required=True,
    help="Write the report as one self-contained HTML page here.",
)
@debug_option
def report_command(report_file: Path, html: Path, debug: bool) -> None:
    """Render a JSON report (any command's --report) as a self-contained HTML page."""
    require_matplotlib()
    out = outputs([report_file], [html])
    write_html(out(html), load_report(report_file))
    out.commit()
    click.echo(f"HTML report: {html}")


def _package_folder(folder: Path) -> None:
    """Create the package folder (its parent must exist); removed again if left empty."""
    if folder.is_dir():
        return
    if folder.exists() or not folder.parent.is_dir():
        raise onnxprune.InputError(f"{folder}: not a folder, or its parent folder does not exist")
    folder.mkdir()

    def remove_if_empty() -> None:
        with contextlib.suppress(OSError):
            folder.rmdir()

    click.get_current_context().call_on_close(remove_if_empty)


@click.command("export-edge")
@MODEL
@click.option(
    "-o",
    "--output",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="Package folder (created if missing; files in it are replaced).",
)
@click.option("--platform", type=click.Choice(PLATFORMS), default="amd64", show_default=True)
@click.option(
    "--nchwc",
    is_flag=True,
    help="amd64: keep onnxruntime's NCHWc layout transform, blocked for THIS machine's vector "
    "width (only when the target CPU is the same kind).",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="The original model: verify the package's model against it and apply the gates.",
)
@click.option("--parity-atol", type=float, default=1e-4, show_default=True)
@click.option("--parity-rtol", type=float, default=1e-3, show_default=True)
@click.option("--html/--no-html", "with_html", default=True, show_default=True)
@verify_options
@gate_options
@debug_option
def export_edge_command(
    model: Path, folder: Path, report: Path | None, as_json: bool, **params: Any
) -> None:
    """Package MODEL for onnxruntime on the edge: model.ort, its operator config, a report and
    a manifest of hashes in OUTPUT; the .ort must agree with the .onnx on the data."""
    options = EdgeOptions(
        OrtOptions(params["platform"], params["nchwc"]),
        params["parity_atol"],
        params["parity_rtol"],
        params["with_html"],
    )
    options.validate()
    if options.html:
        require_matplotlib()
    baseline = params["baseline"]
    external = len(model_reads(model)) > 1
    files = package_files(folder, external, options.html)
    _package_folder(folder)
    reads = [*model_reads(model), *(model_reads(baseline) if baseline else []), params["data"]]
    out = outputs(reads, [*files, report])
    result = export_edge(
        model, folder, out, options, verify_options_from(params), baseline, gates_from(params)
    )
    result = unstaged(result)
    write_json(out(files[-3 if options.html else -2]), result)
    if options.html:
        write_html(out(files[-2]), result)
    manifest = package_manifest(
        result,
        {path.name: out(path) for path in files[:-1]},
        {**options.ort.describe(), "parity_atol": options.atol, "parity_rtol": options.rtol},
    )
    write_json(out(files[-1]), manifest)
    emit(result, as_json, report, out)
    if not as_json:
        click.echo("\n".join(render_package(result, files)))
    finish(result)

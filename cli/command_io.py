"""What every command does with its outputs: check them against its inputs, stage them,
write the report beside them, commit them all at once, exit 1 when a gate failed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.errors import EXIT_GATE_FAILED
from onnxprune.html import write_html
from onnxprune.paths import StagedOutputs, check_writes, unstaged
from onnxprune.report import build_report, render_report, to_json, write_json
from onnxprune.resources import process_resources

__all__ = ["MODEL", "emit", "finish", "outputs", "report_refusal"]

MODEL = click.argument("model", type=click.Path(path_type=Path))


def outputs(reads: list[Any], writes: list[Any]) -> StagedOutputs:
    """Check every destination against every file read, before any work; stage them.

    The staged files are removed when the command ends without ``_emit`` committing them.
    """
    destinations = [Path(w) for w in writes if w is not None]
    check_writes(reads, destinations)
    staged = StagedOutputs(destinations)
    click.get_current_context().call_on_close(staged.discard)
    return staged


def emit(
    report: dict,
    as_json: bool,
    report_path: Path | None,
    out: StagedOutputs,
    html: Path | None = None,
) -> None:
    """Write the report (and its HTML page) beside the staged outputs, move them all into
    place, then print. The report says what the command cost (peak memory, wall time)."""
    report = {**unstaged(report), "resources": process_resources()}
    if report_path is not None:
        write_json(out(report_path), report)
    if html is not None:
        write_html(out(html), report)
    out.commit()
    click.echo(to_json(report).rstrip("\n") if as_json else render_report(report))
    if html is not None and not as_json:
        click.echo(f"HTML report: {html}")


@contextlib.contextmanager
def report_refusal(
    command: str, model: Path, report_path: Path | None, out: StagedOutputs
) -> Iterator[None]:
    """When pruning finds nothing to do (exit 2), still write ``--report`` with every reason,
    as the issue asks: the one output of an exit 2 (no model is written)."""
    try:
        yield
    except onnxprune.NothingToPrune as error:
        if report_path is not None:
            report = build_report(command, model, pruning=error.pruning)
            write_json(out(report_path), {**report, "passed": False, "error": str(error)})
            out.commit()
        raise


def finish(report: dict) -> None:
    if not report["passed"]:
        click.get_current_context().exit(EXIT_GATE_FAILED)

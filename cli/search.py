"""``compress --auto`` options and the ``sweep`` command (``onnxprune.search``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.common_options import stack
from cli.errors import EXIT_GATE_FAILED
from cli.prune_options import calibration_options_from, prune_options_from
from cli.repair_options import repair_options_from
from cli.sweep import sweep
from cli.verify_options import gates_from, verify_options_from
from onnxprune.errors import InputError
from onnxprune.paths import StagedOutputs, check_writes, model_reads, model_writes, unstaged
from onnxprune.report import render_report, to_json, write_json
from onnxprune.search import OBJECTIVES, SCHEDULES, AutoOptions, auto_compress

__all__ = ["auto_options", "run_auto", "sweep"]  # sweep: from cli.sweep, registered by main


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


auto_options = stack(
    click.option(
        "--auto",
        is_flag=True,
        help="Search sparsity per layer, method and allocation for the best --objective whose "
        "gates hold (selection half of --data; confirmed on the other half).",
    ),
    click.option("--objective", type=click.Choice(OBJECTIVES), default="size", show_default=True),
    click.option(
        "--max-evals",
        type=click.IntRange(min=1),
        default=None,
        help="--auto: most candidates verified.",
    ),
    click.option("--max-time", type=float, default=None, help="--auto: seconds for the search."),
    click.option("--seed", type=int, default=0, show_default=True, help="--auto: split seed."),
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="oneshot",
        show_default=True,
        help="--auto: gradual raises sparsity in steps (repairing in between with --repair) "
        "and stops at the last step whose gates hold.",
    ),
    click.option(
        "--search-methods",
        default=None,
        help="--auto: comma list (default magnitude, and wanda, sparsegpt with --calibration).",
    ),
    click.option(
        "--search-precisions",
        default=None,
        help="--auto: comma list of float, int8 (default float; int8,float for latency).",
    ),
    click.option(
        "--search-log",
        type=click.Path(path_type=Path),
        default=None,
        help="--auto: JSONL log (default <output>.search.jsonl).",
    ),
    click.option(
        "--search-margin",
        type=float,
        default=0.0,
        show_default=True,
        help="--auto: on the selection half, drop limits are tightened by this fraction "
        "(minimum agreement/cosine moved as far towards 1), against the winner's curse.",
    ),
    click.option(
        "--search-z",
        type=float,
        default=1.0,
        show_default=True,
        help="--auto: on the selection half, every accuracy drop (overall and per group) is "
        "judged as drop + Z x the standard error of its selection-vs-confirmation difference "
        "(paired SE x sqrt(2) for equal halves), the mean cosine likewise; 0: point values.",
    ),
    click.option(
        "--search-tolerance",
        type=float,
        default=0.02,
        show_default=True,
        help="--auto: candidates whose objective is within this fraction of the best are "
        "chosen between by worst-group drop, then accuracy drop (selection half).",
    ),
    click.option(
        "--search-timed",
        type=int,
        default=3,
        show_default=True,
        help="--auto --objective latency: time this many passing candidates with the fewest "
        "MACs (and int8 alone) in one process and choose the fastest; 0: fewest MACs.",
    ),
    click.option("--resume", is_flag=True, help="--auto: reuse the candidates of --search-log."),
)

# compress options that fix what --auto searches, with their defaults
_FIXED = {
    "target_sparsity": None,
    "pattern": None,
    "structured": False,
    "quantize": None,
    "optimize": False,
    "replay": None,
    "manifest": None,
    "auto_exclude": False,
    "explain": None,
    "html": None,
    "allocation": None,
    "scope": None,
}


_AUTO_ONLY = {
    "objective": "size",
    "max_evals": None,
    "max_time": None,
    "seed": 0,
    "schedule": "oneshot",
    "search_methods": None,
    "search_precisions": None,
    "search_log": None,
    "resume": False,
    "search_margin": 0.0,
    "search_tolerance": 0.02,
    "search_z": 1.0,
    "search_timed": 3,
}


def _auto_options(params: dict[str, Any], output: Path) -> AutoOptions:
    for name, default in _FIXED.items():
        if params.get(name, default) != default:
            flag = name.replace("_", "-")
            raise InputError(f"--{flag} does not go with --auto (the search chooses it)")
    log = params["search_log"] or Path(f"{output}.search.jsonl")
    return AutoOptions(
        log=str(log),
        objective=params["objective"],
        methods=_names(params["search_methods"]),
        precisions=_names(params["search_precisions"]),
        max_evals=params["max_evals"],
        max_time=params["max_time"],
        seed=params["seed"],
        schedule=params["schedule"],
        resume=params["resume"],
        margin=params["search_margin"],
        tolerance=params["search_tolerance"],
        z=params["search_z"],
        timed=params["search_timed"],
    )


def _search_lines(report: dict) -> list[str]:
    search = report["search"]
    lines = [
        f"Search ({search['objective']}, {search['schedule']}, methods "
        f"{', '.join(search['methods'])}): {search['candidates_evaluated']} candidates "
        f"evaluated, {search['candidates_from_log']} from the log, {search['seconds']:.1f} s"
        + (f" (stopped: {search['stopped']})" if search["stopped"] else "")
    ]
    if "chosen" in search:
        chosen = search["chosen"]
        lines.append(
            f"  chosen: {chosen['method']}, sparsity {chosen['sparsity']:.2%} (unstructured: of "
            "the prunable weights; structured: of the units)"
        )
        for name, gap in search["gap"].items():
            lines.append(
                f"  {name}: selection {search['selection'][name]:.4f}, "
                f"confirmation {search['confirmation'][name]:.4f} (gap {gap:+.4f})"
            )
    timing = search.get("timing")
    if timing:
        for row in timing["candidates"]:
            ratio = row["cpu_vs_reference"]
            lines.append(
                f"  timed {row['method']} {row['sparsity']:.2%}: CPU p50 {row['cpu_p50_ms']:.2f} "
                f"ms, wall p50 {row['wall_p50_ms']:.2f} ms, {ratio['ratio']:.3f}x vs "
                f"{timing['reference']['method']} {timing['reference']['sparsity']:.2%} "
                f"(blocks p25-p75 {ratio['p25']:.3f}-{ratio['p75']:.3f})"
            )
    lines.append(f"Verdict: {search['verdict']}")
    return lines


def run_auto(
    model: Path, output: Path | None, report_path: Path | None, as_json: bool, params: dict
) -> bool:
    """``compress --auto``: search, write the chosen model and the report, exit 1 unless the
    gates hold on the confirmation half. False (nothing done) without ``--auto``, after
    refusing options that only ``--auto`` uses."""
    if not params.pop("auto"):
        for name, default in _AUTO_ONLY.items():
            if params[name] != default:
                raise InputError(f"--{name.replace('_', '-')} goes with --auto")
        return False
    output, default_report = onnxprune.default_outputs(model, output)
    report_path = report_path or default_report
    options = _auto_options(params, output)
    reads = [*model_reads(model), params["calibration"], params["data"]]
    check_writes(reads, [*model_writes(output), report_path, Path(options.log)])
    staged = StagedOutputs([*model_writes(output), report_path])
    click.get_current_context().call_on_close(staged.discard)
    repair = (
        repair_options_from(params, params["calibration"], "repair_") if params["repair"] else None
    )
    result = auto_compress(
        model,
        staged(output),
        prune_options_from({**params, "target_sparsity": 0.0}),
        options,
        verify_options_from(params),
        gates_from(params),
        calibration_options_from(params),
        repair,
    )
    result = unstaged(result)
    write_json(staged(report_path), result)
    staged.commit()
    text = (
        to_json(result).rstrip("\n")
        if as_json
        else "\n".join([render_report(result), *_search_lines(result)])
    )
    click.echo(text)
    if not result["passed"]:
        click.get_current_context().exit(EXIT_GATE_FAILED)
    return True

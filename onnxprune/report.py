"""Reports: one JSON document per command run, and the same content as a terminal table.

The JSON has a ``schema_version``; fields are documented in the README. Everything except
``verification.latency`` and the tool version is deterministic for the same inputs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from onnxprune.errors import InputError
from onnxprune.group_report import batch_line, gate_location, group_lines
from onnxprune.paths import os_error_message
from onnxprune.reasons import grouped_reasons

__all__ = [
    "SCHEMA_VERSION",
    "build_report",
    "render_report",
    "to_json",
    "write_json",
    "write_text_atomic",
]

SCHEMA_VERSION = 1


def _tool_version() -> str:
    try:
        return version("onnxprune")
    except PackageNotFoundError:
        return "unknown"


def build_report(
    command: str,
    model: str | os.PathLike,
    output: str | os.PathLike | None = None,
    pruning: dict | None = None,
    verification: dict | None = None,
    gates: list[dict] | None = None,
) -> dict:
    """Assemble a report; ``passed`` is False when any gate failed."""
    gates = gates or []
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "onnxprune", "version": _tool_version()},
        "command": command,
        "model": str(model),
        "output": None if output is None else str(output),
        "pruning": pruning,
        "verification": verification,
        "gates": gates,
        "passed": all(gate["passed"] for gate in gates),
    }


def _finite(value: Any, where: str, found: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found.append(where)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def to_json(data: dict) -> str:
    """``data`` as indented, strictly valid JSON.

    NaN and infinite numbers (a model whose outputs are not finite) are written as ``null``,
    and a top-level ``non_finite`` list names those fields (``verification.quality.cosine_mean``).
    """
    found: list[str] = []
    clean = _finite(data, "", found)
    if found:
        clean["non_finite"] = found
    return json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` (see ``to_json``) to ``path`` atomically (temporary file, then rename).

    Raises:
        InputError: the file cannot be written (missing folder, no space, no permission, ...).
    """
    write_text_atomic(path, to_json(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, with the permissions
    ``open()`` would give; any failure is an ``InputError`` and leaves nothing behind."""
    path = Path(path)
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
        )
    except OSError as error:
        raise InputError(os_error_message(error, path)) from error
    try:
        with handle:
            handle.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(handle.name, 0o666 & ~mask)  # as open() would create it, not 0600
        os.replace(handle.name, path)
    except OSError as error:
        Path(handle.name).unlink(missing_ok=True)
        raise InputError(os_error_message(error, path)) from error
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _kib(size: int) -> str:
    return f"{size / 1024:,.1f} KiB"


def _ms(timing: dict) -> str:
    return f"{timing['p50_ms']:.3f}/{timing['p95_ms']:.3f} ms"


def _structured_lines(pruning: dict) -> list[str]:
    options, totals, macs = pruning["options"], pruning["totals"], pruning["macs"]
    lines = [
        f"Structured pruning: target {options['target']}, {_pct(options['sparsity'])} of units, "
        f"importance {options['importance']}, "
        f"reconstruct {'yes' if options['reconstruct'] else 'no'}",
        f"  {'group':<44} {'kind':<9} {'units before -> after'}",
    ]
    for group in pruning["groups"]:
        lines.append(
            f"  {group['id'][:44]:<44} {group['kind']:<9} {group['units_before']} -> "
            f"{group['units_after']}"
        )
    lines.append(
        f"  total: {totals['groups']} groups, {totals['units_before']} -> {totals['units_after']}"
        f" units; MACs {macs['before']:,} -> {macs['after']:,} ({macs['note']})"
    )
    skipped = grouped_reasons(s["reason"] for s in pruning["skipped"])
    lines += [f"  left alone: {line}" for line in skipped]
    return lines


UNSTRUCTURED_NOTE = (
    "zeroed weights make the file compress better but do not make onnxruntime's CPU kernels "
    "faster; --structured removes units for speed"
)


def _pruning_lines(pruning: dict) -> list[str]:
    if pruning.get("mode") == "structured":
        return _structured_lines(pruning)
    options, totals = pruning["options"], pruning["totals"]
    pattern = f", pattern {options['pattern']}" if options["pattern"] else ""
    lines = [
        f"Pruning: method {options['method']}, allocation {options['allocation']}{pattern}, "
        f"target {_pct(options['effective_sparsity'])}",
        f"  {'weight':<40} {'op':<14} {'shape':<16} {'sparsity before -> after'}",
    ]
    for layer in pruning["layers"]:
        shape = "x".join(str(d) for d in layer["shape"])
        lines.append(
            f"  {layer['name'][:40]:<40} {layer['op_type']:<14} {shape:<16} "
            f"{_pct(layer['sparsity_before'])} -> {_pct(layer['sparsity_after'])}"
        )
    lines.append(
        f"  total: {totals['elements']:,} weights in {totals['pruned_weights']} tensors, "
        f"{_pct(totals['sparsity_before'])} -> {_pct(totals['sparsity_after'])}"
    )
    skipped = grouped_reasons(s["reason"] for s in pruning["skipped"])
    lines += [f"  skipped: {line}" for line in skipped]
    lines.append(f"  note: {UNSTRUCTURED_NOTE}")
    return lines


def _latency_lines(latency: dict) -> list[str]:
    threads = latency["intra_op_threads"] or f"default of {latency['cpu_count']} cpus"
    low, high = latency.get("speedup_iqr") or (latency["speedup"], latency["speedup"])
    lines = [
        f"  latency p50/p95   {_ms(latency['baseline'])} -> {_ms(latency['candidate'])}"
        f" (speedup {latency['speedup']:.2f}x, IQR {low:.2f}-{high:.2f}x; batch "
        f"{latency['batch']}, {latency['runs']} interleaved runs, threads {threads})"
    ]
    if latency.get("note"):
        lines.append(f"  latency note      {latency['note']}")
    return lines


def _verification_lines(verification: dict) -> list[str]:
    data, quality = verification["data"], verification["quality"]
    kind = "synthetic inputs (agreement only, no accuracy)" if data["synthetic"] else "data"
    task = verification.get("task") or {}
    lines = [
        f"Verification on {kind}: {data['source']}, {data['samples']} samples, "
        f"output '{verification['scored_output']}', task {task.get('task') or 'unknown'} "
        f"({task.get('evidence', '')})"
    ]
    if "accuracy_before" in quality:
        lines.append(
            f"  accuracy          {_pct(quality['accuracy_before'])} -> "
            f"{_pct(quality['accuracy_after'])} (drop {100 * quality['accuracy_drop']:.2f} pt)"
        )
    if quality.get("top1_agreement") is not None:
        lines.append(f"  top-1 agreement   {_pct(quality['top1_agreement'])}")
    lines += batch_line(verification)
    lines += [
        f"  cosine mean/min   {quality['cosine_mean']:.4f} / {quality['cosine_min']:.4f}",
        f"  max abs diff      {quality['max_abs_diff']:.4g}",
    ]
    size = verification["size"]
    lines.append(
        f"  size              {_kib(size['baseline']['bytes'])} -> "
        f"{_kib(size['candidate']['bytes'])}"
        f" (compressed {_kib(size['baseline']['compressed_bytes'])} -> "
        f"{_kib(size['candidate']['compressed_bytes'])})"
    )
    latency = verification.get("latency")
    if latency:
        lines += _latency_lines(latency)
    for attribute, summary in quality["groups"].items():
        lines += group_lines(attribute, summary)
    return lines


def _extra_lines(report: dict) -> list[str]:
    lines = []
    cleanup = report.get("cleanup")
    if cleanup:
        removed = ", ".join(f"{op} {n}" for op, n in cleanup["nodes_removed"].items()) or "none"
        lines.append(f"Clean-up: {cleanup['total_removed']} nodes removed ({removed})")
    quantization = report.get("quantization")
    if quantization:
        excluded = len(quantization["excluded_nodes"])
        lines.append(
            f"Quantization: {quantization['mode']}, "
            f"{'per-channel' if quantization['per_channel'] else 'per-tensor'}, "
            f"{quantization['quantizable_nodes']} candidate nodes, {excluded} kept in float"
        )
        auto = quantization.get("auto_exclude")
        if auto and auto.get("needed"):
            tried = ", ".join(str(a["float_layers"]) for a in auto["attempts"])
            lines.append(f"  auto-exclude: tried {tried} float layer(s): {_auto_verdict(auto)}")
    dropped = report.get("drop_layers")
    if dropped:
        lines.append(
            f"Residual blocks: {len(dropped['blocks'])} found, {len(dropped['dropped'])} dropped"
        )
        for block in sorted(dropped["blocks"], key=lambda b: b["score"]):
            mark = "dropped" if block["dropped"] else "kept"
            lines.append(f"  {block['add'][:60]:<60} 1-cos {block['score']:.4f}  {mark}")
    grown = report.get("grow")
    if grown:
        lines.append("Grown: " + ", ".join(f"{k} {v}" for k, v in grown.items()))
    stages = report.get("stages")
    if stages:
        lines.append(
            f"  {'stage':<10} {'size':>14} {'compressed':>14} {'accuracy':>9} "
            f"{'agree':>8} {'cosine':>7} {'speedup':>8} {'batch':>5}"
        )
        for stage in stages:
            speedup = "-" if stage["speedup"] is None else f"{stage['speedup']:.2f}x"
            if stage["speedup"] is not None and not stage.get("speedup_conclusive", True):
                speedup = "~" + speedup  # noise: see the latency note
            lines.append(
                f"  {stage['stage']:<10} {_kib(stage['bytes']):>14} "
                f"{_kib(stage['compressed_bytes']):>14} {_pct(stage['accuracy']):>9} "
                f"{_pct(stage['top1_agreement']):>8} {stage['cosine_mean']:>7.4f} {speedup:>8} "
                f"{stage.get('batch_size', '-'):>5}"
            )
    return lines


def _auto_verdict(auto: dict) -> str:
    """What ``--auto-exclude`` found: whether every ranked layer was tried in float."""
    if auto["satisfied"]:
        return "budget holds"
    ranked = len(auto.get("ranking", []))
    tried = max((a["float_layers"] for a in auto.get("attempts", [])), default=0)
    if ranked and tried >= ranked:
        return f"budget NOT met even with all {ranked} ranked layers in float"
    return (
        f"budget NOT met within {auto['evaluations']} evaluation(s), {tried} of {ranked} "
        "ranked layers tried in float (raise --max-evaluations)"
    )


def _explanation_lines(section: dict) -> list[str]:
    """The ``explanation`` section (``onnxprune.explain``) in a few lines."""
    agg = section["aggregate"]
    lines = [
        f"Explanation drift: {section['method']} of {section['units']} {section['unit']}s of "
        f"'{section['input']}', {section['samples']} samples, top-{section['top_k']}",
        f"  agreement (top-k overlap) {agg['agreement']:.3f}, Spearman mean/min "
        f"{agg['spearman_mean']:.3f}/{agg['spearman_min']:.3f}, sign agreement "
        f"{agg['sign_agreement_mean']:.3f}",
        f"  global ranking Spearman {section['global']['spearman']:.3f}; "
        f"{section['seconds_per_sample']:.4f} s per sample (both models)",
        "  worst samples: "
        + ", ".join(f"#{w['index']} ({w['top_k_overlap']:.2f})" for w in section["worst"]),
    ]
    for attribute, summary in section["groups"].items():
        groups = ", ".join(
            f"{g['group']} {g['agreement']:.3f} (n={g['samples']})" for g in summary["groups"]
        )
        lines.append(f"  by {attribute}: {groups}")
    return lines


def render_report(report: dict) -> str:
    """The report as a readable terminal table."""
    target = f" -> {report['output']}" if report["output"] else ""
    lines = [f"onnxprune {report['command']}: {report['model']}{target}"]
    lines += _extra_lines(report)
    if report["pruning"]:
        lines += _pruning_lines(report["pruning"])
    if report["verification"]:
        lines += _verification_lines(report["verification"])
    if report.get("explanation"):
        lines += _explanation_lines(report["explanation"])
    lines += _gate_lines(report)
    return "\n".join(lines)


def _gate_lines(report: dict) -> list[str]:
    """The gates and the verdict, which names the output and metrics it used."""
    gates = report["gates"]
    if not gates:
        if not report["verification"]:
            return []
        return ["Result: no gates set (nothing was checked against a budget)"]
    default = any(gate.get("default") for gate in gates)
    lines = ["Gates" + (" (default budget; set your own or loosen it):" if default else ":")]
    for gate in gates:
        if gate["gate"] == "finite_outputs":
            lines.append(f"  finite_outputs     FAIL: {gate['note']}")
            continue
        relation = ">=" if gate["gate"].startswith("min_") else "<="
        verdict = "pass" if gate["passed"] else "FAIL"
        value = "n/a" if gate["value"] is None else f"{gate['value']:.4f}"
        lines.append(
            f"  {gate['gate']:<19} {value} {relation} {gate['limit']:g}: {verdict}"
            f"{gate_location(gate)}"
        )
    used = ", ".join(gate["gate"] for gate in gates)
    scored = (report["verification"] or {}).get("scored_output")
    on = f" on output '{scored}'" if scored else ""
    verdict = "PASS" if report["passed"] else "FAIL (a gate broke)"
    lines.append(f"Result: {verdict}{on} ({used})")
    return lines

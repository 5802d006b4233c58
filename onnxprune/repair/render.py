"""The repair report section as terminal lines (the JSON holds the same numbers)."""

from __future__ import annotations

__all__ = ["render_adapt", "render_repair"]


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _row(label: str, row: dict) -> str:
    if "held_out_loss_before" not in row:
        return f"  {label[:44]:<44} {row.get('weights', 0):>10,}  {row['stopped']}"
    return (
        f"  {label[:44]:<44} {row['weights']:>10,} {row['epochs']:>3}/{row['best_epoch']:<3}"
        f" {_loss(row['calibration_loss_before']):>9} -> {_loss(row['calibration_loss_after']):<9}"
        f" {_loss(row['held_out_loss_before']):>9} -> {_loss(row['held_out_loss_after']):<9}"
        f" {row['stopped']}, kept {row['kept'].split(' ')[0]}"
    )


def render_repair(section: dict) -> list[str]:
    """Per block: weights, epochs run/best, calibration and held-out loss, why it stopped."""
    samples, trainable = section["samples"], section["trainable"]
    lines = [
        f"Repair: {samples['calibration']} training, {samples['validation']} validation, "
        f"{samples['test']} test samples, "
        f"{trainable['tensors']} tensors ({trainable['elements']:,} weights, "
        f"{trainable['masked_tensors']} with fixed zeros), {section['seconds']:.1f} s",
        f"  {'block':<44} {'weights':>10} {'ep/best':<7} {'calibration loss':^22}"
        f" {'held-out (test) loss':^22} stopped",
    ]
    lines += [_row(row["block"], row) for row in section["blocks"]]
    if section.get("distillation"):
        lines.append(_row("end-to-end distillation", section["distillation"]))
    loss = section["output_loss"]
    lines.append(
        f"  model output loss: calibration {_loss(loss['calibration_before'])} -> "
        f"{_loss(loss['calibration_after'])}, held-out {_loss(loss['held_out_before'])} -> "
        f"{_loss(loss['held_out_after'])}"
    )
    lines += [f"  note: {note['block']}: {note['note']}" for note in section.get("notes", [])]
    before = section.get("before")
    if before:
        quality = before["quality"]
        accuracy = quality.get("accuracy_after")
        text = f", accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
        lines.append(
            f"  before repair: cosine {quality['cosine_mean']:.4f}{text} (the student against "
            "the teacher, on the verification data)"
        )
    return lines


def render_adapt(section: dict) -> list[str]:
    """Every adapt step, taken or refused, with the metric before and after."""
    lines = [f"Adapt: {section['model']}, {len(section['steps'])} step(s)"]
    for step in section["steps"]:
        after = "-" if step["after"] is None else f"{step['after']:.4f}"
        verdict = "taken" if step["taken"] else "refused"
        budget = "budget holds" if step["budget_holds"] else "budget broken"
        note = f" ({step['note']})" if step.get("note") else ""
        if step.get("dropped"):
            note += f" [dropped: {', '.join(step['dropped'])}]"
        lines.append(
            f"  {step['step'][:40]:<40} {step['before']:.4f} -> {after}  {verdict}, {budget}{note}"
        )
    return lines

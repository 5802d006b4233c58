"""File-level repair: load, check, train, write back; and the verified ``repair`` command.

``repair_file`` is the stage ``compress --repair`` runs between pruning and quantization;
``repair`` adds the verification of the result against the teacher (and of the student before
repair, so the report shows what repair gained) with the command's gates.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import check_distinct_output, model_files, uses_external_data
from onnxprune.normalize import load_normalized
from onnxprune.repair.extra import require_torch
from onnxprune.repair.options import RepairOptions
from onnxprune.verify import (
    Gates,
    VerifyOptions,
    prepare_verification,
    verified_report,
    verify_models,
)

__all__ = ["repair", "repair_file"]

logger = logging.getLogger(__name__)


def _summary(setup, section: dict) -> dict:
    trainable = setup.trainable.values()
    return {
        "options": setup.options.to_dict(),
        "samples": {
            "calibration": int(sum(len(c.indices) for c in setup.train)),
            "validation": int(sum(len(c.indices) for c in setup.validation)),
            "test": int(sum(len(c.indices) for c in setup.test)),
        },
        "trainable": {
            "tensors": len(setup.params),
            "elements": int(sum(p.numel() for p in setup.params.values())),
            "masked_tensors": sum(1 for t in trainable if t.masked),
        },
        "tasks": setup.tasks,
        "notes": setup.notes,
        **section,
    }


def repair_file(
    student: str | os.PathLike,
    teacher: str | os.PathLike,
    output: str | os.PathLike,
    options: RepairOptions,
) -> dict:
    """Repair ``student`` towards ``teacher`` into ``output``; return the report section."""
    options.validate()
    require_torch()
    from onnxprune.repair.engine import repair_weights, torch_settings
    from onnxprune.repair.setup import prepare
    from onnxprune.repair.writeback import write_back

    working = load_normalized(student)
    protected = model_files(student, working) + model_files(teacher)
    check_distinct_output(output, protected, uses_external_data(working))
    data = load_dataset(options.calibration, input_specs(working))
    with torch_settings(options.seed):
        setup = prepare(working, student, load_normalized(teacher), data, options)
        values, section = repair_weights(setup)
    masked = {name for name, t in setup.trainable.items() if t.masked}
    write_back(student, values, masked, output, protected)
    return _summary(setup, section)


def repair(
    student: str | os.PathLike,
    teacher: str | os.PathLike,
    output: str | os.PathLike,
    options: RepairOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
) -> dict:
    """Repair, then verify the result against the teacher; return the report."""
    options.validate()
    require_torch()
    gates, dataset = prepare_verification(teacher, verify_options, gates)
    before = verify_models(teacher, student, replace(verify_options, latency_runs=0), dataset)
    section = repair_file(student, teacher, output, options)
    section["before"] = {"model": str(Path(student)), "quality": before["quality"]}
    return verified_report(
        "repair", teacher, output, verify_options, dataset, gates, repair=section
    )

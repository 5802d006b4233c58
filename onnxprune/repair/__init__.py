"""Repair by distillation: a compressed model's weights learn back from the original.

Importing this package does not import torch: the engine modules (which do) are imported when a
repair runs, after ``require_torch`` has checked the ``repair`` extra is installed.
"""

from onnxprune.repair.api import repair, repair_file
from onnxprune.repair.extra import INSTALL_HINT, require_torch
from onnxprune.repair.options import RepairOptions

__all__ = ["INSTALL_HINT", "RepairOptions", "repair", "repair_file", "require_torch"]

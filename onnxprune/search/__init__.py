"""Budget-driven compression: search the most compressed model whose gates hold.

``auto_compress`` (``compress --auto``) searches per-layer sparsity, method and allocation on
a selection half of the evaluation data and confirms on the other half; ``run_sweep``
(``sweep``) verifies every combination of a grid and marks the Pareto front.
"""

from onnxprune.search.auto import auto_compress
from onnxprune.search.options import NO_CONFIGURATION, OBJECTIVES, SCHEDULES, AutoOptions

__all__ = ["NO_CONFIGURATION", "OBJECTIVES", "SCHEDULES", "AutoOptions", "auto_compress"]

"""Feed a ``Dataset`` to onnxruntime's calibrators (``CalibrationDataReader``)."""

from __future__ import annotations

from onnxruntime.quantization import CalibrationDataReader

from onnxprune.data import Dataset

__all__ = ["DatasetReader"]


class DatasetReader(CalibrationDataReader):
    """Batches of ``dataset`` in order; ``rewind`` starts over (GPTQ reads the data twice)."""

    def __init__(self, dataset: Dataset, batch_size: int = 16) -> None:
        self.batches = [
            dataset.slice(s, s + batch_size) for s in range(0, dataset.samples, batch_size)
        ]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0

    def __iter__(self):
        return iter(self.batches)

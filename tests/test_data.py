"""The .npz data format: every mismatch names the array; synthetic inputs follow the spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_MODELS

from onnxprune import InputError
from onnxprune.data import InputSpec, input_specs, load_dataset, synthetic_dataset
from onnxprune.model_io import load_model

SPECS = [InputSpec("input", np.dtype("float32"), ("batch", 1, 8, 8))]


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_fixture_data_matches_its_model() -> None:
    model, data = FIXTURE_MODELS["adult_mlp"]
    dataset = load_dataset(data, input_specs(load_model(model)))
    assert dataset.samples == 4000
    assert sorted(dataset.groups) == ["race", "sex"]
    assert set(np.unique(dataset.labels)) == {0, 1}


IMAGES = np.zeros((4, 1, 8, 8), np.float32)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"image": IMAGES}, "array 'image' is not a model input"),
        ({"label": np.zeros(4, np.int64)}, "no array named 'input'"),
        (
            {"input": IMAGES.astype(np.float64)},
            "array 'input' has dtype float64, the model expects float32",
        ),
        ({"input": np.zeros((4, 1, 8, 9), np.float32)}, "array 'input' has shape .*axis 3 differs"),
        ({"input": np.zeros((4, 64), np.float32)}, "array 'input' has shape .* expects rank 4"),
        ({"input": IMAGES, "label": np.zeros(3, np.int64)}, "different numbers of samples"),
        ({"input": IMAGES, "label": np.zeros(4, np.float32)}, "array 'label' must be"),
        ({"input": IMAGES, "group.sex": np.zeros(4, np.float32)}, "array 'group.sex' must be"),
        ({"input": IMAGES[:0]}, "holds no samples"),
    ],
    ids=[
        "unknown",
        "missing",
        "dtype",
        "trailing_shape",
        "rank",
        "lengths",
        "label_dtype",
        "group_dtype",
        "empty",
    ],
)
def test_mismatches_name_the_array(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_dataset(_npz(tmp_path, **arrays), SPECS)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = _npz(
        tmp_path, input=IMAGES, **{"group.sex": np.array(["a", 1, None, "b"], dtype=object)}
    )
    with pytest.raises(InputError, match="object arrays"):
        load_dataset(path, SPECS)


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_text("hello")
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        load_dataset(path, SPECS)


def test_fixed_batch_needs_whole_batches(tmp_path: Path) -> None:
    specs = [InputSpec("input", np.dtype("float32"), (2, 3))]
    with pytest.raises(InputError, match="not a multiple of the model's fixed batch size 2"):
        load_dataset(_npz(tmp_path, input=np.zeros((3, 3), np.float32)), specs)


def test_synthetic_inputs_follow_the_spec() -> None:
    specs = [
        InputSpec("input_ids", np.dtype("int64"), ("batch", "sequence")),
        InputSpec("attention_mask", np.dtype("int64"), ("batch", "sequence")),
        InputSpec("pixels", np.dtype("float32"), (1, 3, 4)),
    ]
    dataset = synthetic_dataset(specs, samples=5, seed=1)
    assert dataset.synthetic
    assert dataset.inputs["input_ids"].shape == (5, 16)
    assert dataset.inputs["input_ids"].min() >= 0 and dataset.inputs["input_ids"].max() < 100
    assert (dataset.inputs["attention_mask"] == 1).all()
    assert dataset.inputs["pixels"].shape == (5, 3, 4)
    again = synthetic_dataset(specs, samples=5, seed=1)
    assert all(np.array_equal(again.inputs[k], v) for k, v in dataset.inputs.items())


def test_synthetic_indices_stay_inside_their_table() -> None:
    import onnx_ir as ir
    from conftest import parse_model

    from onnxprune.data import index_bounds

    model = ir.serde.deserialize_model(
        parse_model(
            '<ir_version: 8, opset_import: ["" : 17]>\n'
            "agraph (int64[N, S] token_type_ids) => (float[N, S, 2] y) "
            "<float[2, 2] table = {1., 2., 3., 4.}> { y = Gather (table, token_type_ids) }"
        )
    )
    specs = input_specs(model)
    data = synthetic_dataset(specs, samples=64, bounds=index_bounds(model))
    assert index_bounds(model) == {"token_type_ids": 2}
    assert set(np.unique(data.inputs["token_type_ids"])) <= {0, 1}

"""Repair engine internals: constant folding in the interpreter, calibration loss on real
samples only, group-balanced steps, and where adapt grows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from test_repair import _pruned, _residual_mlp, _weights

from onnxprune.normalize import load_normalized
from onnxprune.repair import RepairOptions
from onnxprune.runtime import create_session


def _reshaping_model(path: Path) -> Path:
    """y = reshape(x, concat(c1, c2)) @ W: the target shape comes from Constant nodes only."""
    nodes = [
        helper.make_node("Constant", [], ["c1"], value_ints=[-1]),
        helper.make_node("Constant", [], ["c2"], value_ints=[8]),
        helper.make_node("Concat", ["c1", "c2"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["y"]),
    ]
    weight = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "reshaping",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def test_constant_only_nodes_are_folded_once_and_results_unchanged(tmp_path: Path) -> None:
    import torch

    from onnxprune.repair.program import GraphProgram

    path = _reshaping_model(tmp_path / "m.onnx")
    program = GraphProgram(load_normalized(path))
    folded = {program.nodes[i].op_type for i in program.folded}
    assert folded == {"Constant", "Concat"}  # the shape arithmetic, not Reshape or MatMul
    x = np.random.default_rng(1).standard_normal((5, 2, 4)).astype(np.float32)
    (expected,) = create_session(path, 1).run(["y"], {"x": x})
    weight = torch.nn.Parameter(program.constants["W"].clone())
    got = program.run({"x": torch.from_numpy(x)}, 0, len(program.nodes), {"W": weight})["y"]
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0


def _pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    weights = _weights()
    teacher = _residual_mlp(tmp_path / "teacher.onnx", weights)
    student = _residual_mlp(tmp_path / "student.onnx", _pruned(weights, 0.6))
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "calibration.npz", x=x)
    return teacher, student, tmp_path / "calibration.npz"


def test_calibration_loss_is_measured_on_real_samples_not_augmented_copies(tmp_path) -> None:
    from onnxprune.data import input_specs, load_dataset
    from onnxprune.repair.engine import torch_settings
    from onnxprune.repair.setup import prepare

    teacher, student, calibration = _pair(tmp_path)
    options = RepairOptions(calibration=str(calibration), augment=3, batch_size=8)
    model = load_normalized(student)
    data = load_dataset(str(calibration), input_specs(model))
    with torch_settings(0):
        setup = prepare(model, student, load_normalized(teacher), data, options)
    real = np.concatenate([c.indices for c in setup.calibration])
    everything = np.concatenate([c.indices for c in setup.train])
    assert len(everything) == 4 * len(real)  # three copies of every training sample
    assert real.max() < 64 and len(real) == len(set(real))  # only the real samples
    assert (everything >= 64).sum() == 3 * len(real)


def test_group_balanced_step_follows_the_running_worst_group_not_one_sample() -> None:
    import torch

    from onnxprune.repair.losses import Objective

    groups = {"g": np.array(["a", "a", "a", "b", "b", "b"])}
    objective = Objective(groups, beta=1.0)
    indices = np.arange(6)
    first = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert float(objective.step(first, indices)) == float(first.mean() + 1.0)
    # one sample of "b" is far off: the batch's max would be b's mean (2.0), but "a" has been
    # the worse group so far (running means a = 1.0, b = 0.2) and stays the one added
    second = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 6.0])
    assert float(objective.step(second, indices)) == float(second.mean() + 1.0)
    assert float(objective(second, indices)) == float(second.mean() + 2.0)  # exact when measured
    objective.reset()
    assert float(objective.step(second, indices)) == float(second.mean() + 2.0)


def test_adapt_chooses_where_to_grow_by_validation(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner
    from conftest import FIXTURE_MODELS, REPO

    from cli.main import main
    from onnxprune.repair.adapt import grow_candidates

    model, data = FIXTURE_MODELS["digits_mlp"]
    calibration = REPO / "fixtures" / "digits_mlp-calibration.npz"
    relus = ["/net/net.1/Relu_output_0", "/net/net.3/Relu_output_0"]
    assert grow_candidates(load_normalized(model)) == relus
    assert grow_candidates(load_normalized(model), limit=1) == relus[1:]
    pruned, report = tmp_path / "pruned.onnx", tmp_path / "adapt.json"
    args = ["prune", model, "-o", pruned, "--method", "magnitude", "--target-sparsity", "0.97"]
    assert CliRunner().invoke(main, [str(a) for a in args]).exit_code == 0
    args = [
        "adapt", pruned, "--teacher", model, "--calibration", calibration, "--data", data,
        "-o", tmp_path / "a.onnx", "--max-accuracy-drop", "0.0", "--lr", "1e-3", "--epochs", "2",
        "--latency-runs", "0", "--report", report,
    ]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output
    steps = json.loads(report.read_text())["adapt"]["steps"]
    grown = [s for s in steps if s["step"].startswith("grow")]
    assert [s["step"] for s in grown] == [f"grow --deeper {r} + repair" for r in relus]
    assert sum(s["taken"] for s in grown) <= 1
    for row in grown:  # a growth is taken only if it beats the other and the model before it
        better = all(row["after"] < other["after"] for other in grown if other is not row)
        assert row["taken"] == (better and row["after"] < row["before"])


def test_masked_adam_step_keeps_zeros_and_their_moments_at_zero() -> None:
    """The fused Adam step with 0/1 mask multipliers: pruned entries stay +0.0 (no sign flip),
    Adam's moments stay exactly 0 there, and the other entries learn."""
    import torch

    from onnxprune.repair.train import _adam, _step

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(6, 4, generator=generator)
    start[torch.rand(6, 4, generator=generator) < 0.5] = 0.0
    zeros = start == 0
    params = {"w": torch.nn.Parameter(start.clone())}
    kept = {"w": (~zeros).to(torch.float32)}
    optimizer = _adam(params, 1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    inputs, targets = torch.randn(5, 6, generator=generator), torch.randn(5, 4, generator=generator)
    for _ in range(10):
        loss = ((inputs @ params["w"] - targets) ** 2).mean()
        _step(params, kept, optimizer, scheduler, loss)
    weight = params["w"].detach()
    assert bool((weight[zeros] == 0).all()) and not bool(torch.signbit(weight[zeros]).any())
    state = optimizer.state[params["w"]]
    assert bool((state["exp_avg"][zeros] == 0).all())
    assert bool((state["exp_avg_sq"][zeros] == 0).all())
    assert bool((weight[~zeros] != start[~zeros]).all())

"""Channels through Concat/Split/Slice on real detectors (issue #8).

A YOLO-style detector built here in torch (seeded; C2f with and without shortcut, C3, SPPF, an
FPN Concat after nearest upsampling) and exported with torch's default settings, and, when
present, the corpus detectors (PP-OCRv4 det, the YOLOX-style ddddocr det). Each is pruned at 50%
of its channels; the result must pass the checker and load in onnxruntime (``prune_file``
checks both), and compute exactly what the original computes when every consumer ignores the
removed channels (their input positions zeroed, found through the groups' routed positions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import FIXTURES

import onnxprune
from onnxprune.normalize import load_normalized
from onnxprune.structured.dependency import find_channel_groups

HALF = onnxprune.StructuredOptions(target="channels", sparsity=0.5, round_to=1)
CORPUS = FIXTURES / "corpus" / ".cache" / "models"


def _detector(path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def conv(c1: int, c2: int, k: int = 1, s: int = 1) -> nn.Module:
        layers = [nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU()]
        return nn.Sequential(*layers)

    class Bottleneck(nn.Module):
        def __init__(self, c: int, shortcut: bool) -> None:
            super().__init__()
            self.cv1, self.cv2, self.add = conv(c, c, 3), conv(c, c, 3), shortcut

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):  # YOLOv8: Split in halves, the second through a bottleneck
        def __init__(self, c1: int, c2: int, shortcut: bool) -> None:
            super().__init__()
            self.cv1, self.m = conv(c1, c2), Bottleneck(c2 // 2, shortcut)
            self.cv2 = conv(3 * (c2 // 2), c2)

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            return self.cv2(torch.cat([*y, self.m(y[-1])], 1))

    class C3(nn.Module):  # YOLOv5 CSP: two branches joined by Concat
        def __init__(self, c1: int, c2: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = conv(c1, c2 // 2), conv(c1, c2 // 2)
            self.m, self.cv3 = Bottleneck(c2 // 2, True), conv(c2, c2)

        def forward(self, x):
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    class SPPF(nn.Module):
        def __init__(self, c1: int, c2: int) -> None:
            super().__init__()
            self.cv1, self.cv2, self.m = conv(c1, c1 // 2), conv(2 * c1, c2), nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.m(x)
            y2 = self.m(y1)
            return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.c2f, self.down = (
                conv(3, 16, 3, 2),
                C2f(16, 32, True),
                conv(32, 64, 3, 2),
            )
            self.c3, self.sppf, self.up = C3(64, 64), SPPF(64, 64), nn.Upsample(scale_factor=2.0)
            self.neck, self.head, self.head_small = (
                C2f(96, 32, False),
                nn.Conv2d(32, 6, 1),
                nn.Conv2d(64, 6, 1),
            )

        def forward(self, x):
            p3 = self.c2f(self.stem(x))
            p4 = self.sppf(self.c3(self.down(p3)))
            return self.head(self.neck(torch.cat((self.up(p4), p3), 1))), self.head_small(p4)

    torch.manual_seed(0)
    model = Detector()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # trained-looking statistics
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 32, 32),), str(path))


def _feeds(path: Path) -> dict[str, np.ndarray]:
    """Random inputs; symbolic dims are 1 for the batch and 64 elsewhere."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else (64 if i else 1) for i, d in enumerate(arg.shape)]
        feeds[arg.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def _ignoring_removed(path: Path, report: dict) -> bytes:
    """The original with every consumer's input positions of removed channels zeroed."""
    model = load_normalized(path)
    kept = {g["id"]: g["kept"] for g in report["pruning"]["groups"]}
    for group in find_channel_groups(model):
        if group.id not in kept:
            continue
        removed = np.setdiff1d(np.arange(group.units), kept[group.id])
        for piece in group.consumers:
            value = model.graph.initializers[piece.tensor]
            array = value.const_value.numpy().copy()
            index = [slice(None)] * array.ndim
            index[piece.axis] = group.removed_positions(piece, removed)
            array[tuple(index)] = 0
            value.const_value = ir.Tensor(array, name=piece.tensor)
    for name, value in model.graph.initializers.items():  # external data into memory
        value.const_value = ir.Tensor(value.const_value.numpy(), name=name)
    return ir.serde.serialize_model(model).SerializeToString()


def _assert_same_as_ignoring(original: Path, pruned: Path, report: dict) -> None:
    feeds = _feeds(original)
    providers = ["CPUExecutionProvider"]
    want = ort.InferenceSession(_ignoring_removed(original, report), providers=providers)
    got = ort.InferenceSession(str(pruned), providers=providers)
    for a, b in zip(got.run(None, feeds), want.run(None, feeds), strict=True):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    _detector(path)
    return path


def test_yolo_style_detector_prunes_through_concat_and_split(detector: Path, tmp_path: Path):
    report = onnxprune.prune_file(detector, tmp_path / "pruned.onnx", HALF)
    pruned = {g["id"]: g for g in report["pruning"]["groups"]}
    reasons = {g["id"]: g["reason"] for g in report["pruning"]["skipped"]}
    assert len(pruned) == 15  # 7 before channels followed Concat, Split and Resize
    assert sorted(reasons) == ["head.weight", "head_small.weight"]
    assert "graph output" in reasons["head.weight"]
    # C2f with shortcut: the second half of the Split and the bottleneck's output are one group
    c2f = pruned["c2f.cv1.0.weight"]
    assert c2f["producers"] == ["c2f.cv1.0.weight", "c2f.m.cv2.0.weight"]
    assert (c2f["units_before"], c2f["units_after"]) == (32, 16)
    halves = [sum(k < 16 for k in c2f["kept"]), sum(k >= 16 for k in c2f["kept"])]
    model = load_normalized(tmp_path / "pruned.onnx")
    split = next(node for node in model.graph if node.op_type == "Split")
    assert split.inputs[1].const_value.numpy().tolist() == halves
    bottleneck = model.graph.initializers["c2f.m.cv2.0.weight"].const_value.numpy()
    assert bottleneck.shape[0] == halves[1]
    _assert_same_as_ignoring(detector, tmp_path / "pruned.onnx", report)


# Groups pruned at the time of writing (before Concat/Split/Slice were followed: 44 and 24).
CORPUS_GROUPS = {"ddddocr_det": 65, "ppocr_det_v4": 25}


@pytest.mark.parametrize("name", sorted(CORPUS_GROUPS))
def test_corpus_detectors_prune_through_concat(name: str, tmp_path: Path) -> None:
    path = CORPUS / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"corpus model {name} not fetched (make corpus)")
    report = onnxprune.prune_file(path, tmp_path / "pruned.onnx", HALF)
    assert report["pruning"]["totals"]["groups"] >= CORPUS_GROUPS[name]
    routed = ("Concat", "Split", "Slice")
    assert not [s for s in report["pruning"]["skipped"] if any(w in s["reason"] for w in routed)]
    _assert_same_as_ignoring(path, tmp_path / "pruned.onnx", report)

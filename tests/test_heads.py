"""Attention heads on default (SDPA) Hugging Face exports by both torch exporters.

Models: a tiny BERT (2 layers x 4 heads) and a tiny Llama with grouped-query attention (2
layers, 4 query heads sharing 2 key/value heads), randomly initialised with transformers'
defaults and exported without ``attn_implementation``: the committed copies under
``fixtures/corpus/hf/`` when they are there, else exported once per session into a temporary
folder. Removing heads must compute exactly what the original computes when W_out ignores
them (their rows zeroed); a block that cannot lose heads is reported with its reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxprune.model_io import save_model
from onnxprune.normalize import NormalizeModelPass
from onnxprune.structured.heads import find_head_groups
from onnxprune.structured.pipeline import StructuredOptions, prune_structured

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "corpus" / "hf"
EXPORTS = ["bert_tiny_torchscript", "bert_tiny_dynamo"]
EXPORTS += ["llama_gqa_tiny_torchscript", "llama_gqa_tiny_dynamo"]
# name -> (layers, query heads, key/value heads, head size)
SIZES = {"bert_tiny": (2, 4, 4, 16), "llama_gqa_tiny": (2, 4, 2, 16)}


def _export(name: str, folder: Path) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name.startswith("bert"):
        config = transformers.BertConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=64,
        )  # fmt: skip
        network = transformers.BertModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            use_cache=False,
        )  # fmt: skip
        network = transformers.LlamaModel(config)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network.eval()

        def forward(self, input_ids, attention_mask):
            return self.network(input_ids=input_ids, attention_mask=attention_mask)[0]

    ids, mask = torch.randint(1, 1000, (2, 8)), torch.ones(2, 8, dtype=torch.int64)
    path = folder / name / "model.onnx"
    path.parent.mkdir(parents=True)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["out"]}
    if name.endswith("dynamo"):
        axes = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("sequence", min=2)}
        shapes = {"input_ids": axes, "attention_mask": axes}
        torch.onnx.export(
            Wrapper(), (ids, mask), str(path), dynamo=True, dynamic_shapes=shapes, **names
        )
    else:
        axes = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "out")}
        torch.onnx.export(
            Wrapper(), (ids, mask), str(path), dynamo=False, dynamic_axes=axes, **names
        )
    return path


def hf_exports(tmp_path_factory) -> dict[str, Path]:
    """Export name -> model path: the committed copy, else a fresh export (see the docstring)."""
    folder = tmp_path_factory.mktemp("hf")
    found = {}
    for name in EXPORTS:
        committed = CORPUS / name / "model.onnx"
        found[name] = committed if committed.exists() else _export(name, folder)
    return found


exports = pytest.fixture(scope="session", name="exports")(hf_exports)


def feed() -> dict[str, np.ndarray]:
    """Three sequences of 7 tokens, the last one padded after 4."""
    ids = np.random.default_rng(0).integers(1, 1000, (3, 7))
    mask = np.ones((3, 7), dtype=np.int64)
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: onnx.ModelProto | str) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feed())


def _heads(path: Path) -> list:
    model = ir.load(path)
    NormalizeModelPass()(model)
    return find_head_groups(model)


@pytest.mark.parametrize("name", EXPORTS)
def test_heads_found_on_default_exports(name: str, exports: dict[str, Path]) -> None:
    layers, heads, kv_heads, head_dim = SIZES[name.rsplit("_", 1)[0]]
    groups = _heads(exports[name])
    assert [g.blocked for g in groups] == [None] * layers
    assert [g.units for g in groups] == [kv_heads] * layers  # a unit: one key/value head
    assert sum(g.units * g.unit_size // head_dim for g in groups) == layers * heads


@pytest.mark.parametrize("name", EXPORTS)
def test_removing_heads_equals_zeroing_their_output_rows(
    name: str, exports: dict[str, Path], tmp_path: Path
) -> None:
    """Two of four query heads per layer go (with GQA: one key/value head and its two query
    heads); the pruned model must equal the original whose W_out rows for them are zero."""
    groups = _heads(exports[name])
    kept = {g.id: [0, 2] if g.units == 4 else [1] for g in groups}
    model = ir.load(exports[name])
    result = prune_structured(model, StructuredOptions(target="heads"), decisions=kept)
    assert sorted(g["id"] for g in result.pruned) == sorted(kept)
    save_model(model, tmp_path / "pruned.onnx")  # full checker and onnxruntime load
    original = onnx.load(str(exports[name]))
    tensors = {t.name: t for t in original.graph.initializer}
    for group in groups:
        out = tensors[group.consumers[0].tensor]
        rows = numpy_helper.to_array(out).copy()
        for unit in sorted(set(range(group.units)) - set(kept[group.id])):
            rows[unit * group.unit_size : (unit + 1) * group.unit_size] = 0
        out.CopyFrom(numpy_helper.from_array(rows, out.name))
    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    weights = {t.name: list(t.dims) for t in pruned.graph.initializer}
    query = groups[0].producers[0].tensor
    assert weights[query] == [64, 32]  # half the query heads left
    for got, expected in zip(_run(str(tmp_path / "pruned.onnx")), _run(original), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)


def _block(fault: str) -> onnx.ModelProto:
    """2-head attention over x[2, 3, 4] followed by a feed-forward layer, with one ``fault``."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3,4] x, float[4,4] wq, float[4,4] wk, float[4,4] wv, float[4,4] wo,
       float[4,8] w1, float[8,4] w2) => (float[2,3,4] y) {
        split = Constant<value = int64[4] {0, 0, 2, 2}>()
        merge = Constant<value = int64[3] {0, 0, 4}>()
        scale = Constant<value = float {0.7}>()
        qm = MatMul(x, wq)
        km = MatMul(x, wk)
        vm = MatMul(x, wv)
        qr = Reshape(qm, split)
        kr = Reshape(km, split)
        vr = Reshape(vm, split)
        q = Transpose<perm = [0, 2, 1, 3]>(qr)
        k = Transpose<perm = [0, 2, 3, 1]>(kr)
        v = Transpose<perm = [0, 2, 1, 3]>(vr)
        scores = MatMul(q, k)
        SCORES
        probs = Softmax<axis = AXIS>(masked)
        context = MatMul(probs, v)
        moved = Transpose<perm = [0, 2, 1, 3]>(context)
        merged = Reshape(moved, merge)
        attended = MatMul(merged, wo)
        hidden = MatMul(attended, w1)
        active = Relu(hidden)
        y = MatMul(active, w2)
        EXTRA
    }
    """
    scores = {
        "per_head_bias": "bias = Constant<value = float[1,2,1,1] {1, 2}>()\n"
        "masked = Add(scores, bias)",
        "head_count_read": "one = Constant<value = int64 {1}>()\n shape = Shape(q)\n"
        "count = Gather(shape, one)\n divisor = Cast<to = 1>(count)\n"
        "masked = Div(scores, divisor)",
    }.get(fault, "masked = Mul(scores, scale)")
    extra = {
        "context_reused": "total = ReduceSum<keepdims = 0>(context)\n y2 = Add(y, total)",
    }.get(fault, "")
    text = text.replace("SCORES", scores).replace("EXTRA", extra)
    text = text.replace("AXIS", "2" if fault == "softmax_axis" else "-1")
    if fault == "context_reused":
        text = text.replace("=> (float[2,3,4] y)", "=> (float[2,3,4] y, float[2,3,4] y2)")
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(1)
    for value in list(model.graph.input)[1:]:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        array = rng.standard_normal(shape).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(array, value.name))
    del model.graph.input[1:]
    onnx.checker.check_model(model, full_check=True)
    return model


REFUSALS = {
    "per_head_bias": "differs per head",
    "head_count_read": "read at run time and used by",
    "context_reused": "which follows the heads, is used by",
    "softmax_axis": "Softmax is not over the last axis",
}


@pytest.mark.parametrize("fault", sorted(REFUSALS))
def test_refused_attention_is_reported_with_its_reason(fault: str) -> None:
    model = ir.serde.deserialize_model(_block(fault))
    result = prune_structured(model, StructuredOptions(target="all", round_to=1))
    heads = [s for s in result.skipped if s["kind"] == "heads"]
    assert len(heads) == 1 and REFUSALS[fault] in heads[0]["reason"]
    assert {g["kind"] for g in result.pruned} == {"neurons"}  # the rest is still pruned


def test_the_same_block_without_a_fault_loses_a_head() -> None:
    """The fault-free block matches, so each refusal above is due to its fault alone."""
    model = ir.serde.deserialize_model(_block("none"))
    result = prune_structured(model, StructuredOptions(target="heads", sparsity=0.5))
    assert [(g["kind"], g["units_before"], g["units_after"]) for g in result.pruned] == [
        ("heads", 2, 1)
    ]

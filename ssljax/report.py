"""Tables and plots from finished runs: `python -m ssljax.report ROOT [ROOT ...] [--out DIR]`.

Every `results.json` (an evaluation run) and every pretraining run (a `config.json` whose
method is a pretraining method) under the given folders is collected; OUT (default
ROOT/report) receives:

  report.md              per dataset and model: test ACC and AUC, mean ± std over seeds, for
                         each protocol x label fraction x method; the gain over random init
                         (same dataset, model, protocol, fraction) paired by seed; reference
                         rows reported by the papers; the plots below
  results.csv            the same table at full precision
  runs.csv               one line per evaluation run
  label_efficiency.png   test AUC vs label fraction, a line per method
  pretraining_curves.png loss and kNN monitor of every pretraining run
  cross_correlation_<dataset>.png   Barlow Twins' matrix at init and after pretraining
  embeddings_<dataset>.png          PCA of test features, per method and random init
"""

import argparse
import csv
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssljax import writers

PRETRAIN_METHODS = ("barlow_twins", "simclr")
PROTOCOL_ORDER = ("finetune", "linear", "knn")
RANDOM = "random"
# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: ResNet-18 (28) trained from
# random initialisation on all labels, test (ACC, AUC) as reported by the paper. TissueMNIST
# is left out: the ACC figures available to us disagree (0.676 vs 0.681), one of them being
# the 224 px column.
MEDMNIST_V2_RESNET18_28 = {
    "pathmnist": (0.907, 0.983),
    "chestmnist": (0.947, 0.768),
    "dermamnist": (0.735, 0.917),
    "octmnist": (0.743, 0.943),
    "pneumoniamnist": (0.854, 0.944),
    "retinamnist": (0.524, 0.717),
    "breastmnist": (0.863, 0.901),
    "bloodmnist": (0.958, 0.998),
    "organamnist": (0.935, 0.997),
    "organcmnist": (0.900, 0.992),
    "organsmnist": (0.782, 0.972),
}
REFERENCES = (
    "[1] J. Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification, Scientific Data 10, 41 (2023), "
    "https://doi.org/10.1038/s41597-022-01721-8, Table 3, ResNet-18 (28): width 64, random "
    "init, all labels, Adam 1e-3, 100 epochs; the mean of at least three trials.",
    "[2] S. Doerrich et al., Rethinking model prototyping through the MedMNIST+ dataset "
    "collection, Scientific Reports (2025), https://arxiv.org/abs/2404.15786. Its linear "
    "probe and kNN rows for an ImageNet-pretrained ResNet-18 at 28 px are not shown: the "
    "per-dataset figures are published as images (the paper's tables; BENCHMARK.md of "
    "github.com/sdoerrich97/rethinking-model-prototyping-MedMNISTPlus) that we could not "
    "read, and we do not copy numbers we cannot check. Its kNN reports ACC only.",
)
CSV_FIELDS = (
    "dataset", "size", "model", "protocol", "method", "label_fraction", "n_labelled",
    "n_seeds", "seeds", "acc_mean", "acc_std", "auc_mean", "auc_std",
    "gain_acc_mean", "gain_acc_t", "gain_acc_n", "gain_acc_up",
    "gain_auc_mean", "gain_auc_t", "gain_auc_n", "gain_auc_up",
)  # fmt: skip


def dataset_label(name: str, size: int) -> str:
    """'breastmnist' at 28 px, 'breastmnist_64' otherwise (the sweep's naming)."""
    return name if size == 28 else f"{name}_{size}"


def _run_record(path: pathlib.Path) -> dict[str, Any]:
    r = json.loads(path.read_text())
    try:
        init = r["init"]
        method = RANDOM if init["kind"] == "random" else init.get("method", "pretrained")
        return {
            "workdir": str(path.parent),
            "dataset": dataset_label(r["dataset"], r["size"]),
            "size": r["size"],
            "model": f"{r['model']['name']} w{r['model']['width']}",
            "protocol": r["protocol"],
            "method": method,
            "label_fraction": float(r["label_fraction"]),
            "n_labelled": int(r["n_labelled"]),
            "seed": int(r["seed"]),
            "test_acc": float(r["test"]["acc"]),
            "test_auc": float(r["test"]["auc"]),
            "val_acc": float(r["val"]["acc"]),
            "val_auc": float(r["val"]["auc"]),
        }
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an ssljax results.json (field {e})") from e


def collect(paths: Sequence[str | pathlib.Path]) -> tuple[list[dict], list[dict]]:
    """(evaluation runs, pretraining runs) found under `paths` (run folders or roots).

    An evaluation run is a results.json record (flattened); a pretraining run is
    {workdir, dataset, method, seed, records (its metrics.jsonl)}.
    """
    # resolved path -> the path as found (relative paths stay relative in the report)
    results: dict[pathlib.Path, pathlib.Path] = {}
    configs: dict[pathlib.Path, pathlib.Path] = {}
    for p in map(pathlib.Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder of ssljax runs")
        results.update((q.resolve(), q) for q in p.rglob("results.json"))
        configs.update((q.resolve(), q) for q in p.rglob(writers.CONFIG_FILE))
    evals = [_run_record(results[q]) for q in sorted(results)]
    pretrains = []
    for q in map(configs.get, sorted(configs)):
        c = json.loads(q.read_text())
        if c.get("method") in PRETRAIN_METHODS:
            pretrains.append(
                {
                    "workdir": str(q.parent),
                    "dataset": dataset_label(c["data"]["name"], c["data"]["size"]),
                    "method": c["method"],
                    "seed": c["seed"],
                    "records": writers.read_metrics(q.parent),
                }
            )
    return evals, pretrains


def paired(ours: dict[int, float], base: dict[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: d = ours - base.

    Returns {n, mean (None when n = 0), t (paired t statistic, n - 1 degrees of freedom;
    None when n < 2 or all differences are equal), up (seeds with d > 0)}.
    """
    seeds = sorted(ours.keys() & base.keys())
    d = np.asarray([ours[s] - base[s] for s in seeds], np.float64)
    out: dict[str, Any] = {"n": len(d), "mean": None, "t": None, "up": int((d > 0).sum())}
    if len(d):
        out["mean"] = float(d.mean())
    if len(d) >= 2:
        sd = float(d.std(ddof=1))
        # Equal differences (up to float rounding of the scores) leave t undefined.
        if sd > 1e-9:
            out["t"] = out["mean"] / (sd / math.sqrt(len(d)))
    return out


def aggregate(evals: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per (dataset, model, protocol, method, label fraction): mean and sample std
    (ddof=1; None for one seed) of test ACC/AUC, and the paired gain over random init.

    Raises:
      ValueError: when two runs share a row and a seed (naming both folders).
    """
    groups: dict[tuple, dict[int, dict[str, Any]]] = {}
    for r in evals:
        key = (r["dataset"], r["model"], r["protocol"], r["method"], r["label_fraction"])
        seeds = groups.setdefault(key, {})
        if r["seed"] in seeds:
            raise ValueError(
                f"two runs of {key} with seed {r['seed']}: {seeds[r['seed']]['workdir']} and "
                f"{r['workdir']}; report them separately"
            )
        seeds[r["seed"]] = r
    rows = []
    for key, by_seed in groups.items():
        dataset, model, protocol, method, fraction = key
        row: dict[str, Any] = dict(
            zip(("dataset", "model", "protocol", "method", "label_fraction"), key, strict=True)
        )
        runs = [by_seed[s] for s in sorted(by_seed)]
        row.update(size=runs[0]["size"], seeds=sorted(by_seed), n_seeds=len(runs))
        row["n_labelled"] = sorted({r["n_labelled"] for r in runs})
        for metric in ("acc", "auc"):
            values = np.asarray([r[f"test_{metric}"] for r in runs], np.float64)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
            base = groups.get((dataset, model, protocol, RANDOM, fraction))
            row[f"gain_{metric}"] = (
                None
                if method == RANDOM or base is None
                else paired(
                    {s: r[f"test_{metric}"] for s, r in by_seed.items()},
                    {s: r[f"test_{metric}"] for s, r in base.items()},
                )
            )
        rows.append(row)
    return sorted(rows, key=_row_order)


def _row_order(row: dict[str, Any]) -> tuple:
    protocol = row["protocol"]
    p = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    methods = (RANDOM, *PRETRAIN_METHODS)
    m = methods.index(row["method"]) if row["method"] in methods else len(methods)
    return (row["dataset"], row["model"], p, protocol, row["label_fraction"], m, row["method"])


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def format_gain(gain: dict[str, Any] | None) -> str:
    """'+0.031 (t=2.10, 3/3 up)', '+0.031 (n=1)', or 'n/a' when not computable."""
    if gain is None or gain["mean"] is None:
        return "n/a"
    if gain["n"] < 2:
        return f"{gain['mean']:+.3f} (n=1)"
    t = "n/a" if gain["t"] is None else f"{gain['t']:.2f}"
    return f"{gain['mean']:+.3f} (t={t}, {gain['up']}/{gain['n']} up)"


def markdown_tables(rows: Sequence[dict[str, Any]]) -> str:
    """One table per (dataset, model), each followed by its reference rows."""
    out = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        mine = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        out += [
            f"### {dataset} ({mine[0]['size']} px) · {model}",
            "",
            "| protocol | labels | n labelled | method | seeds | test ACC | test AUC "
            "| ΔACC vs random | ΔAUC vs random |",
            "|---|---:|---:|---|---:|---|---|---|---|",
        ]
        for r in mine:
            n_lab = "–".join(str(n) for n in (r["n_labelled"][0], r["n_labelled"][-1]))
            if len(r["n_labelled"]) == 1:
                n_lab = str(r["n_labelled"][0])
            out.append(
                f"| {r['protocol']} | {r['label_fraction']:g} | {n_lab} | {r['method']} "
                f"| {r['n_seeds']} | {_mean_std(r['acc_mean'], r['acc_std'])} "
                f"| {_mean_std(r['auc_mean'], r['auc_std'])} | {format_gain(r['gain_acc'])} "
                f"| {format_gain(r['gain_auc'])} |"
            )
        name = dataset.split("_")[0]
        if mine[0]["size"] == 28 and name in MEDMNIST_V2_RESNET18_28:
            acc, auc = MEDMNIST_V2_RESNET18_28[name]
            out += [
                "",
                "Reference, reported by the paper (not run here):",
                "",
                "| source | setting | test ACC | test AUC |",
                "|---|---|---|---|",
                f"| MedMNIST v2 [1] | ResNet-18 (28), random init, all labels | {acc:.3f} "
                f"| {auc:.3f} |",
            ]
        out.append("")
    return "\n".join(out)


def write_csv(rows: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """`rows` at full precision; empty cells where a value is not computable."""
    path = pathlib.Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in rows:
            flat = {k: r[k] for k in CSV_FIELDS if k in r}
            flat["seeds"] = " ".join(map(str, r["seeds"]))
            flat["n_labelled"] = " ".join(map(str, r["n_labelled"]))
            for metric in ("acc", "auc"):
                gain = r[f"gain_{metric}"] or {}
                for k in ("mean", "t", "n", "up"):
                    flat[f"gain_{metric}_{k}"] = gain.get(k)
            w.writerow({k: "" if v is None else v for k, v in flat.items()})
    return path


def _write_runs_csv(evals: Sequence[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    fields = list(evals[0]) if evals else ["workdir"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(sorted(evals, key=lambda r: r["workdir"]))
    return path


def _sweep_lines(roots: Sequence[str | pathlib.Path]) -> list[str]:
    """Command, cell counts, wall time and machine of each root's sweep.json, if any."""
    lines = []
    for root in roots:
        path = pathlib.Path(root) / "sweep.json"
        if path.exists():
            s = json.loads(path.read_text())
            env = s.get("environment", {})
            lines += [
                f"Sweep `{s['command']}`: {s['counts']} in {s['wall_s'] / 60:.1f} min on "
                f"{env.get('cpu_count')} CPU cores ({env.get('platform')}), devices "
                f"{env.get('devices')}, jax {env.get('jax')}.",
                "",
            ]
    return lines


def make_report(
    runs: str | pathlib.Path | Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path | None = None,
    *,
    model_plots: bool = True,
) -> dict[str, pathlib.Path]:
    """Writes the report of the runs under `runs` to `out_dir` (default: first root/report).

    Args:
      model_plots: also draw the figures that load models (cross-correlation, embeddings).
    Returns:
      name -> path of every file written ('markdown', 'csv', 'runs_csv', plot names).
    """
    from ssljax import report_plots

    roots = [runs] if isinstance(runs, str | pathlib.Path) else list(runs)
    out = pathlib.Path(out_dir) if out_dir else pathlib.Path(roots[0]) / "report"
    evals, pretrains = collect(roots)
    if not evals and not pretrains:
        raise FileNotFoundError(f"no results.json or pretraining run under {roots}")
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(evals)
    paths = {"csv": write_csv(rows, out / "results.csv")}
    paths["runs_csv"] = _write_runs_csv(evals, out / "runs.csv")
    notes: list[str] = []
    if rows:
        paths["label_efficiency"] = report_plots.label_efficiency(
            rows, out / "label_efficiency.png"
        )
    if pretrains:
        paths["pretraining_curves"] = report_plots.pretraining_curves(
            pretrains, out / "pretraining_curves.png"
        )
    if model_plots:
        report_plots.model_figures(pretrains, out, paths, notes)
    figures = [f"![{k}]({p.name})" for k, p in paths.items() if p.suffix == ".png"]
    text = [
        "# ssljax report",
        "",
        f"{len(evals)} evaluation runs and {len(pretrains)} pretraining runs under "
        + ", ".join(f"`{r}`" for r in roots)
        + ".",
        "",
        "Test metrics (MedMNIST ACC and AUC) of the epoch or L2 strength chosen on val. ± is "
        "the sample standard deviation over seeds. Δ vs random: the mean paired difference to "
        "random init with the same dataset, model, protocol, label fraction and seed (so the "
        "same labelled subset); t is the paired t statistic (n - 1 degrees of freedom) and "
        "'k/n up' counts the seeds where the pretrained encoder scored higher; n/a where it "
        "cannot be computed (no random-init twin, fewer than 2 seeds, or equal differences).",
        "",
        *_sweep_lines(roots),
        markdown_tables(rows),
        *([f"- {n}" for n in notes] + [""] if notes else []),
        "## Plots",
        "",
        *figures,
        "",
        "## References",
        "",
        *[f"{r}\n" for r in REFERENCES],
    ]
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text("\n".join(text))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ssljax.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("roots", nargs="+", help="folders holding runs (searched recursively)")
    parser.add_argument("--out", default=None, help="output folder (default: ROOT/report)")
    parser.add_argument(
        "--no-model-plots", action="store_true", help="skip figures that load models"
    )
    args = parser.parse_args(argv)
    paths = make_report(args.roots, args.out, model_plots=not args.no_model_plots)
    print(markdown_tables(aggregate(collect(args.roots)[0])))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

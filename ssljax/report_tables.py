"""The report's text: the summary in words, the markdown tables, results.csv.

Everything here formats rows that `ssljax.report.aggregate` computed; no number is made here.
"""

import csv
import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

from ssljax import facts as methods  # the names only: the report imports no JAX

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
_GAIN_FIELDS = ("mean", "t", "n", "n_runs", "levels", "up", "lo", "hi", "boot_lo", "boot_hi")
CSV_FIELDS = (
    "dataset", "size", "model", "protocol", "method", "label_fraction", "n_labelled",
    "n_seeds", "seeds", "lr", "lr_tried", "acc_mean", "acc_std", "auc_mean", "auc_std",
    *(f"gain_acc_{k}" for k in _GAIN_FIELDS), *(f"gain_auc_{k}" for k in _GAIN_FIELDS),
    "verdict_acc", "verdict_auc", "pretraining", "confidence", "boot_n", "boot_redrawn",
    "boot_n_images",
    "low_n_val", "low_seeds", "low_acc_mean", "low_acc_std", "low_auc_mean", "low_auc_std",
    "gain_low_auc_mean", "gain_low_auc_n", "gain_low_auc_lo", "gain_low_auc_hi",
)  # fmt: skip
# The word of a comparison whose pretraining run failed its health verdict (ssljax.health):
# its numbers are shown, no gain or loss is worded from it.
PRETRAINING_FAILED = "pretraining failed"
VERDICTS = ("gain", "loss", "inconclusive", "untested", PRETRAINING_FAILED)


def method_label(method: str) -> str:
    """'barlow_twins:bn' -> 'BT BatchNorm only (random convs)'; other names unchanged."""
    base, _, variant = method.partition(":")
    if variant == methods.TRANSFERS["batchnorm"]:
        short = methods.METHODS[base].short if base in methods.METHODS else base
        return f"{short} BatchNorm only (random convs)"
    return method


def format_interval(interval: tuple[float, float] | None) -> str:
    """'[+0.004, +0.058]', or 'n/a'."""
    return "n/a" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def format_gain(gain: dict[str, Any] | None) -> str:
    """'+0.031 [+0.004, +0.058]' (mean and t interval), '+0.031 (n=1)', or 'n/a'."""
    if gain is None or gain["mean"] is None:
        return "n/a"
    if gain["n"] < 2:
        return f"{gain['mean']:+.3f} (n=1)"
    return f"{gain['mean']:+.3f} {format_interval(gain['ci'])}"


def _boot(gain: dict[str, Any] | None) -> str:
    return format_interval(gain and gain["boot"])


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _span(values: Sequence) -> str:
    return "–" if not values else "/".join(f"{v:g}" for v in values)


def _seeds(r: dict[str, Any]) -> str:
    """'6', or '6 (3 runs)' where the seeds came from several pretraining runs."""
    gain = r.get("gain_auc") or {}
    runs = f" ({gain['n_runs']} runs)" if gain.get("levels") == 2 else ""
    return f"{r['n_seeds']}{runs}"


def _n_range(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _main_table(mine: Sequence[dict[str, Any]]) -> list[str]:
    out = [
        "| protocol | labels | n labelled | method | pretraining | seeds (pretraining runs) | lr "
        "| test ACC "
        "| test AUC | ΔACC vs random [95% t] | ΔAUC vs random [95% t] | ΔACC bootstrap 95% "
        "| ΔAUC bootstrap 95% |",
        "|---|---:|---:|---|---|---:|---|---|---|---|---|---|---|",
    ]
    for r in mine:
        pretraining = r.get("pretraining") or ("–" if r["method"] != "random" else "")
        out.append(
            f"| {r['protocol']} | {r['label_fraction']:g} | {_n_range(r['n_labelled'])} "
            f"| {method_label(r['method'])} | {pretraining} | {_seeds(r)} "
            f"| {_span(r['lrs'])} "
            f"| {_mean_std(r['acc_mean'], r['acc_std'])} "
            f"| {_mean_std(r['auc_mean'], r['auc_std'])} | {format_gain(r['gain_acc'])} "
            f"| {format_gain(r['gain_auc'])} | {_boot(r['gain_acc'])} | {_boot(r['gain_auc'])} |"
        )
    return out


def _low_label_table(mine: Sequence[dict[str, Any]]) -> list[str]:
    rows = [r for r in mine if r["low_auc_mean"] is not None]
    if not rows:
        return []
    out = [
        "",
        "Chosen on a val subset scaled with the label budget (epoch, L2 strength and lr all "
        "selected by its AUC), test:",
        "",
        "| protocol | labels | method | n val | seeds | test AUC | ΔAUC vs random [95% t] |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['protocol']} | {r['label_fraction']:g} | {method_label(r['method'])} "
            f"| {_n_range(r['low_n_val'])} | {len(r['low_seeds'])} "
            f"| {_mean_std(r['low_auc_mean'], r['low_auc_std'])} "
            f"| {format_gain(r['gain_low_auc'])} |"
        )
    return out


def _reference_rows(dataset: str, size: int, model: str) -> list[str]:
    """The paper's row, and how its network and budget differ from this table's `model`."""
    name = dataset.split("_")[0]
    if size != 28 or name not in MEDMNIST_V2_RESNET18_28:
        return []
    acc, auc = MEDMNIST_V2_RESNET18_28[name]
    return [
        "",
        f"Reference, reported by the paper (not run here): a standard-width ResNet-18 (width "
        f"64; this table: {model}) trained from random initialisation for 100 epochs on all "
        "labels (this report: the epochs and steps of its fine-tuning plateau table), Adam 1e-3 "
        "[1]:",
        "",
        "| source | setting | test ACC | test AUC |",
        "|---|---|---|---|",
        f"| MedMNIST v2 [1] | ResNet-18 (28), random init, all labels | {acc:.3f} | {auc:.3f} |",
    ]


def markdown_tables(rows: Sequence[dict[str, Any]]) -> str:
    """One table per (dataset, model), then its label-budget val table and reference rows."""
    out = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        mine = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        out += [f"### {dataset} ({mine[0]['size']} px) · {model}", ""]
        out += _main_table(mine) + _low_label_table(mine)
        out += [*_reference_rows(dataset, mine[0]["size"], model), ""]
    return "\n".join(out)


def _claim(r: dict[str, Any], metric: str) -> str:
    """'finetune 0.1 barlow_twins (+0.100, t [+0.03, +0.17], bootstrap [...], 3 seeds)'."""
    gain = r[f"gain_{metric}"]
    what = f"{r['protocol']} {r['label_fraction']:g} {method_label(r['method'])}"
    if gain is None:
        return f"{what} (no random-init twin)"
    parts = [f"{gain['mean']:+.3f}", f"t {format_interval(gain['ci'])}"]
    if gain["boot"] is not None:
        parts.append(f"bootstrap {format_interval(gain['boot'])}")
    seeds = f"{gain['n']} seed{'s' * (gain['n'] != 1)}"
    if gain.get("levels") == 2:
        seeds += f" from {gain['n_runs']} pretraining runs"
    return f"{what} ({', '.join(parts)}, {seeds})"


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """'## Summary': per dataset and model, the comparisons with random init sorted by the
    words their intervals allow (stats.verdict), for AUC then ACC."""
    compared = [r for r in rows if r["method"] != methods.RANDOM]
    if not compared:
        return ["## Summary", "", "No method other than random init was evaluated.", ""]
    seeds = sorted({r["gain_auc"]["n"] for r in compared if r["gain_auc"]})
    level = round(100 * compared[0]["confidence"])
    boot = [r["bootstrap"] for r in compared if r["bootstrap"]]
    both = (
        f"and, where per-image test scores exist, the bootstrap interval over test images "
        f"({boot[0]['n_boot']} resamples) both lie"
        if boot
        else "lies (no per-image test scores: t intervals alone)"
    )
    out = [
        "## Summary",
        "",
        f"Paired gains over random init (same seeds, so the same labelled subsets), "
        f"{'/'.join(map(str, seeds)) or 'no'} seeds per comparison, {level}% confidence. "
        f"'gain' (or 'loss') only where the t interval (over pretraining runs where the seeds "
        f"came from 2 or more, else over seeds) {both} above (below) 0; "
        "otherwise 'inconclusive'; 'untested' with fewer than 2 seeds or no "
        "random-init twin; 'pretraining failed' where the encoder's pretraining run failed "
        "its health verdict (the pretraining health section says why): its numbers are "
        "shown, no gain or loss is claimed from it.",
        "",
    ]
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in compared):
        mine = [r for r in compared if (r["dataset"], r["model"]) == (dataset, model)]
        out.append(f"- **{dataset}** · {model}")
        for metric in ("auc", "acc"):
            for word in VERDICTS:
                claims = [_claim(r, metric) for r in mine if r[f"verdict_{metric}"] == word]
                if claims:
                    out.append(f"  - {metric.upper()} {word}: " + "; ".join(claims))
    return [*out, ""]


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    flat = {k: r.get(k) for k in CSV_FIELDS}
    for k in ("seeds", "n_labelled", "lrs", "lr_tried", "low_n_val", "low_seeds"):
        flat["lr" if k == "lrs" else k] = " ".join(map(str, r.get(k) or []))
    for metric in ("acc", "auc", "low_auc"):
        gain = r.get(f"gain_{metric}") or {}
        ci, boot = gain.get("ci") or (None, None), gain.get("boot") or (None, None)
        values = {**gain, "lo": ci[0], "hi": ci[1], "boot_lo": boot[0], "boot_hi": boot[1]}
        for k in _GAIN_FIELDS:
            if f"gain_{metric}_{k}" in flat:
                flat[f"gain_{metric}_{k}"] = values.get(k)
    boot = r.get("bootstrap") or {}
    flat.update(boot_n=boot.get("n_boot"), boot_redrawn=boot.get("redrawn"))
    flat["boot_n_images"] = boot.get("n_images")
    return flat


def write_csv(rows: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """`rows` at full precision; empty cells where a value is not computable or recorded."""
    path = pathlib.Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in _flat(r).items()})
    return path


def write_runs_csv(
    evals: Sequence[dict[str, Any]], chosen: set[str], path: pathlib.Path
) -> pathlib.Path:
    """One line per run, `selected` marking the runs the lr selection kept."""
    fields = [*evals[0], "selected"] if evals else ["workdir"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for r in sorted(evals, key=lambda r: r["workdir"]):
            w.writerow({**r, "selected": r["workdir"] in chosen})
    return path


def sweep_lines(roots: Sequence[str | pathlib.Path]) -> list[str]:
    """Command, cell counts, wall time and machine of each root's sweep.json, if any."""
    lines = []
    for root in roots:
        path = pathlib.Path(root) / "sweep.json"
        if path.exists():
            try:
                s = json.loads(path.read_bytes())
            except ValueError as e:
                logging.warning("%s is not JSON (%s): the report leaves it out", path, e)
                continue
            env = s.get("environment", {})
            lines += [
                f"Sweep `{s['command']}`: {s['counts']} in {s['wall_s'] / 60:.1f} min on "
                f"{env.get('cpu_count')} CPU cores ({env.get('platform')}), devices "
                f"{env.get('devices')}, jax {env.get('jax')}.",
                "",
            ]
    return lines


INTRO = (
    "Test metrics (MedMNIST ACC and AUC) of the epoch or L2 strength chosen on val; where "
    "several learning rates were run, the one with the best val AUC (ties: the smaller), for "
    "every method alike (column lr). ± is the sample standard deviation over seeds. Δ vs "
    "random: the mean paired difference to random init with the same dataset, model, "
    "protocol, label fraction and seed (so the same labelled subset), with its 95% t "
    "interval over seeds (n - 1 degrees of freedom); 'bootstrap': the 95% percentile "
    "interval of the same seed-mean gain over test images resampled with replacement (the "
    "same images for both arms and every seed). n/a where it cannot be computed (no "
    "random-init twin, fewer than 2 seeds, or no per-image test scores)."
)

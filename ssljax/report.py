"""Tables and plots from finished runs: `python -m ssljax.report ROOT [ROOT ...] [--out DIR]`.

Every `results.json` (an evaluation run) and every pretraining run (a `config.json` whose
method is a pretraining method) under the given folders is collected. Where a cell was run at
several learning rates (`train.base_lr`), each (dataset, model, protocol, method, label
fraction, seed) keeps the run with the best val AUC (ties: the smaller learning rate), for
random init as for every other method. OUT (default ROOT/report) receives:

  report.md              a summary in words (gain / loss / inconclusive, as the
                         intervals allow); per dataset and model: test ACC and AUC, mean ±
                         std over seeds, for each protocol x label fraction x method; the gain
                         over random init paired by seed with its 95% t interval over seeds
                         and its 95% bootstrap interval over test images (from each run's
                         test_scores.npz); the model chosen on a label-budget val subset, where
                         recorded; reference rows reported by the papers; the plots below
  results.csv            the same table at full precision
  runs.csv               one line per evaluation run (`selected`: kept by the lr selection)
  label_efficiency.png   test AUC vs label fraction, a line per method
  pretraining_curves.png loss and kNN monitor of every pretraining run
  finetune_curves.png    val AUC vs epoch of the selected fine-tuning runs (report_health)
  pretraining.csv        per pretraining run: loss, weight change, kNN and RankMe at 0 / end
  cross_correlation_<dataset>.png   Barlow Twins' matrix at init and after pretraining
  embeddings_<dataset>.png          PCA of test features, per method and random init
"""

import logging
import pathlib
import sys
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags

from ssljax import cli, errors, health, report_headline, stats
from ssljax import facts as methods  # the names only: the report imports no JAX
from ssljax.errors import DataError
from ssljax.facts import PROTOCOLS, RANDOM
from ssljax.report_headline import pretraining_runs
from ssljax.report_runs import (  # noqa: F401  (re-exported: callers use report.X)
    SCORES_FILE,
    collect,
)
from ssljax.report_tables import (  # noqa: F401  (re-exported: callers use report.X)
    INTRO,
    MEDMNIST_V2_RESNET18_28,
    PRETRAINING_FAILED,
    REFERENCES,
    format_gain,
    markdown_tables,
    summary_lines,
    sweep_lines,
    write_csv,
    write_runs_csv,
)

KEY_FIELDS = ("dataset", "model", "protocol", "method", "label_fraction")


def _best(runs: Sequence[dict[str, Any]], score: str) -> dict[str, Any] | None:
    """The run with the highest `score` (ties: the smaller base_lr); None if none has it."""
    scored = [r for r in runs if r[score] is not None]
    return min(scored, key=lambda r: (-r[score], r["base_lr"] or 0.0), default=None)


def select(evals: Sequence[dict[str, Any]], score: str = "val_auc") -> dict[tuple, dict]:
    """Learning-rate selection: row key -> {seed: the run with the best `score`}.

    Runs of one key and seed must differ in base_lr; every method, random init included, is
    selected alike. Keys without a run that has `score` are left out.

    Raises:
      DataError: when two runs share a row, a seed and a learning rate (or lack one),
        naming both folders.
    """
    candidates: dict[tuple, dict[int, list[dict[str, Any]]]] = {}
    for r in evals:
        key = tuple(r[k] for k in KEY_FIELDS)
        runs = candidates.setdefault(key, {}).setdefault(r["seed"], [])
        for other in runs:
            if None in (r["base_lr"], other["base_lr"]) or r["base_lr"] == other["base_lr"]:
                raise DataError(
                    f"two runs of {key} with seed {r['seed']}: "
                    f"{other['workdir']} and {r['workdir']}; report them separately"
                )
        runs.append(r)
    chosen = {
        key: {s: _best(runs, score) for s, runs in by_seed.items()}
        for key, by_seed in candidates.items()
    }
    return {
        key: {s: r for s, r in by_seed.items() if r is not None}
        for key, by_seed in chosen.items()
        if any(r is not None for r in by_seed.values())
    }


def _load_scores(path: str, cache: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores float32 [N, C], labels [N] or [N, L]) of a run's test_scores.npz; None, with a
    warning naming it, when it cannot be read."""
    if path not in cache:
        try:
            with np.load(path, allow_pickle=False) as f:
                cache[path] = (f["scores"], f["labels"])
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            logging.warning("%s cannot be read (%s): no bootstrap interval with it", path, e)
            cache[path] = None
    return cache[path]


def bootstrap(
    ours: dict[int, dict], base: dict[int, dict], n_boot: int, confidence: float, cache: dict
) -> dict[str, Any] | None:
    """stats.paired_bootstrap_ci over the seeds both arms have; None unless every paired run
    has its test_scores.npz, one task, and the same test labels."""
    seeds = sorted(ours.keys() & base.keys())
    runs = [by_seed[s] for by_seed in (ours, base) for s in seeds]
    if not seeds or any(r["scores_file"] is None for r in runs):
        return None
    if len({r["task"] for r in runs}) != 1 or runs[0]["task"] is None:
        return None
    loaded = [_load_scores(r["scores_file"], cache) for r in runs]
    if None in loaded:
        return None
    labels = loaded[0][1]
    if any(lab.shape != labels.shape or not np.array_equal(lab, labels) for _, lab in loaded):
        return None
    scores = np.stack([s for s, _ in loaded]).reshape(2, len(seeds), *loaded[0][0].shape)
    return stats.paired_bootstrap_ci(
        runs[0]["task"], labels, scores[0], scores[1], n_boot=n_boot, confidence=confidence
    )


def _by_seed(runs: dict[int, dict], field: str) -> dict[int, float]:
    return {s: r[field] for s, r in runs.items()}


def _low_label(row: dict, by_seed: dict, base: dict | None, confidence: float) -> None:
    """Adds the label-budget val selection's test metrics and paired AUC gain to `row`."""
    row.update(low_n_val=sorted({r["low_n_val"] for r in by_seed.values()}))
    row["low_seeds"] = sorted(by_seed)
    for metric in ("acc", "auc"):
        v = np.asarray([r[f"low_test_{metric}"] for r in by_seed.values()], np.float64)
        row[f"low_{metric}_mean"] = float(v.mean())
        row[f"low_{metric}_std"] = float(v.std(ddof=1)) if len(v) > 1 else None
    row["gain_low_auc"] = None
    if base is not None and row["method"] != RANDOM:
        field = "low_test_auc"
        mine, theirs = _by_seed(by_seed, field), _by_seed(base, field)
        row["gain_low_auc"] = stats.paired_gain(mine, theirs, confidence, pretraining_runs(by_seed))


def _test_metrics(row: dict, by_seed: dict, base: dict | None, confidence: float) -> None:
    """Adds mean, std, paired gain (t and bootstrap intervals) and verdict of test ACC/AUC."""
    for metric in ("acc", "auc"):
        field = f"test_{metric}"
        values = np.asarray([by_seed[s][field] for s in sorted(by_seed)], np.float64)
        row[f"{metric}_mean"] = float(values.mean())
        row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        gain, row[f"verdict_{metric}"] = None, None
        if row["method"] != RANDOM:
            row[f"verdict_{metric}"] = "untested"
        if base is not None:
            mine, theirs = _by_seed(by_seed, field), _by_seed(base, field)
            gain = stats.paired_gain(mine, theirs, confidence, pretraining_runs(by_seed))
            gain["boot"] = row["bootstrap"] and row["bootstrap"][metric]["interval"]
            row[f"verdict_{metric}"] = stats.verdict(gain["ci"], gain["boot"])
            if row["pretraining"] == "failed":  # numbers shown, never worded
                row[f"verdict_{metric}"] = PRETRAINING_FAILED
        row[f"gain_{metric}"] = gain


def _pretraining(runs: Sequence[dict[str, Any]]) -> str | None:
    """The worst pretraining verdict of a row's runs (None: random init, or not found)."""
    found = [r.get("pretrain_verdict") for r in runs if r.get("pretrain_verdict")]
    return max(found, key=health.VERDICTS.index) if found else None


def aggregate(
    evals: Sequence[dict[str, Any]], *, n_boot: int = 1000, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Rows per (dataset, model, protocol, method, label fraction), after the lr selection
    (`select`): mean and sample std (ddof=1; None for one seed) of test ACC/AUC; the paired
    gain over random init (`stats.paired_gain`, with its t interval) and `bootstrap` interval; the
    words they allow (`verdict_acc`, `verdict_auc`: stats.verdict; None for random init;
    'pretraining failed' where a run's pretraining has that health verdict); `pretraining`,
    the worst health verdict of the row's pretraining runs (`ssljax.health`);
    the label-budget val selection's test metrics and AUC gain (low_*; None where no run
    records it).

    Raises:
      DataError: when two runs share a row, a seed and a learning rate (naming both).
    """
    groups, low = select(evals), select(evals, "low_val_auc")
    tried: dict[tuple, set] = {}
    for r in evals:
        tried.setdefault(tuple(r[k] for k in KEY_FIELDS), set()).add(r["base_lr"])
    rows, cache = [], {}
    for key, by_seed in groups.items():
        row: dict[str, Any] = dict(zip(KEY_FIELDS, key, strict=True), confidence=confidence)
        runs = [by_seed[s] for s in sorted(by_seed)]
        row.update(size=runs[0]["size"], seeds=sorted(by_seed), n_seeds=len(runs))
        row["pretraining"] = _pretraining(runs)
        row["n_labelled"] = sorted({r["n_labelled"] for r in runs})
        row["lrs"] = sorted({r["base_lr"] for r in runs if r["base_lr"] is not None})
        row["lr_tried"] = sorted(lr for lr in tried[key] if lr is not None)
        base_key = (*key[:3], RANDOM, key[4])
        base = None if row["method"] == RANDOM else groups.get(base_key)
        row["bootstrap"] = base and bootstrap(by_seed, base, n_boot, confidence, cache)
        _test_metrics(row, by_seed, base, confidence)
        row["low_auc_mean"] = row["gain_low_auc"] = None
        if key in low:
            _low_label(row, low[key], low.get(base_key), confidence)
        rows.append(row)
    return sorted(rows, key=_row_order)


def _row_order(row: dict[str, Any]) -> tuple:
    protocol = row["protocol"]
    protocols = list(PROTOCOLS)
    p = protocols.index(protocol) if protocol in protocols else len(protocols)
    arms = (RANDOM, *methods.METHODS)
    m = arms.index(row["method"]) if row["method"] in arms else len(arms)
    return (row["dataset"], row["model"], p, protocol, row["label_fraction"], m, row["method"])


def _report(roots, out: pathlib.Path, model_plots: bool, n_boot: int):
    """make_report's work; also returns the aggregated rows."""
    from ssljax import report_health, report_plots

    evals, pretrains = collect(roots)
    if not evals and not pretrains:
        where = ", ".join(map(str, roots))
        raise DataError(
            f"no ssljax runs under {where}: a run's folder holds results.json (an evaluation) "
            "or config.json and metrics.jsonl (a pretraining run)"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(evals, n_boot=n_boot)
    selected = select(evals)
    chosen = {r["workdir"] for by_seed in selected.values() for r in by_seed.values()}
    paths = {"csv": write_csv(rows, out / "results.csv")}
    paths["runs_csv"] = write_runs_csv(evals, chosen, out / "runs.csv")
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
    health = report_health.sections(evals, chosen, pretrains, out, paths)
    figures = [f"![{k}]({p.name})" for k, p in paths.items() if p.suffix == ".png"]
    where = ", ".join(f"`{r}`" for r in roots)
    text = [
        "# ssljax report",
        "",
        f"{len(evals)} evaluation runs and {len(pretrains)} pretraining runs under {where}.",
        "",
        *summary_lines(rows),
        *report_headline.markdown(report_headline.headline(selected)),
        *report_headline.auc_table(selected),
        INTRO,
        "",
        *sweep_lines(roots),
        markdown_tables(rows),
        *([f"- {n}" for n in notes] + [""] if notes else []),
        *health,
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
    return paths, rows


def make_report(
    runs: str | pathlib.Path | Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path | None = None,
    *,
    model_plots: bool = True,
    n_boot: int = 1000,
) -> dict[str, pathlib.Path]:
    """Writes the report of the runs under `runs` to `out_dir` (default: first root/report).

    Args:
      model_plots: also draw the figures of the arrays pretraining runs wrote
        (cross-correlation, embeddings).
      n_boot: bootstrap resamples of the test images per paired gain.
    Returns:
      name -> path of every file written ('markdown', 'csv', 'runs_csv', plot names).
    """
    roots = [runs] if isinstance(runs, str | pathlib.Path) else list(runs)
    out = pathlib.Path(out_dir) if out_dir else pathlib.Path(roots[0]) / "report"
    return _report(roots, out, model_plots, n_boot)[0]


def define_flags(fv: flags.FlagValues) -> None:
    """The report's flags (absl), in `fv`; the run folders are its positional arguments."""
    flags.DEFINE_string("out", None, "output folder (default: ROOT/report)", flag_values=fv)
    flags.DEFINE_bool(
        "no-model-plots", False, "skip the cross-correlation and embedding figures", flag_values=fv
    )
    flags.DEFINE_integer("n-boot", 1000, "bootstrap resamples", flag_values=fv)
    flags.DEFINE_bool("verbose", False, "print tracebacks of errors", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; a problem with the runs ends in one line `error: ...` (exit 1)."""
    fv, roots = cli.parse(argv, define_flags, "python -m ssljax.report ROOT [ROOT ...] [--flags]")
    if not roots:
        cli.usage_error("name at least one folder holding runs: python -m ssljax.report ROOT")
    logging.basicConfig(format="%(levelname)s: %(message)s")
    out = pathlib.Path(fv.out) if fv.out else pathlib.Path(roots[0]) / "report"
    model_plots, n_boot = not fv["no-model-plots"].value, fv["n-boot"].value
    try:
        paths, rows = _report(roots, out, model_plots, n_boot)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - bugs are re-raised
        sys.exit(errors.report_failure(e, None, "from the start", fv.verbose))
    print(markdown_tables(rows))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

"""The headline a user wants: how many labels does a pretrained encoder save?

Per dataset, model, protocol and pretrained method: the smallest label budget at which its
mean test AUC reaches that of the same network fine-tuned from random initialisation on all
labels, with the paired difference's interval, and its gain over random init at 1% and 10%
of the labels. Computed from the lr-selected runs (`ssljax.report.select`); no number is
made here that `stats.paired_gain` did not compute.
"""

import os
from collections.abc import Sequence
from typing import Any

from ssljax import health, stats
from ssljax.facts import RANDOM
from ssljax.report_tables import PRETRAINING_FAILED

# The all-labels reference every budget is held against: random init, fine-tuned.
REFERENCE = ("finetune", RANDOM, 1.0)
GAIN_FRACTIONS = (0.01, 0.1)


def _auc(by_seed: dict[int, dict]) -> dict[int, float]:
    return {s: r["test_auc"] for s, r in by_seed.items()}


def pretraining_runs(by_seed: dict[int, dict]) -> dict[int, str]:
    """seed -> the pretraining run (its normalised workdir) an evaluation started from; the
    clusters of `stats.paired_gain` here and in `ssljax.report`."""
    return {s: os.path.normpath(r["init_workdir"]) for s, r in by_seed.items()}


def _failed(by_seed: dict[int, dict]) -> bool:
    return any(r.get("pretrain_verdict") == health.VERDICTS[-1] for r in by_seed.values())


def headline(groups: dict[tuple, dict[int, dict]], confidence: float = 0.95) -> list[dict]:
    """One entry per (dataset, model, protocol, method other than random init).

    Args:
      groups: (dataset, model, protocol, method, label fraction) -> {seed: run record}, as
        `ssljax.report.select` returns (records with test_auc, init_workdir and, where
        linked, pretrain_verdict).
      confidence: of every interval.
    Returns:
      dicts with dataset, model, protocol, method; `fractions` (the budgets evaluated,
      ascending) and per budget `vs_all` (stats.paired_gain of this arm's test AUC minus the
      reference's, paired by evaluation seed, clustered by pretraining run); `smallest`,
      the first budget whose `vs_all` mean is >= 0 (None: none reaches it); `gains`,
      fraction -> paired gain over random init under the same protocol and budget, for the
      fractions of GAIN_FRACTIONS evaluated; `failed`, whether a pretraining run failed its
      health verdict (then nothing is claimed from it). Datasets without the reference
      (random init fine-tuned on all labels) get no entry.
    """
    out = []
    arms = sorted({k[:4] for k in groups if k[3] != RANDOM})
    for dataset, model, protocol, method in arms:
        reference = groups.get((dataset, model, *REFERENCE))
        if reference is None:
            continue
        arm = (dataset, model, protocol, method)
        fractions = sorted(k[4] for k in groups if k[:4] == arm)
        entry: dict[str, Any] = dict(dataset=dataset, model=model, protocol=protocol)
        entry.update(method=method, fractions=fractions, vs_all={}, gains={}, smallest=None)
        entry["failed"] = False
        for f in fractions:
            mine = groups[(*arm, f)]
            entry["failed"] |= _failed(mine)
            runs = pretraining_runs(mine)
            diff = stats.paired_gain(_auc(mine), _auc(reference), confidence, runs)
            entry["vs_all"][f] = diff
            if entry["smallest"] is None and diff["mean"] is not None and diff["mean"] >= 0:
                entry["smallest"] = f
            twin = groups.get((dataset, model, protocol, RANDOM, f))
            if f in GAIN_FRACTIONS and twin is not None:
                entry["gains"][f] = stats.paired_gain(_auc(mine), _auc(twin), confidence, runs)
        out.append(entry)
    return out


def auc_table(groups: dict[tuple, dict[int, dict]], confidence: float = 0.95) -> list[str]:
    """'## Test AUC per arm': per dataset and model, protocol x label budget rows and one
    column per arm, each cell the mean test AUC and its interval: over pretraining runs
    (`stats.two_level_ci` on the AUCs themselves) where the seeds came from 2 or more, else
    a t interval over seeds. Random init's 'runs' are its seeds."""
    if not groups:
        return []
    arms = sorted({k[3] for k in groups}, key=lambda m: (m != RANDOM, m))
    out = [
        "## Test AUC per arm",
        "",
        f"Mean test AUC and its {round(100 * confidence)}% interval: over pretraining runs "
        "where the evaluation seeds started from 2 or more (two levels), else over seeds.",
        "",
    ]
    for dataset, model in dict.fromkeys(k[:2] for k in groups):
        out += [
            f"### {dataset} · {model}",
            "",
            f"| protocol | labels | {' | '.join(arms)} |",
            f"|---|---:|{'---|' * len(arms)}",
        ]
        rows = {k[2:5:2] for k in groups if k[:2] == (dataset, model)}
        for protocol, f in sorted(rows, key=_row_order):
            cells = []
            for arm in arms:
                by_seed = groups.get((dataset, model, protocol, arm, f))
                if by_seed is None:
                    cells.append("–")
                    continue
                seeds = sorted(by_seed)
                values = [by_seed[s]["test_auc"] for s in seeds]
                runs = [by_seed[s]["init_workdir"] or f"seed {s}" for s in seeds]
                two = stats.two_level_ci(values, runs, confidence)
                cells.append(f"{two['mean']:.3f} {_interval(two['ci'])} (n={len(seeds)})")
            out.append(f"| {protocol} | {f:g} | {' | '.join(cells)} |")
        out.append("")
    return out


def _row_order(protocol_fraction: tuple[str, float]) -> tuple:
    protocol, fraction = protocol_fraction
    order = ("finetune", "linear", "knn")
    return (order.index(protocol) if protocol in order else len(order), protocol, fraction)


def _interval(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _gain_text(gain: dict[str, Any] | None) -> str:
    if gain is None or gain["mean"] is None:
        return "–"
    ci = gain["ci"]
    interval = "n/a" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
    return f"{gain['mean']:+.3f} {interval}"


def markdown(entries: Sequence[dict[str, Any]]) -> list[str]:
    """'## Headline': the table of `headline`'s entries, or nothing without entries."""
    if not entries:
        return []
    out = [
        "## Headline: labels saved by pretraining",
        "",
        "Per protocol and pretrained method: the smallest label budget whose mean test AUC "
        "reaches that of random init *fine-tuned on all labels*, with the paired difference "
        "(this budget minus that reference, paired by evaluation seed) and its 95% interval "
        "('reaches' is the point estimate; an interval reaching below 0 means the data allow "
        "a shortfall); then the gain over random init under the same protocol at 1% and 10% "
        "of the labels. Intervals are over pretraining runs where there are 2 or more "
        "(stats.two_level_ci), else over evaluation seeds.",
        "",
        "| dataset | model | protocol | method | smallest budget reaching random init at 100% "
        "| its difference [95%] | gain at 1% [95%] | gain at 10% [95%] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e["failed"]:
            smallest, diff = PRETRAINING_FAILED, "–"
        elif e["smallest"] is None:
            best = max(e["fractions"])
            smallest, diff = "none", f"at {best:g}: {_gain_text(e['vs_all'][best])}"
        else:
            smallest, diff = f"{e['smallest']:g}", _gain_text(e["vs_all"][e["smallest"]])
        gains = [_gain_text(e["gains"].get(f)) for f in GAIN_FRACTIONS]
        out.append(
            f"| {e['dataset']} | {e['model']} | {e['protocol']} | {e['method']} | {smallest} "
            f"| {diff} | {' | '.join(gains)} |"
        )
    return [*out, ""]

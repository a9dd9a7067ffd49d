"""Did a pretraining run learn? The verdict every pretraining run ends with.

Movement is not learning: a recipe can turn every conv kernel 80 degrees from its
initialisation and still end at the collapsed fixed point of its loss (issue 20's screen,
`experiments/results/2026-12-06-bt_screen`). The verdict reads what learning means from a
run's `metrics.jsonl` alone (plain Python: the report and tests need no JAX):

    objective    Barlow Twins: the loss must fall clearly below the value of the collapsed
                 fixed point (`trap_loss`), and the mean diagonal of the cross-correlation
                 must rise; SimCLR: the positive-pair accuracy must rise. Both: the loss
                 must fall and stay finite.
    collapse     embedding RankMe (projector output) and feature RankMe (encoder output) of
                 the val images, at the last monitor against step 0's
    kNN          the kNN monitor's val AUC at the end against the same encoder at step 0

Each check is `ok`, `warning` or `failed` with a reason; the verdict is the worst of them.
It is written to `health.json` in the workdir (by `ssljax.pretrain`), printed as the run's last line
(`line`), shown by the report beside every gain, and a failed run is not evaluated by the
sweep unless asked.
"""

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

HEALTH_FILE = "health.json"
VERDICTS = ("healthy", "warning", "failed")
LAST_LOGS = 5  # the objective at the end: the mean of the last this many log records
# Barlow Twins: the end loss must be below this fraction of the collapsed fixed point's.
TRAP_FRACTION = 0.95
# The objective must improve by at least this much (diagonal of c; positive-pair accuracy).
MIN_OBJECTIVE_GAIN = 0.05
# RankMe at the end as a fraction of step 0's: below FAILED, collapsed; below WARN, suspect.
EMBEDDING_RANK_FAILED, EMBEDDING_RANK_WARN = 0.10, 0.20
FEATURE_RANK_FAILED, FEATURE_RANK_WARN = 0.10, 0.20
# kNN monitor val AUC at the end minus step 0's: below FAILED, pretraining made it worse.
KNN_FAILED = -0.02


def trap_loss(dim: int, lambd: float, scale: float = 1.0) -> float:
    """The Barlow Twins loss at its collapsed fixed point.

    When all `dim` embedding dimensions carry one shared feature with cross-view correlation
    rho, every entry of c is rho and the loss is `scale * (dim (1 - rho)^2 + lambd dim
    (dim - 1) rho^2)`, least at `rho* = 1 / (1 + lambd (dim - 1))`, where it equals
    `scale * dim * (1 - rho*)`. A run whose loss does not fall clearly below this has not
    left the one-feature solution.
    """
    rho = 1.0 / (1.0 + lambd * (dim - 1))
    return scale * dim * (1.0 - rho)


def objective_floor(config: Any) -> float | None:
    """The `trap_loss` of a pretraining config (a ConfigDict or its config.json dict) when
    its method is Barlow Twins, else None (also when the config lacks a key it needs)."""
    try:
        if config["method"] != "barlow_twins":
            return None
        loss = config["loss"]
        return trap_loss(config["model"]["projector_dims"][-1], loss["lambd"], loss["scale"])
    except (KeyError, TypeError, IndexError):  # a config.json from before these keys
        return None


def _check(status: str, name: str, reason: str) -> dict[str, str]:
    return {"check": name, "status": status, "reason": reason}


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in records) / len(records)


def _objective(logs, method: str, trap: float | None) -> list[dict[str, str]]:
    """The loss is finite and falls; Barlow Twins leaves its trap, diag c / accuracy rise."""
    first, end = logs[0], logs[-LAST_LOGS:]
    if any(_number(r["loss"]) is None for r in logs):
        return [_check("failed", "objective", "diverged: the loss became non-finite")]
    loss0, loss1 = float(first["loss"]), _mean(end, "loss")
    out = []
    if loss1 > 2 * abs(loss0):
        out.append(_check("failed", "objective", f"diverged: loss {loss0:.4g} -> {loss1:.4g}"))
    elif loss1 >= loss0:
        out.append(
            _check("failed", "objective", f"the loss did not fall ({loss0:.4g} -> {loss1:.4g})")
        )
    if trap is not None and loss1 >= TRAP_FRACTION * trap:
        out.append(
            _check(
                "failed",
                "objective",
                f"loss {loss1:.4g} is not below {TRAP_FRACTION:g} x the collapsed fixed point's "
                f"{trap:.4g}: every embedding dimension carries the same feature",
            )
        )
    key, what = (
        ("corr_diag_mean", "diagonal of c")
        if method == "barlow_twins"
        else (
            "contrastive_acc",
            "positive-pair accuracy",
        )
    )
    mine = [r for r in logs if key in r]
    if mine:
        v0 = _number(mine[0][key])
        v1 = _number(_mean(mine[-LAST_LOGS:], key)) if v0 is not None else None
        if v1 is None:
            out.append(_check("failed", "objective", f"the {what} became non-finite"))
        elif v1 - v0 < MIN_OBJECTIVE_GAIN:
            out.append(
                _check("failed", "objective", f"the {what} did not rise ({v0:.3f} -> {v1:.3f})")
            )
    return out or [_check("ok", "objective", f"loss {loss0:.4g} -> {loss1:.4g}")]


def _ratio_check(name: str, v0: float, v1: float, failed: float, warn: float) -> dict[str, str]:
    frac = v1 / v0 if v0 > 0 else float("nan")
    text = f"{name} RankMe {v0:.1f} -> {v1:.1f} ({frac:.0%} of step 0)"
    if not frac >= failed:
        return _check("failed", "collapse", f"collapsed: {text}")
    if frac < warn:
        return _check("warning", "collapse", f"rank fell: {text}")
    return _check("ok", "collapse", text)


def _number(x: Any) -> float | None:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def _monitors(monitors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Rank at the last monitor against step 0 (the first record), and the kNN monitor's
    gain; a value a record did not log is taken from the last one that did."""
    first = monitors[0]

    def ends(key: str) -> tuple[float, float] | None:
        """(step 0's value, the last logged one: NaN when non-finite), or None."""
        logged = [m[key] for m in monitors[1:] if m.get(key) is not None]
        v0 = _number(first.get(key))
        if v0 is None or not logged:
            return None
        last = _number(logged[-1])
        return v0, float("nan") if last is None else last

    out = []
    for name, key, failed, warn in (
        ("embedding", "embedding/rankme", EMBEDDING_RANK_FAILED, EMBEDDING_RANK_WARN),
        ("feature", "features/rankme", FEATURE_RANK_FAILED, FEATURE_RANK_WARN),
    ):
        pair = ends(key)
        if pair:
            out.append(_ratio_check(name, *pair, failed, warn))
    knn = ends("knn_auc")
    if knn:
        gain = knn[1] - knn[0]
        text = f"kNN val AUC {knn[0]:.3f} at step 0 -> {knn[1]:.3f}"
        status = "failed" if not gain >= KNN_FAILED else "warning" if gain <= 0 else "ok"
        reason = {
            "failed": f"worse than its own random initialisation: {text}",
            "warning": f"no better than its own random initialisation: {text}",
            "ok": text,
        }[status]
        out.append(_check(status, "knn", reason))
    return out


def verdict(
    records: Sequence[dict[str, Any]], method: str, trap: float | None = None
) -> dict[str, Any]:
    """The verdict of a pretraining run from its metrics.jsonl records.

    Args:
      records: the run's metrics.jsonl lines, in order (log records carry `loss`; monitor
        records carry `embedding/rankme`, `features/rankme` and, labelled, `knn_auc`).
      method: 'barlow_twins' or 'simclr'.
      trap: Barlow Twins' `trap_loss` for the run's config, None to skip that check.

    Returns:
      {'verdict': 'healthy' | 'warning' | 'failed', 'reasons': [the reasons of the worst
      checks], 'checks': [{check, status, reason}, ...]}.
    """
    logs = [r for r in records if "loss" in r]
    monitors = [r for r in records if "embedding/rankme" in r or "knn_auc" in r]
    checks = (
        _objective(logs, method, trap)
        if logs
        else [_check("failed", "objective", "no loss was logged")]
    )
    found = _monitors(monitors) if len(monitors) >= 2 and monitors[0].get("step") == 0 else []
    if found:
        checks += found
    else:
        reason = "no kNN/rank monitor at step 0 and later (log.monitor_every_epochs)"
        checks.append(_check("warning", "collapse", f"unchecked: {reason}"))
    rank = {"ok": 0, "warning": 1, "failed": 2}
    worst = max(rank[c["status"]] for c in checks)
    return {
        "verdict": VERDICTS[worst],
        "reasons": [c["reason"] for c in checks if rank[c["status"]] == worst],
        "checks": checks,
    }


def line(result: dict[str, Any]) -> str:
    """The run's last printed line: 'health: failed: <reason>; <reason>'."""
    return f"health: {result['verdict']}: " + "; ".join(result["reasons"])


def read_verdict(workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """A run's health.json, or None when it has none (unfinished, or from an older version)."""
    path = pathlib.Path(workdir) / HEALTH_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)

"""The pretraining verdict (ssljax.health): the trap value, and verdicts of fixed runs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ssljax import health, losses

LAMBD, SCALE, DIM = 0.0051, 0.1, 64


def test_trap_value_equals_the_loss_of_a_rank_one_embedding_at_its_best_correlation():
    """Every dimension carries one shared feature with cross-view correlation rho: the
    direct evaluation of the loss on such embeddings, minimised over rho, is `trap_loss`."""
    rng = np.random.default_rng(0)
    batch = 4096
    a, b = rng.normal(size=(batch, 1)), rng.normal(size=(batch, 1))
    a, b = (a - a.mean()) / a.std(), b - b.mean()
    b = b - a * (a * b).mean()  # exactly uncorrelated with a
    b = b / b.std()

    def loss_at(rho):
        shared2 = rho * a + np.sqrt(1 - rho**2) * b  # correlation rho with a, exactly
        z1, z2 = np.repeat(a, DIM, axis=1), np.repeat(shared2, DIM, axis=1)
        return float(losses.barlow_twins_loss(z1, z2, LAMBD, scale=SCALE))

    rhos = np.linspace(0.01, 0.99, 197)
    values = [loss_at(r) for r in rhos]
    best = int(np.argmin(values))
    trap = health.trap_loss(DIM, LAMBD, SCALE)
    rho_star = 1 / (1 + LAMBD * (DIM - 1))
    assert abs(rhos[best] - rho_star) <= 0.005 + 1e-9
    assert loss_at(rho_star) == pytest.approx(trap, rel=1e-4)
    assert min(values) >= trap * (1 - 1e-4)
    # The defaults' trap (2048-wide projector): 186.9 at rho* = 0.087, as issue 20 computed.
    assert health.trap_loss(2048, 0.0051, 0.1) == pytest.approx(186.9, abs=0.05)


def _run(loss, diag, emb=(349.0, 200.0), feat=(54.0, 30.0), knn=(0.916, 0.95), acc=None):
    """Fixed metrics.jsonl records: logs every 8 steps from `loss[0]` to `loss[1]` (and the
    diagonal of c / positive-pair accuracy likewise), monitors at step 0 and at the end."""
    records = [
        {"step": 0, "embedding/rankme": emb[0], "features/rankme": feat[0], "knn_auc": knn[0]}
    ]
    for i, t in enumerate(np.linspace(0, 1, 10)):
        r = {"step": 8 * (i + 1), "loss": loss[0] + t * (loss[1] - loss[0])}
        if diag is not None:
            r["corr_diag_mean"] = diag[0] + t * (diag[1] - diag[0])
        if acc is not None:
            r["contrastive_acc"] = acc[0] + t * (acc[1] - acc[0])
        records.append(r)
    records.append(
        {"step": 80, "embedding/rankme": emb[1], "features/rankme": feat[1], "knn_auc": knn[1]}
    )
    return records


TRAP = health.trap_loss(2048, 0.0051, 0.1)
CASES = {
    "healthy": (_run((213.0, 60.0), (0.05, 0.6)), "healthy", "loss 213 -> "),
    "collapsed": (
        _run((213.0, 189.0), (0.05, 0.10), emb=(349.0, 2.7), feat=(54.0, 3.8)),
        "failed",
        "collapsed: embedding RankMe 349.0 -> 2.7",
    ),
    "diverged": (_run((213.0, float("nan")), (0.05, 0.5)), "failed", "non-finite"),
    "exploded": (_run((213.0, 5000.0), (0.05, 0.01)), "failed", "diverged: loss 213"),
    "not moving": (_run((213.0, 213.5), (0.05, 0.05)), "failed", "did not fall"),
    "at the trap": (_run((213.0, 185.0), (0.05, 0.2)), "failed", "collapsed fixed point"),
    "kNN below step 0": (
        _run((213.0, 60.0), (0.05, 0.6), knn=(0.916, 0.87)),
        "failed",
        "worse than its own random initialisation",
    ),
    "rank fell": (_run((213.0, 60.0), (0.05, 0.6), feat=(54.0, 8.0)), "warning", "rank fell"),
    "diag of c non-finite": (
        _run((213.0, 60.0), (0.05, float("nan"))),
        "failed",
        "diagonal of c became non-finite",
    ),
    "rank non-finite at the end": (
        _run((213.0, 60.0), (0.05, 0.6), emb=(349.0, float("nan"))),
        "failed",
        "collapsed: embedding RankMe 349.0 -> nan",
    ),
    "kNN non-finite at the end": (
        _run((213.0, 60.0), (0.05, 0.6), knn=(0.916, float("nan"))),
        "failed",
        "worse than its own random initialisation",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_verdicts_of_fixed_runs(name):
    records, expected, reason = CASES[name]
    result = health.verdict(records, "barlow_twins", TRAP)
    assert result["verdict"] == expected, result
    assert any(reason in r for r in result["reasons"]), result
    assert health.line(result).startswith(f"health: {expected}: ")


def test_simclr_verdict_reads_the_positive_pair_accuracy():
    good = _run((5.0, 3.0), None, acc=(0.05, 0.6))
    assert health.verdict(good, "simclr")["verdict"] == "healthy"
    flat = _run((5.0, 4.9), None, acc=(0.05, 0.06))
    result = health.verdict(flat, "simclr")
    assert result["verdict"] == "failed"
    assert "positive-pair accuracy did not rise" in result["reasons"][0]


def test_logs_without_the_objective_key_are_read_past():
    """A log record without corr_diag_mean (written by another version) is no crash."""
    records = CASES["healthy"][0]
    gappy = [{k: v for k, v in r.items() if k != "corr_diag_mean"} if i == 5 else r
             for i, r in enumerate(records)]  # fmt: skip
    assert health.verdict(gappy, "barlow_twins", TRAP)["verdict"] == "healthy"


def test_a_run_without_monitors_is_a_warning_not_healthy():
    records = [r for r in CASES["healthy"][0] if "loss" in r]
    result = health.verdict(records, "barlow_twins", TRAP)
    assert result["verdict"] == "warning"
    assert "unchecked" in result["reasons"][0]


def test_objective_floor_reads_the_config(tmp_path):
    from configs import barlow, simclr

    config = barlow.get_config("breastmnist")
    assert health.objective_floor(config) == pytest.approx(
        health.trap_loss(config.model.projector_dims[-1], config.loss.lambd, config.loss.scale)
    )
    as_json = json.loads(json.dumps(config.to_dict()))
    assert health.objective_floor(as_json) == health.objective_floor(config)
    assert health.objective_floor(simclr.get_config("breastmnist")) is None


def test_health_needs_no_jax():
    code = "import sys, ssljax.health; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

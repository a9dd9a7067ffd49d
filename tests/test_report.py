"""ssljax.report on synthetic results (numbers checked exactly), and the quickstart end to end."""

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import chex
import numpy as np
import pytest
from scipy import stats

from ssljax import losses, report, report_plots

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (protocol, method, fraction) -> test (ACC, AUC) by seed.
SYNTHETIC = {
    ("finetune", "random", 0.1): {0: (0.70, 0.60), 1: (0.80, 0.70), 2: (0.75, 0.65)},
    ("finetune", "barlow_twins", 0.1): {0: (0.80, 0.75), 1: (0.78, 0.80), 2: (0.82, 0.70)},
    ("finetune", "random", 1.0): {0: (0.85, 0.88), 1: (0.86, 0.90)},
    # Differences to random are equal on both seeds: no t statistic.
    ("finetune", "simclr", 1.0): {0: (0.87, 0.89), 1: (0.88, 0.91)},
    ("knn", "random", 0.1): {0: (0.60, 0.55)},
    ("knn", "barlow_twins", 0.1): {0: (0.65, 0.70)},
    # No random-init twin: the gain is not computable.
    ("linear", "barlow_twins", 1.0): {0: (0.77, 0.81), 1: (0.79, 0.83)},
}


def write_results(root: pathlib.Path) -> None:
    """results.json files as evaluate.run writes them (the fields the report reads)."""
    for (protocol, method, fraction), by_seed in SYNTHETIC.items():
        for seed, (acc, auc) in by_seed.items():
            init = {"kind": "random", "workdir": ""}
            if method != "random":
                init = {"kind": "pretrained", "workdir": f"pt/{method}", "method": method}
            record = {
                "dataset": "breastmnist",
                "size": 28,
                "task": "binary-class",
                "protocol": protocol,
                "init": init,
                "label_fraction": fraction,
                "n_labelled": round(546 * fraction),
                "seed": seed,
                "model": {"name": "resnet18", "width": 8},
                "val": {"acc": acc - 0.01, "auc": auc - 0.01},
                "test": {"acc": acc, "auc": auc},
            }
            workdir = root / "eval" / protocol / method / f"f{fraction}-s{seed}"
            workdir.mkdir(parents=True)
            (workdir / "results.json").write_text(json.dumps(record))


def write_pretraining_run(root: pathlib.Path, method: str, seed: int) -> None:
    """config.json + metrics.jsonl of an (unfinished: no encoder/) pretraining run."""
    workdir = root / "pretrain" / f"{method}-s{seed}"
    workdir.mkdir(parents=True)
    config = {"method": method, "seed": seed, "data": {"name": "breastmnist", "size": 28}}
    (workdir / "config.json").write_text(json.dumps(config))
    lines = [{"step": s, "loss": 100.0 / s, "lr": 0.1, "epoch": s // 4} for s in range(4, 41, 4)]
    lines += [
        {"step": 20 * e, "epoch": 5 * e, "knn_acc": 0.7, "knn_auc": 0.6 + e / 10} for e in (1, 2)
    ]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def assert_png(path: pathlib.Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_results(root)
    write_pretraining_run(root, "barlow_twins", 0)
    write_pretraining_run(root, "simclr", 0)
    paths = report.make_report(root, root / "report")
    rows = report.aggregate(report.collect([root])[0])
    return root, paths, {(r["protocol"], r["method"], r["label_fraction"]): r for r in rows}


def test_means_stds_and_paired_gains(synthetic_report):
    _, _, rows = synthetic_report
    assert set(rows) == set(SYNTHETIC)
    for key, by_seed in SYNTHETIC.items():
        row = rows[key]
        values = np.asarray([by_seed[s] for s in sorted(by_seed)])
        assert row["seeds"] == sorted(by_seed) and row["n_seeds"] == len(by_seed)
        for i, metric in enumerate(("acc", "auc")):
            chex.assert_trees_all_close(row[f"{metric}_mean"], values[:, i].mean(), rtol=1e-12)
            if len(by_seed) > 1:
                std = values[:, i].std(ddof=1)
                chex.assert_trees_all_close(row[f"{metric}_std"], std, rtol=1e-12)
            else:
                assert row[f"{metric}_std"] is None
    # Barlow Twins vs random, fine-tuning at 10%: differences per seed by hand.
    d = np.asarray([0.75 - 0.60, 0.80 - 0.70, 0.70 - 0.65])
    gain = rows[("finetune", "barlow_twins", 0.1)]["gain_auc"]
    assert (gain["n"], gain["up"]) == (3, 3)
    chex.assert_trees_all_close(gain["mean"], d.mean(), rtol=1e-12)
    t_ref = stats.ttest_rel([0.75, 0.80, 0.70], [0.60, 0.70, 0.65]).statistic
    chex.assert_trees_all_close(gain["t"], t_ref, rtol=1e-9)
    chex.assert_trees_all_close(gain["t"], d.mean() / (d.std(ddof=1) / math.sqrt(3)), rtol=1e-12)
    acc_gain = rows[("finetune", "barlow_twins", 0.1)]["gain_acc"]
    assert (acc_gain["n"], acc_gain["up"]) == (3, 2)  # 0.78 < 0.80 on seed 1
    simclr = rows[("finetune", "simclr", 1.0)]["gain_auc"]
    assert simclr["n"] == 2 and simclr["t"] is None
    chex.assert_trees_all_close(simclr["mean"], 0.01, rtol=1e-9)
    knn = rows[("knn", "barlow_twins", 0.1)]["gain_auc"]
    assert knn["n"] == 1 and knn["t"] is None
    chex.assert_trees_all_close(knn["mean"], 0.15, rtol=1e-9)
    assert rows[("linear", "barlow_twins", 1.0)]["gain_auc"] is None
    assert rows[("finetune", "random", 0.1)]["gain_auc"] is None


def test_markdown_and_csv(synthetic_report):
    root, paths, rows = synthetic_report
    text = paths["markdown"].read_text()
    t = stats.ttest_rel([0.75, 0.80, 0.70], [0.60, 0.70, 0.65]).statistic
    t_acc = stats.ttest_rel([0.80, 0.78, 0.82], [0.70, 0.80, 0.75]).statistic
    expected_lines = [
        "| finetune | 0.1 | 55 | random | 3 | 0.750 ± 0.050 | 0.650 ± 0.050 | n/a | n/a |",
        f"| finetune | 0.1 | 55 | barlow_twins | 3 | 0.800 ± 0.020 | 0.750 ± 0.050 "
        f"| +0.050 (t={t_acc:.2f}, 2/3 up) | +0.100 (t={t:.2f}, 3/3 up) |",
        "| finetune | 1 | 546 | simclr | 2 | 0.875 ± 0.007 | 0.900 ± 0.014 "
        "| +0.020 (t=n/a, 2/2 up) | +0.010 (t=n/a, 2/2 up) |",
        "| knn | 0.1 | 55 | barlow_twins | 1 | 0.650 | 0.700 | +0.050 (n=1) | +0.150 (n=1) |",
        "| linear | 1 | 546 | barlow_twins | 2 | 0.780 ± 0.014 | 0.820 ± 0.014 | n/a | n/a |",
        "| MedMNIST v2 [1] | ResNet-18 (28), random init, all labels | 0.863 | 0.901 |",
    ]
    for line in expected_lines:
        assert line in text, line
    # Table order: finetune, linear, knn; random first within a fraction.
    order = [text.index(line) for line in expected_lines[:5]]
    assert order[:3] == sorted(order[:3]) and order[4] < order[3]
    assert "Doerrich" in text and "not shown" in text
    with paths["csv"].open() as f:
        table = {
            (r["protocol"], r["method"], float(r["label_fraction"])): r for r in csv.DictReader(f)
        }
    assert set(table) == set(rows)
    for key, row in rows.items():
        for field in ("acc_mean", "auc_mean"):
            assert float(table[key][field]) == row[field]
    bt = table[("finetune", "barlow_twins", 0.1)]
    assert float(bt["gain_auc_t"]) == rows[("finetune", "barlow_twins", 0.1)]["gain_auc"]["t"]
    assert (bt["gain_auc_n"], bt["gain_auc_up"], bt["seeds"]) == ("3", "3", "0 1 2")
    assert table[("knn", "random", 0.1)]["acc_std"] == ""
    with paths["runs_csv"].open() as f:
        assert len(list(csv.DictReader(f))) == sum(len(v) for v in SYNTHETIC.values())


def test_plots_from_numbers(synthetic_report):
    _, paths, _ = synthetic_report
    assert {"label_efficiency", "pretraining_curves"} <= set(paths)
    for name in ("label_efficiency", "pretraining_curves"):
        assert_png(paths[name])
    # Without exported encoders there is no model to draw from, and nothing is claimed.
    assert not any(k.startswith(("cross_correlation", "embeddings")) for k in paths)


def test_duplicate_seed_is_an_error(tmp_path):
    write_results(tmp_path / "a")
    write_results(tmp_path / "b")
    with pytest.raises(ValueError, match="with seed 0: .*a/eval.* and .*b/eval"):
        report.make_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        report.make_report(tmp_path)


def test_cross_correlation_matches_the_barlow_twins_loss():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 64, 16)) * rng.uniform(0.5, 2, size=(1, 16))
    c = report_plots._standardised_cross_correlation(z1, z2)
    off = c[~np.eye(16, dtype=bool)]
    loss = np.sum((1 - np.diag(c)) ** 2) + 0.0051 * np.sum(off**2)
    chex.assert_trees_all_close(
        loss,
        float(losses.barlow_twins_loss(z1.astype(np.float32), z2.astype(np.float32))),
        rtol=1e-4,
    )
    chex.assert_trees_all_close(
        report_plots._standardised_cross_correlation(z1, z1).diagonal(), 1.0, atol=1e-4
    )


def test_pca_matches_svd_of_centred_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1]) + 3.0
    xy = report_plots.pca_2d(x)
    chex.assert_shape(xy, (200, 2))
    chex.assert_trees_all_close(xy.mean(0), np.zeros(2), atol=1e-10)
    cov = np.cov(x, rowvar=False)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1][:2]
    chex.assert_trees_all_close(np.var(xy, axis=0, ddof=1), top, rtol=1e-10)
    chex.assert_trees_all_close(xy[:, 0] @ xy[:, 1], 0.0, atol=1e-6)


@pytest.mark.slow
def test_quickstart_runs_in_ci_setting(tmp_path):
    """The README's quickstart with the tiny grid: one real (tiny) pretraining run,
    fine-tuning and kNN, the report and all of its plots, model figures included."""
    root = tmp_path / "qs"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.quickstart",
            f"--grid={REPO / 'experiments/grids/quickstart.py'}:tiny",
            f"--root={root}",
            "--noprogress",
        ],
        cwd=REPO,
        # One CPU device, as a user runs it: the suite's 8 simulated devices only slow the
        # compilation of every cell on a 2-core machine.
        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "9 done" in out.stdout
    assert "| finetune | 0.1 | 55 | random | 1 |" in out.stdout
    assert "| knn | 1 | 546 | barlow_twins | 1 |" in out.stdout
    report_dir = root / "report"
    for name in (
        "label_efficiency",
        "pretraining_curves",
        "cross_correlation_breastmnist",
        "embeddings_breastmnist",
    ):
        assert f"{report_dir / name}.png" in out.stdout
        assert_png(report_dir / f"{name}.png")
    text = (report_dir / "report.md").read_text()
    assert "could not be drawn" not in text
    assert json.loads((root / "sweep.json").read_text())["counts"] == {"done": 9}

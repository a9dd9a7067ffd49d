"""ssljax.report on synthetic results (numbers checked exactly), and the quickstart end to end."""

import csv
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import chex
import numpy as np
import pytest
from scipy import stats

from ssljax import errors, losses, metrics, report, report_plots, report_tables, representations
from ssljax import stats as stats_module

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


def test_a_folder_pretraining_run_is_named_after_its_folder(tmp_path):
    """Its config.json keeps data.name's default 'pathmnist'; tables and plot file names
    (`cross_correlation_<dataset>.png`) say the folder's name."""
    write_pretraining_run(tmp_path, "barlow_twins", 0)
    path = tmp_path / "pretrain" / "barlow_twins-s0" / "config.json"
    config = json.loads(path.read_text())
    config["data"] = {"name": "pathmnist", "size": 64, "folder": "/data/chest_xrays"}
    path.write_text(json.dumps(config))
    (pretraining,) = report.collect([tmp_path])[1]
    assert pretraining["dataset"] == "chest_xrays_64"


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


def _t_interval(ours, base):
    d = np.subtract(ours, base)
    return stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))


def _iv(interval) -> str:
    return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def test_markdown_and_csv(synthetic_report):
    root, paths, rows = synthetic_report
    text = paths["markdown"].read_text()
    auc = _t_interval([0.75, 0.80, 0.70], [0.60, 0.70, 0.65])
    acc = _t_interval([0.80, 0.78, 0.82], [0.70, 0.80, 0.75])
    expected_lines = [
        "| finetune | 0.1 | 55 | random |  | 3 | – | 0.750 ± 0.050 | 0.650 ± 0.050 | n/a | n/a "
        "| n/a | n/a |",
        f"| finetune | 0.1 | 55 | barlow_twins | – | 3 | – | 0.800 ± 0.020 | 0.750 ± 0.050 "
        f"| +0.050 {_iv(acc)} | +0.100 {_iv(auc)} | n/a | n/a |",
        "| finetune | 1 | 546 | simclr | – | 2 | – | 0.875 ± 0.007 | 0.900 ± 0.014 "
        "| +0.020 [+0.020, +0.020] | +0.010 [+0.010, +0.010] | n/a | n/a |",
        "| knn | 0.1 | 55 | barlow_twins | – | 1 | – | 0.650 | 0.700 | +0.050 (n=1) | +0.150 (n=1) "
        "| n/a | n/a |",
        "| linear | 1 | 546 | barlow_twins | – | 2 | – | 0.780 ± 0.014 | 0.820 ± 0.014 | n/a | n/a "
        "| n/a | n/a |",
        "| MedMNIST v2 [1] | ResNet-18 (28), random init, all labels | 0.863 | 0.901 |",
    ]
    for line in expected_lines:
        assert line in text, line
    # Table order: finetune, linear, knn; random first within a fraction.
    order = [text.index(line) for line in expected_lines[:5]]
    assert order[:3] == sorted(order[:3]) and order[4] < order[3]
    assert "Doerrich" in text and "not shown" in text
    # Old runs: no learning rate, no label-budget val selection, no per-image scores.
    assert "val subset scaled with the label budget" not in text
    summary = text[text.index("## Summary") : text.index("### breastmnist")]
    # Up on 3 of 3 seeds, yet the t interval holds 0 (no bootstrap here): no claim.
    assert auc[0] < 0 < auc[1]
    claim = f"finetune 0.1 barlow_twins (+0.100, t {_iv(auc)}, 3 seeds)"
    assert f"AUC inconclusive: {claim}" in summary
    assert "gain: finetune 0.1 barlow_twins" not in summary
    assert "knn 0.1 barlow_twins (+0.150, t n/a, 1 seed)" in summary
    untested = next(line for line in summary.splitlines() if "AUC untested:" in line)
    # Equal differences on both seeds: a zero-width t interval carries no claim.
    assert "finetune 1 simclr (+0.010, t [+0.010, +0.010]" in untested
    assert "linear 1 barlow_twins (no random-init twin); knn" in untested
    assert "no per-image test scores: t intervals alone" in summary
    assert "linear 1 barlow_twins (no random-init twin)" in summary
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
    chex.assert_trees_all_close(
        (float(bt["gain_auc_lo"]), float(bt["gain_auc_hi"])), auc, rtol=1e-12
    )
    assert (bt["gain_auc_boot_lo"], bt["verdict_auc"], bt["lr"]) == (
        "",
        "inconclusive",
        "",
    )
    assert table[("knn", "random", 0.1)]["acc_std"] == ""
    assert table[("finetune", "random", 0.1)]["verdict_auc"] == ""
    with paths["runs_csv"].open() as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == sum(len(v) for v in SYNTHETIC.values())
    assert all(r["selected"] == "True" and r["scores_file"] == "" for r in runs)


# Per-image scores: a binary test set, 3 seeds, fine-tuning at 10% of the labels.
N_TEST = 120
SEEDS = (0, 1, 2)
# How strongly each method's scores follow the labels (random init's runs: 0.4).
SIGNAL = {"random": 0.4, "barlow_twins": 1.0, "barlow_twins:bn": 0.0}
# (method, seed) -> {base_lr: full-val AUC}; the best is the lr chosen (ties: the smaller).
VAL_AUC = {
    **{("random", s): {1e-3: 0.70, 3e-3: 0.60} for s in SEEDS},
    ("random", 0): {1e-3: 0.60, 3e-3: 0.70},
    **{("barlow_twins", s): {1e-3: 0.80, 3e-3: 0.90} for s in SEEDS},
    ("barlow_twins", 1): {1e-3: 0.85, 3e-3: 0.85},
    **{(m, s): {1e-3: 0.75} for m in ("simclr", "barlow_twins:bn") for s in SEEDS},
}
CHOSEN_LR = {
    **{("random", s): 1e-3 for s in SEEDS},
    ("random", 0): 3e-3,
    **{("barlow_twins", s): 3e-3 for s in SEEDS},
    ("barlow_twins", 1): 1e-3,
    **{(m, s): 1e-3 for m in ("simclr", "barlow_twins:bn") for s in SEEDS},
}
# The label-budget val subset prefers the other lr for random init on seed 2.
LOW_VAL_FLIP = ("random", 2)


def _binary_scores(labels, signal, rng):
    """float32 [N, 2] softmax-like scores whose positive column follows labels by `signal`."""
    p = (signal * labels + rng.random(len(labels))) / (1.0 + abs(signal))
    return np.stack([1 - p, p], axis=1).astype(np.float32)


def write_scored_results(root: pathlib.Path) -> dict:
    """results.json + test_scores.npz of runs as evaluate.run now writes them.

    Returns (method, seed, lr) -> {'scores', 'test', 'low_test'} of every run written. A run
    not chosen by the lr selection scores at chance, so choosing it would show.
    """
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N_TEST)
    written = {}
    for (method, seed), val_by_lr in VAL_AUC.items():
        for lr, val_auc in val_by_lr.items():
            chosen = CHOSEN_LR[(method, seed)] == lr
            if method == "simclr":  # random init's chosen scores, slightly perturbed
                base = written[("random", seed, CHOSEN_LR[("random", seed)])]["scores"]
                scores = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
            else:
                scores = _binary_scores(labels, SIGNAL[method] if chosen else 0.0, rng)
            test = metrics.evaluate("binary-class", labels, scores)
            low_val = val_auc + (0.2 if (method, seed) == LOW_VAL_FLIP and not chosen else 0)
            low_test = {"acc": test["acc"] - 0.05, "auc": test["auc"] - 0.01 * (1 + seed)}
            init = {"kind": "random", "workdir": ""}
            if method != "random":
                init = {"kind": "pretrained", "workdir": "pt", "method": method}
            record = {
                "dataset": "pneumoniamnist",
                "size": 28,
                "task": "binary-class",
                "protocol": "finetune",
                "init": init,
                "label_fraction": 0.1,
                "n_labelled": 471,
                "seed": seed,
                "model": {"name": "resnet18", "width": 8},
                "train": {"base_lr": lr, "epochs": 10},
                "val": {"acc": 0.7, "auc": val_auc},
                "test": test,
                "selection": {
                    "full_val": {"val": {"acc": 0.7, "auc": val_auc}, "test": test},
                    "low_label_val": {
                        "n_val": 52,
                        "val": {"acc": 0.6, "auc": low_val},
                        "test": low_test,
                    },
                },
            }
            workdir = root / method.replace(":", "_") / f"s{seed}-lr{lr:g}"
            workdir.mkdir(parents=True)
            (workdir / "results.json").write_text(json.dumps(record))
            np.savez(workdir / report.SCORES_FILE, scores=scores, labels=labels)
            written[(method, seed, lr)] = {"scores": scores, "test": test, "low_test": low_test}
    return written


@pytest.fixture(scope="module")
def scored_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("scored")
    written = write_scored_results(root)
    paths = report.make_report(root, root / "report", model_plots=False, n_boot=200)
    rows = report.aggregate(report.collect([root])[0], n_boot=200)
    return root, paths, written, {r["method"]: r for r in rows}


def _chosen(written, method, field="test", lrs=CHOSEN_LR):
    return [written[(method, s, lrs[(method, s)])][field] for s in SEEDS]


def test_lr_selection_picks_the_best_val_auc_for_every_arm(scored_report):
    root, paths, written, rows = scored_report
    for method, row in rows.items():
        tests = _chosen(written, method)
        assert row["seeds"] == list(SEEDS)
        assert row["lrs"] == sorted({CHOSEN_LR[(method, s)] for s in SEEDS})
        assert row["lr_tried"] == sorted(VAL_AUC[(method, 0)])
        chex.assert_trees_all_close(row["auc_mean"], np.mean([t["auc"] for t in tests]))
    with paths["runs_csv"].open() as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == sum(len(v) for v in VAL_AUC.values())
    selected = {
        (r["method"], int(r["seed"]), float(r["base_lr"])) for r in runs if r["selected"] == "True"
    }
    assert selected == {(m, s, lr) for (m, s), lr in CHOSEN_LR.items()}
    # The label-budget val subset selects again, on its own AUC.
    low_lrs = {**CHOSEN_LR, LOW_VAL_FLIP: 3e-3}
    low = [t["auc"] for t in _chosen(written, "random", "low_test", low_lrs)]
    chex.assert_trees_all_close(rows["random"]["low_auc_mean"], np.mean(low))
    bt_low = [t["auc"] for t in _chosen(written, "barlow_twins", "low_test")]
    _, interval = report.stats.paired_t_ci(np.subtract(bt_low, low))
    gain = rows["barlow_twins"]["gain_low_auc"]
    chex.assert_trees_all_close(
        (gain["mean"], gain["ci"]), (np.mean(bt_low) - np.mean(low), interval)
    )


def test_intervals_and_words_from_per_image_scores(scored_report):
    root, paths, written, rows = scored_report
    text = paths["markdown"].read_text()
    base = np.stack(_chosen(written, "random", "scores"))
    words = {"barlow_twins": "gain", "simclr": "inconclusive"}
    words["barlow_twins:bn"] = "loss"
    for method, word in words.items():
        row = rows[method]
        boot = stats_module.paired_bootstrap_ci(
            "binary-class",
            np.load(next(root.glob("random/s0-*/test_scores.npz")))["labels"],
            np.stack(_chosen(written, method, "scores")),
            base,
            n_boot=200,
        )
        auc = _t_interval(
            [t["auc"] for t in _chosen(written, method)],
            [t["auc"] for t in _chosen(written, "random")],
        )
        gain = row["gain_auc"]
        chex.assert_trees_all_close(gain["ci"], auc, rtol=1e-12)
        assert gain["boot"] == boot["auc"]["interval"] and row["bootstrap"]["n_boot"] == 200
        chex.assert_trees_all_close(boot["auc"]["mean"], gain["mean"], rtol=1e-9)
        assert row["verdict_auc"] == word
        name = report_tables.method_label(method)
        assert f"| {name} | – | 3 | 0.001 |" in text or f"| {name} | – | 3 | 0.001/0.003 |" in text
        cell = f"| {gain['mean']:+.3f} {_iv(auc)} |"
        assert cell in text and f"| {_iv(boot['auc']['interval'])} |" in text
        claim = f"AUC {word}: finetune 0.1 {name} ({gain['mean']:+.3f}, t {_iv(auc)}, bootstrap"
        assert claim in text[: text.index("### pneumoniamnist")], claim
    # Both intervals hold 0 for SimCLR (t, bootstrap) and exclude it for Barlow Twins.
    assert not stats_module.excludes_zero(rows["simclr"]["gain_auc"]["ci"])
    assert stats_module.excludes_zero(rows["barlow_twins"]["gain_auc"]["boot"])
    assert "BT BatchNorm only (random convs)" in text
    order = [
        text.index(f"| finetune | 0.1 | 471 | {report_tables.method_label(m)} |")
        for m in ("random", "barlow_twins", "simclr", "barlow_twins:bn")
    ]
    assert order == sorted(order)
    assert "val subset scaled with the label budget" in text
    assert "| finetune | 0.1 | barlow_twins | 52 | 3 |" in text
    assert "3 seeds per comparison, 95% confidence" in text and "200 resamples" in text


def test_missing_or_different_scores_leave_the_t_interval(tmp_path):
    write_scored_results(tmp_path)
    # One Barlow Twins run predates test_scores.npz; SimCLR's seed 2 saw other test labels.
    (tmp_path / "barlow_twins" / "s0-lr0.003" / report.SCORES_FILE).unlink()
    path = tmp_path / "simclr" / "s2-lr0.001" / report.SCORES_FILE
    with np.load(path) as f:
        scores, labels = f["scores"], f["labels"]
    np.savez(path, scores=scores, labels=1 - labels)
    rows = {r["method"]: r for r in report.aggregate(report.collect([tmp_path])[0], n_boot=20)}
    for method in ("barlow_twins", "simclr"):
        assert rows[method]["bootstrap"] is None and rows[method]["gain_auc"]["boot"] is None
        assert rows[method]["gain_auc"]["ci"] is not None
    assert rows["barlow_twins"]["verdict_auc"] == "gain"  # the t interval alone
    assert rows["barlow_twins:bn"]["bootstrap"]["n_boot"] == 20


def test_same_learning_rate_twice_is_an_error(tmp_path):
    write_scored_results(tmp_path / "a")
    write_scored_results(tmp_path / "b")
    with pytest.raises(ValueError, match="with seed 0: .*a/.* and .*b/"):
        report.aggregate(report.collect([tmp_path])[0])


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
    with pytest.raises(errors.DataError, match=f"no ssljax runs under {tmp_path}"):
        report.make_report(tmp_path)


def _report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssljax.report", "--no-model-plots", "--n-boot=20", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_line_says_no_runs_in_one_line(tmp_path):
    out = _report_cli(str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        f"error: no ssljax runs under {tmp_path}: a run's folder holds results.json (an "
        "evaluation) or config.json and metrics.jsonl (a pretraining run)"
    ]
    assert not (tmp_path / "report").exists()


def test_unreadable_runs_are_left_out_with_their_names(tmp_path):
    write_results(tmp_path)
    write_pretraining_run(tmp_path, "barlow_twins", 0)
    write_pretraining_run(tmp_path, "simclr", 0)
    corrupt = tmp_path / "eval/knn/barlow_twins/f0.1-s0/results.json"
    corrupt.write_text(corrupt.read_text()[:40])  # cut short
    metrics = tmp_path / "pretrain/simclr-s0/metrics.jsonl"
    metrics.write_text("{oops\n" + metrics.read_text())  # damaged before its last line
    out = _report_cli(str(tmp_path))
    assert out.returncode == 0, out.stderr
    warnings = out.stderr.splitlines()
    assert len(warnings) == 2 and "Traceback" not in out.stderr
    assert f"left out of the report: {corrupt} is not valid JSON" in warnings[0]
    assert f"left out of the report: {metrics}, line 1, is not JSON" in warnings[1]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "13 evaluation runs and 1 pretraining runs" in text


def test_cross_correlation_matches_the_barlow_twins_loss():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 64, 16)) * rng.uniform(0.5, 2, size=(1, 16))
    c = representations.standardised_cross_correlation(z1, z2)
    off = c[~np.eye(16, dtype=bool)]
    loss = np.sum((1 - np.diag(c)) ** 2) + 0.0051 * np.sum(off**2)
    chex.assert_trees_all_close(
        loss,
        float(losses.barlow_twins_loss(z1.astype(np.float32), z2.astype(np.float32))),
        rtol=1e-4,
    )
    chex.assert_trees_all_close(
        representations.standardised_cross_correlation(z1, z1).diagonal(), 1.0, atol=1e-4
    )


def test_model_figures_come_from_the_runs_files_only(tmp_path):
    """The report draws the cross-correlation and embeddings from the arrays pretraining
    wrote: the runs' config.json hold only method, seed and dataset name, nothing a model
    could be rebuilt from. A finished run without the arrays costs a note, not the report."""
    rng = np.random.default_rng(0)
    for method in ("barlow_twins", "simclr"):
        write_pretraining_run(tmp_path, method, 0)
        workdir = tmp_path / "pretrain" / f"{method}-s0"
        (workdir / "encoder").mkdir()
        z = rng.normal(size=(4, 32, 80))
        corr = [representations.standardised_cross_correlation(z[i], z[i + 1]) for i in (0, 2)]
        xy, cls = rng.normal(size=(2, 40, 2)), np.arange(40) % 2
        representations.save(workdir, corr, xy, cls, ("benign", "malignant"), method)
        assert_png(workdir / "cross_correlation.png")
        assert_png(workdir / "embeddings.png")
    saved = representations.load(workdir, representations.CROSS_CORRELATION)
    assert saved["final_block"].shape == (64, 64) and int(saved["final_dims"]) == 80
    chex.assert_trees_all_close(float(saved["final_mean_diag"]), np.diag(corr[1]).mean())
    write_pretraining_run(tmp_path, "barlow_twins", 1)  # finished, but without the files
    (tmp_path / "pretrain" / "barlow_twins-s1" / "encoder").mkdir()
    paths, notes = {}, []
    pretrains = report.collect([tmp_path])[1]
    report_plots.model_figures(pretrains, tmp_path / "out", paths, notes)
    assert set(paths) == {"cross_correlation_breastmnist", "embeddings_breastmnist"}, notes
    for path in paths.values():
        assert_png(path)
    assert notes == []  # the lowest seed of each method has its files
    for p in pretrains:
        if p["seed"] == 0:
            p["seed"] = 2  # now barlow_twins-s1, without files, comes first
    paths, notes = {}, []
    report_plots.model_figures(pretrains, tmp_path / "out2", paths, notes)
    assert len(notes) == 2 and all("barlow_twins-s1" in n and "is missing" in n for n in notes)


def test_pca_matches_svd_of_centred_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1]) + 3.0
    xy = representations.pca_2d(x)
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
    assert "| finetune | 0.1 | 55 | random |  | 1 |" in out.stdout
    # The tiny grid's one-epoch pretraining is evaluated whatever its verdict
    # (evaluate_failed), and the table says which verdict it had.
    assert re.search(
        r"\| knn \| 1 \| 546 \| barlow_twins \| (healthy|warning|failed) \| 1 \|", out.stdout
    )
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


def test_gains_from_a_failed_pretraining_are_shown_never_worded(tmp_path):
    """Evaluations of a pretraining run whose health verdict is failed: their numbers and
    intervals stay in the table, with the verdict beside them; no gain or loss is claimed."""
    write_results(tmp_path)
    verdicts = {"barlow_twins": "failed", "simclr": "healthy"}
    for method, verdict in verdicts.items():
        write_pretraining_run(tmp_path, method, 0)
        reasons = ["collapsed: embedding RankMe 349.3 -> 3.4 (1% of step 0)"]
        record = {
            "verdict": verdict,
            "reasons": reasons if verdict == "failed" else [],
            "checks": [],
        }
        (tmp_path / "pretrain" / f"{method}-s0" / "health.json").write_text(json.dumps(record))
    for results in tmp_path.glob("eval/*/*/*/results.json"):
        record = json.loads(results.read_text())
        if record["init"]["kind"] == "pretrained":
            method = record["init"]["method"]
            record["init"]["workdir"] = str(tmp_path / "pretrain" / f"{method}-s0" / "encoder")
            results.write_text(json.dumps(record))
    paths = report.make_report(tmp_path, tmp_path / "report", n_boot=10, model_plots=False)
    rows = report.aggregate(report.collect([tmp_path])[0], n_boot=10)
    by_key = {(r["protocol"], r["method"], r["label_fraction"]): r for r in rows}
    bt, simclr = by_key[("finetune", "barlow_twins", 0.1)], by_key[("finetune", "simclr", 1.0)]
    assert bt["pretraining"] == "failed" and simclr["pretraining"] == "healthy"
    assert bt["verdict_auc"] == bt["verdict_acc"] == report.PRETRAINING_FAILED
    assert bt["gain_auc"]["mean"] == pytest.approx(0.10)  # the number itself is kept
    assert simclr["verdict_auc"] != report.PRETRAINING_FAILED
    assert by_key[("finetune", "random", 0.1)]["pretraining"] is None
    text = paths["markdown"].read_text()
    assert "| finetune | 0.1 | 55 | barlow_twins | failed | 3 |" in text
    assert "| finetune | 1 | 546 | simclr | healthy | 2 |" in text
    summary = text.split("## Summary")[1].split("##")[0]
    assert "AUC pretraining failed: finetune 0.1 barlow_twins (+0.100" in summary
    assert not any(f"AUC {w}: finetune 0.1 barlow_twins" in summary for w in ("gain", "loss"))


def test_an_evaluation_finds_its_pretraining_run_by_a_relative_path(tmp_path):
    """init.workdir as the sweep stored it, relative to where it ran: matched by its
    trailing components when the report runs elsewhere; ambiguous or absent: None."""
    from ssljax import report_runs

    pre = [
        {"workdir": str(tmp_path / "a/runs/pretrain/bt-s0"), "health": {"verdict": "failed"}},
        {"workdir": str(tmp_path / "a/runs/pretrain/bt-s1"), "health": {"verdict": "healthy"}},
        {"workdir": str(tmp_path / "b/runs/pretrain/bt-s1"), "health": {"verdict": "warning"}},
    ]
    evals = [
        {"init_workdir": "runs/pretrain/bt-s0/encoder"},  # relative, one match
        {"init_workdir": pre[1]["workdir"]},  # absolute
        {"init_workdir": "runs/pretrain/bt-s1"},  # relative, two matches: unknown
        {"init_workdir": "runs/pretrain/bt-s9"},  # not among the runs
        {"init_workdir": ""},  # random init
    ]
    report_runs.link_health(evals, pre)
    assert [e["pretrain_verdict"] for e in evals] == ["failed", "healthy", None, None, None]

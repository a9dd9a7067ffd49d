"""The headline (smallest label budget matching random init with all labels) by hand."""

import csv
import json
import math

import pytest

from ssljax import report, report_headline

DATA, MODEL = "pneumoniamnist", "resnet18 w16"
T_975_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom


def _arm(protocol, method, fraction, aucs, verdict="healthy"):
    """groups' entry: seed i started from pretraining run 'p<i>' (random init: none)."""
    runs = {
        seed: {
            "test_auc": auc,
            "init_workdir": "" if method == "random" else f"runs/pretrain/{method}-s{seed}",
            "pretrain_verdict": None if method == "random" else verdict,
        }
        for seed, auc in enumerate(aucs)
    }
    return (DATA, MODEL, protocol, method, fraction), runs


GROUPS = dict(
    [
        _arm("finetune", "random", 1.0, [0.90, 0.92, 0.94]),
        _arm("finetune", "random", 0.1, [0.88, 0.89, 0.90]),
        _arm("finetune", "random", 0.01, [0.80, 0.82, 0.81]),
        _arm("finetune", "barlow_twins", 0.01, [0.85, 0.86, 0.87]),
        _arm("finetune", "barlow_twins", 0.1, [0.91, 0.93, 0.93]),
        _arm("finetune", "barlow_twins", 1.0, [0.95, 0.95, 0.96]),
        _arm("linear", "random", 0.01, [0.60, 0.61, 0.62]),
        _arm("linear", "simclr", 0.01, [0.70, 0.70, 0.70]),
        _arm("linear", "simclr", 0.1, [0.80, 0.80, 0.80]),
        _arm("linear", "simclr", 1.0, [0.85, 0.86, 0.84]),
        _arm("knn", "simclr", 1.0, [0.99, 0.99, 0.99], verdict="failed"),
    ]
)


def _t_interval(d):
    """The 95% t interval of three numbers, written out."""
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    return mean, (mean - half, mean + half)


def test_headline_equals_a_hand_computation():
    entries = {(e["protocol"], e["method"]): e for e in report_headline.headline(GROUPS)}
    assert set(entries) == {("finetune", "barlow_twins"), ("linear", "simclr"), ("knn", "simclr")}
    bt = entries[("finetune", "barlow_twins")]
    # 1%: 0.86 on average against 0.92 with all labels; 10%: 0.9233 >= 0.92, the first.
    assert bt["smallest"] == 0.1 and not bt["failed"]
    diff = bt["vs_all"][0.1]
    mean, (lo, hi) = _t_interval([0.01, 0.01, -0.01])
    assert diff["mean"] == pytest.approx(mean) and diff["levels"] == 2 and diff["n_runs"] == 3
    assert diff["ci"] == pytest.approx((lo, hi))
    assert bt["gains"][0.01]["mean"] == pytest.approx(0.05)
    assert bt["gains"][0.01]["ci"] == pytest.approx(_t_interval([0.05, 0.04, 0.06])[1])
    assert bt["gains"][0.1]["mean"] == pytest.approx(0.1 / 3)
    linear = entries[("linear", "simclr")]
    # Never reaches 0.92; gains only where random init has a linear twin (1%).
    assert linear["smallest"] is None and set(linear["gains"]) == {0.01}
    assert linear["vs_all"][1.0]["mean"] == pytest.approx(-0.07)
    assert entries[("knn", "simclr")]["failed"]


def test_headline_markdown_words():
    text = "\n".join(report_headline.markdown(report_headline.headline(GROUPS)))
    mean, (lo, hi) = _t_interval([0.01, 0.01, -0.01])
    assert f"| finetune | barlow_twins | 0.1 | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |" in text
    assert "| linear | simclr | none | at 1: -0.070 [" in text
    assert "| knn | simclr | pretraining failed | – |" in text


def test_no_reference_no_headline():
    groups = {k: v for k, v in GROUPS.items() if k[2:] != ("finetune", "random", 1.0)}
    assert report_headline.headline(groups) == []
    assert report_headline.markdown([]) == []


def _write_run(root, protocol, method, fraction, seed, auc):
    """A results.json as evaluate.run writes it (the fields the report reads)."""
    init = {"kind": "random", "workdir": ""}
    if method != "random":
        init = {"kind": "pretrained", "workdir": f"pt/{method}-s{seed}", "method": method}
    record = {
        "dataset": DATA,
        "size": 28,
        "task": "binary-class",
        "protocol": protocol,
        "init": init,
        "label_fraction": fraction,
        "n_labelled": round(4708 * fraction),
        "seed": seed,
        "model": {"name": "resnet18", "width": 16},
        "val": {"acc": 0.8, "auc": auc - 0.01},
        "test": {"acc": 0.8, "auc": auc},
    }
    workdir = root / "eval" / protocol / method / f"f{fraction}-s{seed}"
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(record))


def test_the_report_carries_two_levels_and_the_headline(tmp_path):
    """Seeds from three pretraining runs: the gain's interval is over the runs, the table
    says so, and report.md has the headline computed from the same runs."""
    for (_, _, protocol, method, fraction), by_seed in GROUPS.items():
        if protocol == "finetune":
            for seed, run in by_seed.items():
                _write_run(tmp_path, protocol, method, fraction, seed, run["test_auc"])
    paths = report.make_report(tmp_path, tmp_path / "report", model_plots=False)
    rows = report.aggregate(report.collect([tmp_path])[0])
    (bt,) = [r for r in rows if r["method"] == "barlow_twins" and r["label_fraction"] == 0.01]
    gain = bt["gain_auc"]
    assert (gain["levels"], gain["n_runs"], gain["n"]) == (2, 3, 3)
    assert gain["ci"] == pytest.approx(_t_interval([0.05, 0.04, 0.06])[1])
    text = paths["markdown"].read_text()
    assert "| 3 (3 runs) |" in text
    assert "## Headline: labels saved by pretraining" in text
    mean, (lo, hi) = _t_interval([0.01, 0.01, -0.01])
    assert f"| finetune | barlow_twins | 0.1 | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |" in text
    # The per-arm table: Barlow Twins' AUC over its three pretraining runs, random init's
    # over its seeds.
    bt_mean, (bt_lo, bt_hi) = _t_interval([0.85, 0.86, 0.87])
    ref_mean, (ref_lo, ref_hi) = _t_interval([0.90, 0.92, 0.94])
    assert (f"| finetune | 1 | {ref_mean:.3f} [{ref_lo:.3f}, {ref_hi:.3f}] (n=3) | 0.953 [") in text
    assert "| finetune | 0.01 | 0.810 [" in text
    assert f"(n=3) | {bt_mean:.3f} [{bt_lo:.3f}, {bt_hi:.3f}] (n=3) |" in text
    with open(paths["csv"]) as f:
        by_method = {(r["method"], r["label_fraction"]): r for r in csv.DictReader(f)}
    assert by_method[("barlow_twins", "0.01")]["gain_auc_levels"] == "2"
    assert by_method[("barlow_twins", "0.01")]["gain_auc_n_runs"] == "3"

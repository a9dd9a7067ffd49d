"""ssljax.report_health on hand-written workdirs: plateau numbers and health table by hand."""

import csv
import json
import pathlib

import pytest

from ssljax import health, report, report_health

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 6  # the last third: epochs 5 and 6
# (method, seed, base_lr) -> (val AUC per epoch 1..6, best_epoch in results.json or None).
CURVES = {
    # Still improving: the last third gains 0.80 - 0.70 and 0.70 - 0.66.
    ("random", 0, 0.1): ([0.50, 0.60, 0.65, 0.70, 0.75, 0.80], 6),
    ("random", 1, 0.1): ([0.55, 0.60, 0.62, 0.66, 0.70, 0.69], 5),
    # Plateaued: 0.80 - 0.82 and 0.78 - 0.78; seed 1 has no best_epoch (first max: epoch 2).
    ("barlow_twins", 0, 0.1): ([0.70, 0.80, 0.82, 0.81, 0.80, 0.79], 3),
    ("barlow_twins", 1, 0.1): ([0.75, 0.78, 0.78, 0.77, 0.78, 0.76], None),
    # Lower val AUC than lr 0.1: left out by the lr selection, so it must not count.
    ("barlow_twins", 0, 0.01): ([0.10, 0.10, 0.10, 0.10, 0.10, 0.70], 6),
}


def _results(method: str, seed: int, fraction: float, protocol: str, val_auc: float) -> dict:
    init = {"kind": "random"} if method == "random" else {"kind": "pretrained", "method": method}
    return {
        "dataset": "breastmnist",
        "size": 28,
        "protocol": protocol,
        "init": init,
        "label_fraction": fraction,
        "n_labelled": 55,
        "seed": seed,
        "model": {"name": "resnet18", "width": 8},
        "val": {"acc": 0.8, "auc": val_auc},
        "test": {"acc": 0.8, "auc": 0.7},
    }


def _write(workdir: pathlib.Path, results: dict, records: list[dict] | None) -> None:
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(results))
    if records is not None:
        (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def write_evals(root: pathlib.Path) -> None:
    for (method, seed, lr), (curve, best) in CURVES.items():
        r = _results(method, seed, 0.1, "finetune", max(curve))
        r.update(epochs=EPOCHS, steps=EPOCHS * 9, train={"base_lr": lr})
        if best is not None:
            r["best_epoch"] = best
        records = [
            {"step": 9 * e, "epoch": e, "loss": 1.0 / e, "val_auc": auc, "val_low_auc": auc}
            for e, auc in enumerate(curve, start=1)
        ]
        workdir = root / "eval" / "breastmnist" / "finetune" / method / f"f0.1-s{seed}-lr{lr}"
        _write(workdir, r, records)
    # An old fine-tuning run: no epochs, steps, best_epoch nor metrics.jsonl.
    _write(root / "eval" / "old-ft", _results("random", 0, 1.0, "finetune", 0.9), None)
    # Not fine-tuning: left out of the plateau table whatever its metrics say.
    _write(root / "eval" / "lin", _results("random", 0, 0.5, "linear", 0.9), [])


def _monitor(step: int, knn: float, emb: float | None, feat: float) -> dict:
    return {
        "step": step,
        "epoch": step // 10,
        "knn_acc": 0.7,
        "knn_auc": knn,
        "embedding/rankme": emb,
        "embedding/std": 0.01,
        "features/rankme": feat,
    }


def _log(step: int, loss: float, conv: float, bn: float) -> dict:
    return {"step": step, "loss": loss, "weight_change/conv": conv, "weight_change/bn_scale": bn}


# (method, seed) -> records of its metrics.jsonl. The last record lacks loss and weight change.
PRETRAINS = {
    ("barlow_twins", 0): [
        _monitor(0, 0.60, 5.0, 6.0),
        _log(10, 3.0, 0.5, 0.3),
        _log(20, 2.0, 1.2, 0.9),
        _monitor(20, 0.75, 20.0, 30.0),
    ],
    ("simclr", 0): [
        _monitor(0, 0.62, 7.0, 8.0),
        _log(10, 5.0, 0.001, 2.0),
        _log(20, 4.0, 0.01, 6.0),
        _monitor(20, 0.61, None, 9.0),  # embedding rank not logged: the last one that was
    ],
    # Old format: no step-0 monitor, no weight change, no rank.
    ("simclr", 1): [
        {"step": 10, "loss": 9.0, "lr": 0.1, "epoch": 1},
        {"step": 20, "loss": 8.0, "lr": 0.1, "epoch": 2},
        {"step": 20, "epoch": 2, "knn_acc": 0.6, "knn_auc": 0.65},
    ],
}


def write_pretrains(root: pathlib.Path) -> None:
    for (method, seed), records in PRETRAINS.items():
        workdir = root / "pretrain" / f"{method}-breastmnist-s{seed}"
        workdir.mkdir(parents=True)
        config = {"method": method, "seed": seed, "data": {"name": "breastmnist", "size": 28}}
        (workdir / "config.json").write_text(json.dumps(config))
        (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def health_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    write_evals(root)
    write_pretrains(root)
    paths = report.make_report(root, root / "report", model_plots=False, n_boot=10)
    evals, pretrains = report.collect([root])
    chosen = {r["workdir"] for by_seed in report.select(evals).values() for r in by_seed.values()}
    runs = report_health.load_finetune(evals, chosen)
    rows = {(r["method"], r["label_fraction"]): r for r in report_health.plateau_rows(runs)}
    health = {(r["method"], r["seed"]): r for r in report_health.health_rows(pretrains)}
    return paths, rows, health


def test_last_third():
    assert [report_health.last_third_start(e) for e in (30, 10, 6, 3, 2, 1)] == [20, 7, 4, 2, 1, 0]
    curve = list(enumerate([0.5, 0.7, 0.6, 0.65], start=1))
    assert report_health.last_third_gain(curve, 4) == pytest.approx(0.65 - 0.7)
    assert report_health.last_third_gain(curve[:3], 4) is None  # nothing in the last third
    assert report_health.last_third_gain([(1, 0.5)], 1) is None  # nothing before it


def test_plateau_numbers_by_hand(health_report):
    _, rows, _ = health_report
    assert set(rows) == {("random", 0.1), ("barlow_twins", 0.1), ("random", 1.0)}
    improving, flat = rows[("random", 0.1)], rows[("barlow_twins", 0.1)]
    for r in (improving, flat):
        assert (r["n"], r["epochs"], r["steps"], r["n_best"], r["gain_n"]) == (2, [6], [54], 2, 2)
    assert improving["best_epoch_mean"] == pytest.approx(5.5)
    assert improving["late"] == 2
    assert improving["gain_mean"] == pytest.approx(((0.80 - 0.70) + (0.70 - 0.66)) / 2)
    assert improving["gain_max"] == pytest.approx(0.10)
    assert flat["best_epoch_mean"] == pytest.approx((3 + 2) / 2)
    assert flat["late"] == 0
    assert flat["gain_mean"] == pytest.approx(((0.80 - 0.82) + 0.0) / 2)
    assert flat["gain_max"] == pytest.approx(0.0)
    # The last logged loss is 1 / epochs for every run written above.
    assert improving["loss_mean"] == flat["loss_mean"] == pytest.approx(1 / EPOCHS)
    old = rows[("random", 1.0)]
    assert (old["n"], old["epochs"], old["steps"], old["n_best"]) == (1, [], [], 0)
    assert old["best_epoch_mean"] is None and old["gain_mean"] is None
    assert old["loss_mean"] is None


def test_markdown_and_png(health_report):
    paths, _, _ = health_report
    png = paths["finetune_curves"]
    assert png.name == "finetune_curves.png" and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    text = paths["markdown"].read_text()
    assert report_health.PLATEAU_TITLE in text and report_health.HEALTH_TITLE in text
    assert "![finetune_curves](finetune_curves.png)" in text
    assert "| random | 2 | 6 | 54 | 5.5 | 2/2 | +0.0700 (+0.1000, n=2) |" in text
    assert "| barlow_twins | 2 | 6 | 54 | 2.5 | 0/2 | -0.0100 (+0.0000, n=2) |" in text
    assert "| 1 | random | 1 | – | – | – | 0/0 | – |" in text


def test_health_table_picks_step0_and_last_values(health_report):
    _, _, rows = health_report
    bt = rows[("barlow_twins", 0)]
    assert bt["steps"] == 20 and bt["final_loss"] == 2.0
    assert (bt["weight_change_conv"], bt["weight_change_bn_scale"]) == (1.2, 0.9)
    assert (bt["knn_auc_step0"], bt["knn_auc_final"]) == (0.60, 0.75)
    assert (bt["embedding_rankme_step0"], bt["embedding_rankme_final"]) == (5.0, 20.0)
    assert (bt["features_rankme_step0"], bt["features_rankme_final"]) == (6.0, 30.0)
    # No health.json: the verdict of its metrics.jsonl, computed by the report.
    assert bt["verdict"] == "healthy", bt["reasons"]
    fell = rows[("simclr", 0)]
    assert fell["embedding_rankme_final"] == 7.0  # the null at the end is skipped
    assert fell["verdict"] == "warning"
    assert (
        fell["reasons"]
        == "no better than its own random initialisation: kNN val AUC 0.620 at step 0 -> 0.610"
    )
    old = rows[("simclr", 1)]
    assert (old["steps"], old["final_loss"], old["knn_auc_final"]) == (20, 8.0, 0.65)
    for field in ("weight_change_conv", "knn_auc_step0", "embedding_rankme_final"):
        assert old[field] is None
    assert old["verdict"] == "warning" and "unchecked" in old["reasons"]


def test_a_runs_health_json_is_what_the_report_shows(tmp_path):
    """A finished run's health.json is read as written, not recomputed."""
    write_pretrains(tmp_path)
    workdir = tmp_path / "pretrain" / "barlow_twins-breastmnist-s0"
    written = {"verdict": "failed", "reasons": ["collapsed: as written"], "checks": []}
    (workdir / health.HEALTH_FILE).write_text(json.dumps(written))
    _, pretrains = report.collect([tmp_path])
    rows = {(r["method"], r["seed"]): r for r in report_health.health_rows(pretrains)}
    assert rows[("barlow_twins", 0)]["verdict"] == "failed"
    assert rows[("barlow_twins", 0)]["reasons"] == "collapsed: as written"


def test_health_csv_and_markdown(health_report):
    paths, _, _ = health_report
    with paths["pretraining_csv"].open() as f:
        rows = {(r["method"], r["seed"]): r for r in csv.DictReader(f)}
    assert list(rows) == [("barlow_twins", "0"), ("simclr", "0"), ("simclr", "1")]
    assert float(rows[("barlow_twins", "0")]["knn_auc_step0"]) == 0.60
    assert rows[("barlow_twins", "0")]["verdict"] == "healthy"
    assert rows[("simclr", "0")]["verdict"] == "warning"
    assert rows[("simclr", "1")]["weight_change_conv"] == ""
    text = paths["markdown"].read_text()
    assert "| **healthy** | 2 | – | – | 0.600 → 0.750 | 5.0 → 20.0 | 6.0 → 30.0 |  |" in text
    assert "| **warning** | 4 | – | – | 0.620 → 0.610 | 7.0 → 7.0 | 8.0 → 9.0 | no better" in text
    assert "| **warning** | 8 | – | – | – → 0.650 | – → – | – → – | unchecked" in text


def test_only_old_runs_report(tmp_path):
    """A root of pre-diagnostics runs alone: both sections, no curve figure, no crash."""
    _write(tmp_path / "eval" / "old-ft", _results("random", 0, 1.0, "finetune", 0.9), None)
    workdir = tmp_path / "pretrain" / "old"
    workdir.mkdir(parents=True)
    config = {"method": "simclr", "seed": 3, "data": {"name": "breastmnist", "size": 64}}
    (workdir / "config.json").write_text(json.dumps(config))
    paths = report.make_report(tmp_path, tmp_path / "report", model_plots=False, n_boot=10)
    assert "finetune_curves" not in paths
    text = paths["markdown"].read_text()
    assert report_health.PLATEAU_TITLE in text
    assert "| breastmnist_64 | simclr | 3 | – | **failed** | – |" in text
    assert "no loss was logged" in text

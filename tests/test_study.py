"""The study wing needs no JAX; the names it reads agree with the code behind them; the
results.json schema is versioned."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ssljax import errors, facts, report, results
from tests.test_report import write_pretraining_run, write_results

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAINING_STACK = ("jax", "flax", "optax", "orbax")
# The study wing: the report, its tables, plots and statistics, and the health verdict.
STUDY = (
    "ssljax.facts",
    "ssljax.results",
    "ssljax.files",
    "ssljax.health",
    "ssljax.stats",
    "ssljax.plots",
    "ssljax.report",
    "ssljax.report_runs",
    "ssljax.report_tables",
    "ssljax.report_plots",
    "ssljax.report_health",
)
# Imports the study wing, writes a report from argv[1] to argv[2], and prints which modules
# of the training stack were imported on the way (none, if the wing holds).
SCRIPT = f"""
import importlib, sys
for name in {STUDY!r}:
    importlib.import_module(name)
from ssljax import report
paths = report.make_report(sys.argv[1], sys.argv[2])
print(sorted(paths))
print("stack:", sorted(m for m in sys.modules if m.split(".")[0] in {TRAINING_STACK!r}))
"""


def test_the_report_is_written_without_the_training_stack(tmp_path):
    write_results(tmp_path / "runs")
    write_pretraining_run(tmp_path / "runs", "barlow_twins", 0)
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "runs"), str(tmp_path / "report")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "report" / "report.md").is_file()
    assert "'markdown'" in run.stdout
    assert run.stdout.splitlines()[-1] == "stack: []", run.stdout


def test_the_code_behind_each_name_holds_exactly_the_names():
    from ssljax import evaluate, methods

    assert list(methods.METHODS) == list(facts.METHODS)
    for name, m in methods.METHODS.items():
        f = facts.METHODS[name]
        assert (m.name, m.title, m.short, m.config) == (f.name, f.title, f.short, f.config)
    assert list(evaluate.PROTOCOLS) == list(facts.PROTOCOLS)
    assert {n: p.config for n, p in evaluate.PROTOCOLS.items()} == facts.PROTOCOLS
    assert evaluate.RESULTS_FILE == results.RESULTS_FILE
    assert list(facts.METHOD_STYLE) == [facts.RANDOM, *facts.METHODS]


def _record(**fields):
    rec = {
        "dataset": "breastmnist",
        "size": 28,
        "task": "binary-class",
        "protocol": "knn",
        "init": {"kind": "random", "workdir": ""},
        "label_fraction": 1.0,
        "n_labelled": 546,
        "seed": 0,
        "model": {"name": "resnet18", "width": 8},
        "val": {"acc": 0.8, "auc": 0.7},
        "test": {"acc": 0.8, "auc": 0.75},
    }
    return {**rec, **fields}


def test_results_record_carries_the_current_version(tmp_path):
    rec = results.record(_record())
    assert rec["schema_version"] == results.SCHEMA_VERSION == 2
    path = tmp_path / results.RESULTS_FILE
    path.write_text(json.dumps(rec))
    assert results.read(path) == rec


def test_a_record_without_a_version_reads_as_version_1(tmp_path):
    path = tmp_path / results.RESULTS_FILE
    path.write_text(json.dumps(_record()))
    assert results.read(path)["schema_version"] == 1


@pytest.mark.parametrize(
    "version,says",
    [(0, "an older ssljax wrote it"), (3, "a newer ssljax wrote it"), ("2", "older")],
)
def test_an_unknown_version_is_one_clear_error(tmp_path, version, says):
    path = tmp_path / results.RESULTS_FILE
    path.write_text(json.dumps(_record(schema_version=version)))
    with pytest.raises(errors.DataError) as e:
        results.read(path)
    assert str(e.value).startswith(f"{path}: results.json schema_version {version!r}")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_missing_field_names_the_file_and_field(tmp_path):
    path = tmp_path / results.RESULTS_FILE
    path.write_text(json.dumps({k: v for k, v in _record().items() if k != "test"}))
    with pytest.raises(errors.DataError, match=r"is not an ssljax results.json \(field 'test'\)"):
        results.read(path)


def test_the_report_reads_both_versions_and_leaves_out_an_unknown_one(tmp_path, caplog):
    write_results(tmp_path)  # version 1: no schema_version
    paths = sorted(tmp_path.rglob(results.RESULTS_FILE))
    newer = json.loads(paths[0].read_text())
    paths[0].write_text(json.dumps({**newer, "schema_version": 2}))
    paths[1].write_text(json.dumps({**newer, "schema_version": 9}))
    evals, _ = report.collect([tmp_path])
    assert len(evals) == len(paths) - 1
    assert str(paths[0].parent) in {r["workdir"] for r in evals}
    assert f"{paths[1]}: results.json schema_version 9" in caplog.text


def test_the_report_command_takes_absl_flags_with_their_old_names(tmp_path, capsys):
    write_results(tmp_path / "runs")
    out = tmp_path / "elsewhere"
    report.main(["--no-model-plots", str(tmp_path / "runs"), f"--out={out}", "--n-boot=20"])
    assert f"markdown: {out / 'report.md'}" in capsys.readouterr().out
    for bad, says in ((["--n-boot=many", "x"], "n-boot"), ([], "name at least one folder")):
        with pytest.raises(SystemExit) as e:
            report.main(bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and says in err
        assert len(err.strip().splitlines()) == 1

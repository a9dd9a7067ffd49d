"""One entry (issue 23): every job validates its config once, checks and locks its workdir
once, and is named once, whether launch.py, the sweep or a library call starts it.

The jobs' work is replaced by a recorder, so these tests run no model."""

import collections
import contextlib
import os
import pathlib

import pytest

from configs import barlow, knn
from experiments import sweep
from ssljax import errors, jobs, pretrain, validation, workdirs
from tests.test_sweep import make_grid

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def calls(monkeypatch):
    """Counts validations, locks (by workdir) and job names; records each job's work."""
    seen = {"validate": 0, "named": 0, "locks": collections.Counter(), "work": []}
    real_validate, real_lock, real_name = validation.validate, workdirs.lock, jobs.job_name

    def validate(config):
        seen["validate"] += 1
        real_validate(config)

    @contextlib.contextmanager
    def lock(workdir):
        seen["locks"][os.path.realpath(workdir)] += 1
        with real_lock(workdir) as path:
            yield path

    def job_name(mode, method):
        seen["named"] += 1
        return real_name(mode, method)

    def recorder(name):
        def work(config, workdir):
            held = os.path.realpath(workdir) in workdirs._HELD
            seen["work"].append((name, config.method, pathlib.Path(workdir), held))
            return name

        return work

    monkeypatch.setattr(validation, "validate", validate)
    monkeypatch.setattr(workdirs, "lock", lock)
    monkeypatch.setattr(jobs, "job_name", job_name)
    for name, spec in list(jobs.JOBS.items()):
        monkeypatch.setitem(jobs.JOBS, name, spec._replace(work=recorder(name)))
    monkeypatch.setattr(pretrain, "job", recorder("pretrain.run"))
    return seen


@pytest.mark.parametrize(
    "mode,module,job,locks",
    [
        ("run", barlow, "pretrain", 1),
        ("run", knn, "knn", 1),
        ("embed", barlow, "embed", 1),
        ("preview", barlow, "preview", 0),
    ],
)
def test_each_job_validates_and_locks_once(calls, tmp_path, mode, module, job, locks):
    workdir = tmp_path / "run"
    assert jobs.run(module.get_config("breastmnist"), workdir, mode) == job
    assert calls["validate"] == 1 and calls["named"] == 1
    assert sum(calls["locks"].values()) == locks
    assert calls["work"] == [(job, module.get_config("breastmnist").method, workdir, bool(locks))]


def test_launch_validates_and_locks_once(calls, tmp_path):
    import launch

    args = [f"--config={REPO / 'configs/knn.py'}:breastmnist", f"--workdir={tmp_path / 'run'}"]
    launch.parse_flags(["launch.py", *args])
    try:
        checked = []
        launch._run(["launch.py"], checked)
    finally:
        launch.flags.FLAGS.unparse_flags()
    assert calls["validate"] == 1 and calls["named"] == 1
    assert calls["locks"] == {os.path.realpath(tmp_path / "run"): 1}
    assert calls["work"] == [("knn", "knn", tmp_path / "run", True)]
    assert checked == [tmp_path / "run"]  # errors.log goes to the held workdir


def test_the_sweep_validates_and_locks_each_cell_once(calls, tmp_path):
    record = sweep.run_sweep(
        make_grid(methods=("barlow_twins", "random"), seeds=(0,)), tmp_path, progress=False
    )
    cells = record["cells"]
    assert [c["status"] for c in cells] == ["done"] * 5, cells
    assert calls["validate"] == len(cells) and calls["named"] == len(cells)
    expected = {os.path.realpath(tmp_path / c["name"]): 1 for c in cells}
    assert calls["locks"] == {**expected, os.path.realpath(tmp_path): 1}  # and the root's
    assert [(w[0], w[2]) for w in calls["work"]] == [
        ("pretrain" if c["kind"] == "pretrain" else "knn", tmp_path / c["name"]) for c in cells
    ]
    assert all(w[3] for w in calls["work"])


def test_a_library_call_validates_and_locks_once(calls, tmp_path):
    assert pretrain.run(barlow.get_config("breastmnist"), tmp_path / "run") == "pretrain.run"
    assert calls["validate"] == 1
    assert calls["locks"] == {os.path.realpath(tmp_path / "run"): 1}


def test_an_impossible_config_stops_before_the_workdir_is_touched(calls, tmp_path):
    config = knn.get_config("breastmnist")
    config.data.label_fraction = 2.0
    with pytest.raises(errors.ConfigError, match="data.label_fraction"):
        jobs.run(config, tmp_path / "run")
    assert not calls["locks"] and not calls["work"] and not (tmp_path / "run").exists()


def test_an_unknown_method_or_mode_is_one_error_naming_them():
    with pytest.raises(errors.ConfigError, match=r"config.method='byol': must be one of \["):
        jobs.job_name("run", "byol")
    with pytest.raises(errors.ConfigError, match=r"--mode='train': modes are"):
        jobs.job_name("train", "simclr")

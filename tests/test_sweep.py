"""experiments/sweep.py: grid expansion, and real sweeps that finish, skip, resume and fail."""

import json
import pathlib
import subprocess
import sys

import chex
import ml_collections
import pytest

from experiments import sweep
from experiments.grids import flatten, overrides, quickstart
from ssljax import validation, writers

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_grid(**fields) -> ml_collections.ConfigDict:
    """A 2 x 2 grid (label fractions x seeds) of kNN on random init: no pretraining, so
    each cell costs seconds; `fields` replace any grid field."""
    grid = ml_collections.ConfigDict()
    grid.name = "test"
    grid.datasets = ("breastmnist",)
    grid.methods = ("random",)
    grid.label_fractions = (0.1, 1.0)
    grid.protocols = ("knn",)
    grid.seeds = (0, 1)
    grid.common = overrides({"model.width": 4, "log.progress": False})
    for section in ("pretrain", "finetune", "linear", "knn"):
        grid[section] = ml_collections.ConfigDict()
    for key, value in fields.items():
        grid[key] = value
    return grid


def statuses(record: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in record["cells"]}


def test_expand_wires_pretraining_to_evaluations(tmp_path):
    grid = make_grid(
        datasets=("breastmnist", "breastmnist_64"),
        methods=("barlow_twins", "simclr", "random"),
        protocols=("finetune", "linear", "knn"),
        pretrain=overrides({"train.epochs": 3, "model.projector_dims": (32, 32)}),
        finetune=overrides({"train.epochs": 4, "train.decay_epochs": (2, 3)}),
    )
    grid.by_dataset = ml_collections.ConfigDict()
    grid.by_dataset.breastmnist_64 = ml_collections.ConfigDict()
    grid.by_dataset.breastmnist_64.pretrain = overrides({"train.epochs": 7})
    cells = sweep.expand(grid, tmp_path)
    pretrains = [c for c in cells if c.kind == "pretrain"]
    evals = [c for c in cells if c.kind == "eval"]
    assert len(pretrains) == 2 * 2 * 2  # methods x datasets x seeds
    assert len(evals) == 2 * 3 * 3 * 2 * 2  # datasets x protocols x methods x fractions x seeds
    position = {c.name: i for i, c in enumerate(cells)}
    for c in pretrains:
        assert c.config.train.epochs == (7 if c.config.data.size == 64 else 3)
        assert c.config.model.width == 4
        assert c.config.model.projector_dims == (32, 32)
    ft = cells[position["eval/breastmnist_64/finetune/simclr/f0.1-s1"]]
    assert ft.workdir == tmp_path / "eval/breastmnist_64/finetune/simclr/f0.1-s1"
    assert ft.needs == "pretrain/simclr-breastmnist_64-s1"
    assert ft.config.init.workdir == str(tmp_path / ft.needs)
    assert (ft.config.data.name, ft.config.data.size, ft.config.seed) == ("breastmnist", 64, 1)
    assert ft.config.data.label_fraction == 0.1 and ft.config.method == "finetune"
    assert ft.config.train.epochs == 4 and ft.config.model.width == 4
    for c in evals:
        if c.needs:
            assert position[c.needs] < position[c.name]  # pretraining first
        else:
            assert c.name.split("/")[3] == "random" and c.config.init.workdir == ""
        assert c.config.train.epochs == (4 if c.config.method == "finetune" else 100)
    # Seeds outermost: every seed-0 cell comes before any seed-1 cell.
    seeds = [c.config.seed for c in cells]
    assert seeds == sorted(seeds)
    with pytest.raises(AttributeError, match="locked"):
        ft.config.new_key = 1


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"methods": ("byol",)}, "grid.methods: unknown ['byol']"),
        ({"protocols": ("probe",)}, "grid.protocols: unknown ['probe']"),
        ({"datasets": ("mnist",)}, "unknown dataset 'mnist'"),
        ({"datasets": ("breastmnist_32",)}, "has size 32"),
        ({"label_fractions": (0.0,)}, "not in (0, 1]"),
        ({"seeds": (0, 0)}, "without repeats"),
        ({"knn": overrides({"eval.knn_kk": 3})}, "grid.knn.eval.knn_kk=3"),
        ({"common": overrides({"model.width": "wide"})}, "grid.common.model.width='wide'"),
        ({"by_dataset": {"pathmnist": {"knn": {}}}}, "grid.by_dataset.pathmnist: names"),
        ({"by_dataset": {"breastmnist": {"train": {}}}}, "grid.by_dataset.breastmnist: names"),
    ],
)
def test_bad_grids_fail_before_running(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        sweep.run_sweep(make_grid(**fields), tmp_path, progress=False)
    assert not (tmp_path / sweep.SWEEP_FILE).exists()


def test_quickstart_grids_expand(tmp_path):
    for arg, protocols in (("", 3), ("tiny", 2)):
        cells = sweep.expand(quickstart.get_config(arg), tmp_path)
        assert len(cells) == 1 + protocols * 2 * 2
        for c in cells:
            validation.validate(c.config)


@pytest.mark.slow
def test_sweep_finishes_skips_and_resumes(tmp_path):
    record = sweep.run_sweep(make_grid(), tmp_path, progress=False)
    names = [f"eval/breastmnist/knn/random/f{f}-s{s}" for s in (0, 1) for f in (0.1, 1.0)]
    assert statuses(record) == dict.fromkeys(names, "done")
    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in names}
    for n, r in results.items():
        assert r["protocol"] == "knn" and r["init"]["kind"] == "random"
        assert (r["seed"], r["label_fraction"]) == (int(n[-1]), float(n.split("/f")[1][:-3]))
    on_disk = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())
    assert on_disk["counts"] == {"done": 4} and on_disk["grid"]["seeds"] == [0, 1]

    again = sweep.run_sweep(make_grid(), tmp_path, progress=False)
    assert statuses(again) == dict.fromkeys(names, "skipped")
    assert all(c["wall_s"] < 1.0 for c in again["cells"]), again["cells"]

    # An unfinished cell (its results.json gone) runs again and gives the same numbers.
    (tmp_path / names[2] / "results.json").unlink()
    third = sweep.run_sweep(make_grid(), tmp_path, progress=False)
    assert statuses(third) == {**dict.fromkeys(names, "skipped"), names[2]: "done"}
    redo = json.loads((tmp_path / names[2] / "results.json").read_text())
    chex.assert_trees_all_close(redo["test"], results[names[2]]["test"])

    # A finished cell whose config no longer matches the grid is reported, not reused.
    changed = sweep.run_sweep(make_grid(knn=overrides({"eval.knn_k": 3})), tmp_path, progress=False)
    assert set(statuses(changed).values()) == {"failed"}
    assert "finished with another config" in changed["cells"][0]["error"]
    assert "eval.knn_k" in changed["cells"][0]["error"]


@pytest.mark.slow
def test_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    # warmup longer than training fails validation: a real failure, before any compute.
    grid = make_grid(
        methods=("barlow_twins", "random"),
        label_fractions=(1.0,),
        seeds=(0,),
        pretrain=overrides({"train.epochs": 1, "train.warmup_epochs": 2}),
    )
    record = sweep.run_sweep(grid, tmp_path, progress=False)
    assert statuses(record) == {
        "pretrain/barlow_twins-breastmnist-s0": "failed",
        "eval/breastmnist/knn/barlow_twins/f1.0-s0": "blocked",
        "eval/breastmnist/knn/random/f1.0-s0": "done",
    }
    failed = record["cells"][0]
    assert "ConfigError" in failed["error"] and "train.warmup_epochs" in failed["error"]
    assert "Traceback" in failed["traceback"]
    assert [c["name"] for c in sweep.failures(record)] == [
        "pretrain/barlow_twins-breastmnist-s0",
        "eval/breastmnist/knn/barlow_twins/f1.0-s0",
    ]
    text = sweep.summary_text(record)
    assert "FAILED pretrain/barlow_twins-breastmnist-s0" in text
    assert "BLOCKED eval/breastmnist/knn/barlow_twins/f1.0-s0" in text
    assert (tmp_path / "eval/breastmnist/knn/random/f1.0-s0/results.json").exists()


@pytest.mark.slow
def test_interrupted_sweep_resumes(tmp_path):
    calls = []

    def runner(cell: sweep.Cell) -> None:
        calls.append(cell.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        # Stands in for a run: the marker of a finished evaluation.
        cell.workdir.mkdir(parents=True)
        (cell.workdir / "results.json").write_text("{}")

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(make_grid(), tmp_path, progress=False, runner=runner)
    record = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())
    assert [c["status"] for c in record["cells"]] == ["done", "interrupted", "pending", "pending"]

    calls.append("second run")
    record = sweep.run_sweep(make_grid(), tmp_path, progress=False, runner=runner)
    assert [c["status"] for c in record["cells"]] == ["skipped", "done", "done", "done"]
    assert calls[3:] == [c["name"] for c in record["cells"][1:]]


def test_overrides_nest_dotted_keys():
    section = overrides({"train.epochs": 2, "train.decay_epochs": (1, 2), "seed": 3})
    assert flatten(section) == {"train.epochs": 2, "train.decay_epochs": (1, 2), "seed": 3}
    with pytest.raises(ValueError, match="'train' is a config section"):
        overrides({"train.epochs": 2, "train": 1})


def test_command_line_lists_cells_with_grid_overrides(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sweep",
            f"--grid={REPO / 'experiments/grids/quickstart.py'}:tiny",
            f"--root={tmp_path}",
            "--grid.seeds=(0, 1)",
            "--grid.protocols=('knn',)",
            "--dry_run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2 * (1 + 2 * 2), lines  # seeds x (pretraining + methods x fractions)
    assert lines[0].split() == ["to", "run", "pretrain/barlow_twins-breastmnist-s0"]
    assert lines[-1].split()[-1] == "eval/breastmnist/knn/random/f1.0-s1"


def test_finished_cells_are_skipped_under_a_relative_or_absolute_root(tmp_path, monkeypatch):
    def runner(cell: sweep.Cell) -> None:
        # Stands in for a run: its config.json and the marker of a finished run.
        sweep.writers.write_json(cell.workdir / "config.json", writers.config_json(cell.config))
        (cell.workdir / ("encoder" if cell.kind == "pretrain" else "results.json")).mkdir()

    grid = make_grid(methods=("barlow_twins", "random"), seeds=(0,))
    monkeypatch.chdir(tmp_path)
    first = sweep.run_sweep(grid, "runs", progress=False, runner=runner)
    assert set(statuses(first).values()) == {"done"} and len(first["cells"]) == 5
    again = sweep.run_sweep(grid, tmp_path / "runs", progress=False, runner=runner)
    assert set(statuses(again).values()) == {"skipped"}, again["cells"]


def _sweep_cli(*args: str) -> subprocess.CompletedProcess:
    grid = f"--grid={REPO / 'experiments/grids/quickstart.py'}:tiny"
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", grid, "--noprogress", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_line_refuses_an_empty_root_in_one_line():
    out = _sweep_cli("--root=")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        "error: --root is empty: name a folder for the run's outputs, e.g. --root=runs/my_run"
    ]


def test_command_line_refuses_a_root_in_use_in_one_line(tmp_path, start_holder):
    holder = start_holder(tmp_path)
    out = _sweep_cli(f"--root={tmp_path}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path} is in use by another ssljax run (PID {holder.pid}")
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


@pytest.mark.slow
@pytest.mark.parametrize("evaluate_failed", [False, True])
def test_a_pretraining_run_that_failed_its_health_check_is_not_evaluated(tmp_path, evaluate_failed):
    """A pretraining run whose health.json says failed: its evaluations are blocked with
    the reason and the way to evaluate it anyway, unless the grid asks to."""
    ran = []

    def runner(cell: sweep.Cell) -> None:
        ran.append(cell.name)
        cell.workdir.mkdir(parents=True)
        if cell.kind == "pretrain":
            verdict = {"verdict": "failed", "reasons": ["collapsed: embedding RankMe 349 -> 3"]}
            writers.write_json(cell.workdir / "health.json", {**verdict, "checks": []})
            (cell.workdir / "encoder").mkdir()
        else:
            (cell.workdir / "results.json").write_text("{}")

    grid = make_grid(methods=("barlow_twins", "random"), label_fractions=(1.0,), seeds=(0,))
    if evaluate_failed:
        grid.evaluate_failed = True
    record = sweep.run_sweep(grid, tmp_path, progress=False, runner=runner)
    pre, bt = "pretrain/barlow_twins-breastmnist-s0", "eval/breastmnist/knn/barlow_twins/f1.0-s0"
    if evaluate_failed:
        assert statuses(record)[bt] == "done" and bt in ran
        return
    assert statuses(record) == {
        pre: "unhealthy",
        bt: "blocked",
        "eval/breastmnist/knn/random/f1.0-s0": "done",
    }
    assert bt not in ran
    text = sweep.summary_text(record)
    assert f"UNHEALTHY {pre}: collapsed: embedding RankMe 349 -> 3" in text
    assert "--grid.evaluate_failed=True" in text
    # Run again: the finished, unhealthy pretraining run is still not evaluated.
    again = sweep.run_sweep(grid, tmp_path, progress=False, runner=runner)
    assert statuses(again)[pre] == "unhealthy" and statuses(again)[bt] == "blocked"


@pytest.mark.slow
def test_a_pretraining_run_from_before_verdicts_is_judged_from_its_metrics(tmp_path):
    """No health.json (a run finished by an older version): the sweep judges its
    metrics.jsonl as the report does, and a collapsed run is not evaluated."""

    def runner(cell: sweep.Cell) -> None:
        cell.workdir.mkdir(parents=True)
        if cell.kind == "pretrain":
            records = [{"step": 0, "embedding/rankme": 349.0, "features/rankme": 54.0}]
            records += [{"step": s, "loss": 200.0 - s / 10} for s in (8, 16, 24)]
            records += [{"step": 24, "embedding/rankme": 2.7, "features/rankme": 3.8}]
            text = "".join(json.dumps(r) + "\n" for r in records)
            (cell.workdir / "metrics.jsonl").write_text(text)
            (cell.workdir / "encoder").mkdir()
        else:
            (cell.workdir / "results.json").write_text("{}")

    grid = make_grid(methods=("barlow_twins", "random"), label_fractions=(1.0,), seeds=(0,))
    record = sweep.run_sweep(grid, tmp_path, progress=False, runner=runner)
    assert statuses(record)["pretrain/barlow_twins-breastmnist-s0"] == "unhealthy"
    assert statuses(record)["eval/breastmnist/knn/barlow_twins/f1.0-s0"] == "blocked"
    assert "collapsed: embedding RankMe 349.0 -> 2.7" in sweep.summary_text(record)

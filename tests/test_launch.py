"""launch.py as a user runs it: the augmentation preview and clear start-up errors."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.processes import launch

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_preview_writes_png(tmp_path):
    result = launch(
        "--config=configs/barlow.py:breastmnist", f"--workdir={tmp_path}", "--mode=preview"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "augment_preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_impossible_value_fails_before_compiling(tmp_path):
    result = launch(
        "--config=configs/simclr.py:breastmnist",
        f"--workdir={tmp_path}",
        "--config.loss.temperature=-0.5",
    )
    assert result.returncode != 0
    assert "config.loss.temperature=-0.5" in result.stderr
    assert not (tmp_path / "checkpoints").exists() and "Traceback" not in result.stderr


def test_missing_dataset_offline_names_url_md5_and_folder(tmp_path):
    result = launch(
        "--config=configs/barlow.py:dermamnist",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.root={tmp_path / 'data'}",
        "--config.data.download=False",
    )
    assert result.returncode != 0
    assert "dermamnist.npz" in result.stderr and "zenodo" in result.stderr.lower()
    assert "md5" in result.stderr.lower()


def _one_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    """The single stderr line of a run that failed as a user's mistake should."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


BARLOW = "--config=configs/barlow.py:breastmnist"


def test_empty_workdir_is_refused():
    line = _one_line(launch(BARLOW, "--workdir="))
    assert line == "error: --workdir is empty: name a folder for the run's outputs, e.g. " + (
        "--workdir=runs/my_run"
    )


def test_workdir_that_is_a_file_is_refused_after_expanding_tilde(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    result = subprocess.run(
        [sys.executable, "launch.py", BARLOW, "--workdir=~/notes.txt"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert _one_line(result) == (
        f"error: --workdir {mine} is a file, not a folder: choose another --workdir, or move "
        "the file away"
    )
    assert mine.read_text() == "mine" and not (REPO / "~").exists()


def test_unwritable_workdir_is_refused(unwritable):
    line = _one_line(launch(BARLOW, f"--workdir={unwritable / 'run'}"))
    assert line.startswith(f"error: --workdir {unwritable / 'run'}: this user cannot create")


def _npz_with_objects(path: pathlib.Path) -> None:
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = np.zeros((n, 28, 28), np.uint8)
        arrays[f"{split}_labels"] = np.array([[{"label": 0}]] * n, dtype=object)
    np.savez(path, **arrays)


@pytest.mark.parametrize("content", ["text", "objects"])
def test_bad_npz_is_one_line_and_leaves_no_workdir(tmp_path, content):
    path = tmp_path / "mine.npz"
    if content == "text":
        path.write_text("image,label\n")
        expected = f"error: {path}: is not a .npz (zip) file"
    else:
        _npz_with_objects(path)
        expected = f"error: {path}: train_labels, val_labels, test_labels hold pickled Python"
    line = _one_line(
        launch(
            BARLOW,
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.path={path}",
            "--config.data.task=binary-class",
        )
    )
    assert line.startswith(expected)
    assert not (tmp_path / "run").exists()


def test_finished_workdir_with_another_config_is_refused(tmp_path):
    from configs import knn

    config = knn.get_config("breastmnist")
    config.eval.knn_k = 5
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    (tmp_path / "results.json").write_text("{}")
    line = _one_line(launch("--config=configs/knn.py:breastmnist", f"--workdir={tmp_path}"))
    assert line == (
        f"error: {tmp_path} holds a run with a different config (eval.knn_k differ). Use a "
        "new --workdir, or the original config to resume."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "config.json", "results.json"]


def test_second_run_on_a_workdir_in_use_stops_at_once(tmp_path, start_holder):
    holder = start_holder(tmp_path)
    start = time.perf_counter()
    line = _one_line(launch(BARLOW, f"--workdir={tmp_path}"))
    assert line.startswith(f"error: {tmp_path} is in use by another ssljax run (PID {holder.pid}")
    assert time.perf_counter() - start < 60  # JAX's import; nothing is loaded or compiled
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


# A tiny pretraining: 8 steps an epoch, a checkpoint at steps 8 and 16 (test_pretrain.py's).
TINY_PRETRAIN = [
    BARLOW,
    "--config.model.width=4",
    "--config.model.projector_dims=(64, 64)",
    "--config.train.batch_size=64",
    "--config.train.epochs=2",
    "--config.train.warmup_epochs=0",
    "--config.checkpoint.every_epochs=1",
    "--config.log.every_steps=1",
    "--config.log.monitor_every_epochs=1",
    "--config.log.progress=False",
]


def _interrupted_run(workdir: pathlib.Path, ready: str) -> subprocess.CompletedProcess:
    """A tiny pretraining sent SIGINT once `workdir/ready` exists."""
    proc = subprocess.Popen(
        [sys.executable, "launch.py", *TINY_PRETRAIN, f"--workdir={workdir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (workdir / ready).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_ctrl_c_during_start_up_says_the_run_starts_over(tmp_path):
    # Sent while the run loads data and compiles, where a KeyboardInterrupt used to land in
    # a garbage-collection callback and be swallowed: now a flag, acted on at the first
    # safe point (the step-0 monitor or the first step), every time.
    result = _interrupted_run(tmp_path, ready=".lock")
    assert _one_line(result, status=130) == (
        f"interrupted: run the same command to resume {tmp_path} from the start (it has no "
        "checkpoint yet)"
    )
    assert not (tmp_path / "checkpoints" / "8").exists()


@pytest.mark.slow
def test_ctrl_c_during_training_says_the_step_it_resumes_from(tmp_path):
    result = _interrupted_run(tmp_path, ready="checkpoints/8/commit_success.txt")
    assert _one_line(result, status=130) == (
        f"interrupted: run the same command to resume {tmp_path} from step 8 (its last checkpoint)"
    )
    assert not (tmp_path / "encoder").exists()  # it stopped before the end (step 16)


@pytest.mark.slow
def test_init_workdir_of_another_width_is_one_line(tmp_path):
    import jax
    import jax.numpy as jnp

    from ssljax import checkpoint, models

    encoder = models.make_encoder("resnet18", 2, "auto", 28, "float32", False)
    init = jax.jit(lambda key: encoder.init(key, jnp.zeros((1, 28, 28, 1)), train=False))
    checkpoint.save_encoder(tmp_path / "pretrained", init(jax.random.key(0)))
    line = _one_line(
        launch(
            "--config=configs/linear.py:breastmnist",
            f"--workdir={tmp_path / 'run'}",
            f"--config.init.workdir={tmp_path / 'pretrained'}",
            "--config.model.width=4",
        )
    )
    assert line.startswith(
        f"error: the encoder in {tmp_path / 'pretrained'} does not match this config "
        "(model.name=resnet18, model.width=4, 1 input channel(s), 28 px)."
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_impossible_schedule_fails_before_config_json_and_the_fix_runs(tmp_path):
    """Explicit decay epochs beyond a shortened run are refused in one line before anything
    is written, so the corrected command then runs in the same workdir."""
    command = [
        "--config=configs/finetune.py:breastmnist",
        f"--workdir={tmp_path}",
        "--config.model.width=4",
        "--config.train.batch_size=128",
        "--config.eval.batch_size=128",
        "--config.data.label_fraction=0.1",
        "--config.train.epochs=1",
        "--config.log.progress=False",
    ]
    line = _one_line(launch(*command, "--config.train.decay_epochs=(50, 75)"))
    assert line.startswith("error: train.decay_epochs must be ascending and within")
    assert "(50, 75)" in line
    assert not (tmp_path / "config.json").exists()
    result = launch(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "config.json").is_file() and (tmp_path / "results.json").is_file()

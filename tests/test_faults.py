"""kill -9 at random moments, many times in a row: the run ends as if never interrupted.

`launch.py` runs as a user starts it, in a subprocess, and is killed with SIGKILL: after a
seeded random delay (start-up), a seeded random moment after a given training step (a
step), or where a delay rarely lands, through the opt-in hook of `ssljax/faults.py` (a
checkpoint write under way, half a metrics.jsonl line on disk, the encoder export under
way). Then the same command runs to the end. It must give what an uninterrupted run gives:
the exported encoder bit for bit, metrics.jsonl record for record (timing fields aside), a
fine-tune's best epochs and test scores; and no half-written file or folder may be left.

Every run uses one device (the faults do not depend on the mesh; one device compiles and
steps fastest on 2 cores) and the session's persistent compilation cache, which the
uninterrupted reference runs fill for the killed ones.
"""

import contextlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

from ssljax import checkpoint, faults, workdirs, writers

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    # Cache every program, not only those that took a second to compile.
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
}
COMMON = ["--config.model.width=4", "--config.log.progress=False"]
PRETRAIN = [
    "--config=configs/barlow.py:breastmnist",
    *COMMON,
    "--config.model.projector_dims=(64, 64)",
    "--config.train.batch_size=64",  # 546 images: 8 steps an epoch
    "--config.train.epochs=2",
    "--config.train.warmup_epochs=0",
    "--config.checkpoint.every_epochs=1",
    "--config.log.every_steps=1",
    "--config.log.monitor_every_epochs=1",
]
FINETUNE = [
    "--config=configs/finetune.py:breastmnist",
    *COMMON,
    "--config.train.batch_size=64",  # 9 steps an epoch
    "--config.train.epochs=3",
    "--config.train.schedule=constant",
    "--config.checkpoint.every_epochs=1",
    "--config.eval.batch_size=128",
]
TIMING = ("time", "images_per_s")
PRETRAIN_STEPS = 16
# How each run of a sequence ends: ("start-up", None), ("step", s): a random moment after
# the record of step s (or the first step this run logs, when it resumed past s), or
# ("point", "name:n"): SSLJAX_FAULT_POINT.
PRETRAIN_KILLS = [
    ("start-up", None),
    ("point", "metrics_write:2"),  # the step-1 record, after the step-0 monitor's
    ("step", 5),
    ("point", "checkpoint_write:1"),  # step 8's
    ("start-up", None),
    ("step", 11),
    ("point", "metrics_write:3"),
    ("point", "checkpoint_write:1"),  # step 16's, or 8's when that one was cut short
    ("point", "encoder_export:1"),
    ("start-up", None),
    ("point", "encoder_export:1"),
]
FINETUNE_KILLS = [
    ("point", "metrics_write:1"),  # the epoch-1 record
    ("point", "checkpoint_write:1"),
    ("step", 18),  # into the third epoch
    ("point", "checkpoint_write:1"),
]
DEADLINE_S = 240


class Kill(NamedTuple):
    """What one killed run did, and what it left."""

    how: str
    alive_s: float
    status: int
    checkpoints: list[int]
    records: int
    partial_line: bool
    orbax_tmp: list[str]


def _start(args: list[str], workdir: pathlib.Path, fault: str = "") -> subprocess.Popen:
    env = {**ENV, faults.ENV: fault} if fault else ENV
    return subprocess.Popen(
        [sys.executable, "launch.py", *args, f"--workdir={workdir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_to_end(args: list[str], workdir: pathlib.Path) -> subprocess.Popen:
    proc = _start(args, workdir)
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return proc


def _records(workdir: pathlib.Path) -> list[dict[str, Any]]:
    """metrics.jsonl's complete lines (a live run may be writing the last one)."""
    path = workdir / writers.METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        with contextlib.suppress(ValueError):  # the live run's line being written
            out.append(json.loads(line))
    return out


def _wait_for_step(proc: subprocess.Popen, workdir: pathlib.Path, step: int) -> None:
    """Returns once this run logged step `step`, or a later one (a run resumed past it)."""
    started = time.time()
    deadline = started + DEADLINE_S
    while proc.poll() is None and time.time() < deadline:
        mine = [r for r in _records(workdir) if r["time"] >= started and "loss" in r]
        if any(r["step"] >= step for r in mine) or (mine and mine[0]["step"] > step):
            return
        time.sleep(0.02)


def _kill(args, workdir, how: str, arg: Any, rng: random.Random) -> Kill:
    start = time.time()
    proc = _start(args, workdir, arg if how == "point" else "")
    if how == "start-up":
        time.sleep(rng.uniform(1.0, 8.0))  # imports, data, restore, compilation
    elif how == "step":
        _wait_for_step(proc, workdir, arg)
        time.sleep(rng.uniform(0.0, 0.3))
    if how != "point" and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    metrics = workdir / writers.METRICS_FILE
    text = metrics.read_bytes() if metrics.exists() else b""
    return Kill(
        f"{how} {arg}" if arg is not None else how,
        round(time.time() - start, 1),
        proc.returncode,
        checkpoint.committed_steps(workdir / checkpoint.CHECKPOINT_DIR),
        text.count(b"\n"),
        bool(text) and not text.endswith(b"\n"),
        sorted(str(p.relative_to(workdir)) for p in workdir.rglob(f"*{checkpoint.ORBAX_TMP}*")),
    )


def _kill_repeatedly(args, workdir, schedule, seed: int) -> list[Kill]:
    rng = random.Random(seed)
    kills = [_kill(args, workdir, how, arg, rng) for how, arg in schedule]
    print(f"\n{len(kills)} kills of {args[0]}:")
    for k in kills:
        print(f"  {k}")
    return kills


def _half_written(workdir: pathlib.Path) -> list[str]:
    """Files and folders a write cut short would leave: temporaries, unfinished checkpoints."""
    marks = (checkpoint.ORBAX_TMP, ".incomplete-", ".damaged-")
    bad = [
        str(p)
        for p in workdir.rglob("*")
        if p.name.endswith(".tmp") or any(m in p.name for m in marks)
    ]
    steps_dir = workdir / checkpoint.CHECKPOINT_DIR
    if steps_dir.is_dir():
        bad += [
            str(p)
            for p in steps_dir.iterdir()
            if p.is_dir() and not (p / checkpoint.COMMIT_MARKER).exists()
        ]
    text = (workdir / writers.METRICS_FILE).read_bytes()
    if not text.endswith(b"\n"):
        bad.append("metrics.jsonl ends in a partial line")
    return bad


def _without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _encoder_bytes(workdir: pathlib.Path) -> list[tuple[str, tuple, bytes]]:
    leaves = jax.tree_util.tree_leaves_with_path(checkpoint.load_encoder(workdir))
    return [
        (jax.tree_util.keystr(path), np.asarray(x).shape, np.asarray(x).tobytes())
        for path, x in leaves
    ]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Uninterrupted runs: a pretraining and a fine-tune of random init, side by side (they
    are independent, and two processes use both cores while each compiles)."""
    root = tmp_path_factory.mktemp("reference")
    workdirs_ = {"pretrain": root / "pretrain", "finetune": root / "finetune"}
    procs = {
        name: _start(PRETRAIN if name == "pretrain" else FINETUNE, w)
        for name, w in workdirs_.items()
    }
    for proc in procs.values():
        _, stderr = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, stderr[-3000:]
    return workdirs_


@pytest.mark.slow
def test_pretraining_killed_11_times_ends_as_if_never_interrupted(references, tmp_path):
    reference = references["pretrain"]
    workdir = tmp_path / "run"
    start = time.perf_counter()
    kills = _kill_repeatedly(PRETRAIN, workdir, PRETRAIN_KILLS, seed=13)
    _run_to_end(PRETRAIN, workdir)
    print(f"pretraining: {len(kills)} kills, {time.perf_counter() - start:.0f} s in all")

    assert all(k.status == -signal.SIGKILL for k in kills), kills
    # The kills landed where they were meant to: mid-line, mid-save, mid-export, mid-run.
    assert any(k.partial_line for k in kills), kills
    assert any(t.startswith("checkpoints/") for k in kills for t in k.orbax_tmp), kills
    assert any(t.startswith("encoder") for k in kills for t in k.orbax_tmp), kills
    assert any(k.records > 0 and not k.checkpoints for k in kills), kills

    assert _encoder_bytes(workdir) == _encoder_bytes(reference)
    records = writers.read_metrics(workdir)
    assert _without_timing(records) == _without_timing(writers.read_metrics(reference))
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == list(range(1, PRETRAIN_STEPS + 1))
    assert checkpoint.committed_steps(workdir / checkpoint.CHECKPOINT_DIR) == [8, 16]
    assert _half_written(workdir) == []


@pytest.mark.slow
def test_finetune_killed_4_times_selects_and_scores_as_if_never_interrupted(references, tmp_path):
    reference = references["finetune"]
    workdir = tmp_path / "run"
    start = time.perf_counter()
    kills = _kill_repeatedly(FINETUNE, workdir, FINETUNE_KILLS, seed=5)
    _run_to_end(FINETUNE, workdir)
    print(f"fine-tune: {len(kills)} kills, {time.perf_counter() - start:.0f} s in all")

    assert all(k.status == -signal.SIGKILL for k in kills), kills
    assert any(k.partial_line for k in kills) and any(k.orbax_tmp for k in kills), kills
    results = writers.read_json(workdir / "results.json")
    expected = writers.read_json(reference / "results.json")
    for key in ("selection", "best_epoch", "val", "test", "n_labelled", "steps"):
        assert results[key] == expected[key], key
    scores, expected_scores = (np.load(w / "test_scores.npz") for w in (workdir, reference))
    np.testing.assert_array_equal(scores["scores"], expected_scores["scores"])
    records = writers.read_metrics(workdir)
    assert _without_timing(records) == _without_timing(writers.read_metrics(reference))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert _half_written(workdir) == []


def test_unfinished_orbax_saves_are_removed_on_restart(tmp_path):
    """What a save cut short by a full disk or a kill leaves: Orbax's temporary folders of a
    step and of the encoder export. Opening the checkpoints, and exporting, remove them."""
    state = {"w": jax.numpy.arange(4.0)}
    ckpt = checkpoint.Checkpointer(tmp_path, keep=2)
    ckpt.save(8, state)
    ckpt.close()
    steps_dir = tmp_path / checkpoint.CHECKPOINT_DIR
    tmp_step = steps_dir / f"16{checkpoint.ORBAX_TMP}-1796000000"
    tmp_encoder = tmp_path / f"{checkpoint.ENCODER_DIR}{checkpoint.ORBAX_TMP}-1796000000"
    for folder in (tmp_step, tmp_encoder):
        (folder / "d").mkdir(parents=True)
        (folder / "d" / "half").write_bytes(b"\0" * 100)

    ckpt = checkpoint.Checkpointer(tmp_path, keep=2)
    restored, step = ckpt.restore_latest(state)
    ckpt.close()
    assert step == 8 and not tmp_step.exists()
    assert sorted(p.name for p in steps_dir.iterdir()) == ["8"]
    checkpoint.save_encoder(tmp_path, {"params": state, "batch_stats": {}})
    assert not tmp_encoder.exists() and (tmp_path / checkpoint.ENCODER_DIR).is_dir()


def test_atomic_write_leftovers_of_a_killed_run_are_removed_by_the_lock(tmp_path):
    dead = tmp_path / ".results.json.4242.tmp"  # atomic_write's, by a process killed mid-write
    dead.write_text('{"half": ')
    mine = tmp_path / "notes.tmp"  # not atomic_write's: not ours to remove
    mine.write_text("mine")
    with workdirs.lock(tmp_path):
        assert not dead.exists() and mine.read_text() == "mine"

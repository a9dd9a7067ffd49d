"""Crash-safe records: metrics.jsonl cut short, atomic JSON, damaged checkpoints moved aside.

All through the API on files, without compiling a model.
"""

import json
import logging
import os
import pathlib
import struct
import subprocess
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax import checkpoint, errors, writers


def write_lines(workdir: pathlib.Path, text: str) -> pathlib.Path:
    path = workdir / writers.METRICS_FILE
    path.write_text(text)
    return path


GOOD = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3))


def test_partial_last_line_is_dropped_with_one_warning(tmp_path, caplog):
    path = write_lines(tmp_path, GOOD + '{"step": 4, "lo')  # kill -9 mid-write
    with caplog.at_level(logging.WARNING):
        records = writers.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    [warning] = caplog.records
    assert str(path) in warning.getMessage() and "last line" in warning.getMessage()


def test_zeros_after_a_power_cut_are_a_partial_last_line(tmp_path):
    write_lines(tmp_path, GOOD + "\0" * 40)
    assert len(writers.read_metrics(tmp_path)) == 3


def test_bad_line_in_the_middle_names_file_and_line(tmp_path):
    path = write_lines(tmp_path, GOOD.replace('{"step": 2', '{"step": 2,,', 1))
    with pytest.raises(errors.DataError, match=rf"{path}, line 2, is not JSON"):
        writers.read_metrics(tmp_path)


def test_resume_truncates_the_partial_line_before_appending(tmp_path):
    path = write_lines(tmp_path, GOOD + '{"step": 4, "lo')
    writer = writers.MetricWriter(tmp_path, total_steps=10, initial_step=3, progress=False)
    writer.write(4, {"loss": 0.2})
    writer.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_write_json_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    writers.write_json(path, {"a": 1})
    writers.write_json(path, {"a": np.float32(2.0)})
    assert json.loads(path.read_text()) == {"a": 2.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(TypeError):  # fails while writing: the old file stays whole
        writers.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_corrupt_config_json_is_named(tmp_path):
    (tmp_path / writers.CONFIG_FILE).write_text('{"seed": ')
    with pytest.raises(errors.DataError, match=rf"{tmp_path}/config.json is not valid JSON"):
        writers.check_config_matches(tmp_path, {"seed": 0})


def test_config_round_trip_and_resume_check(tmp_path):
    from configs import barlow

    config = barlow.get_config("breastmnist")
    writers.write_config(tmp_path, config)
    scale = config.augment.view1.crop_scale
    assert writers.read_config(tmp_path)["augment"]["view1"]["crop_scale"] == list(scale)
    loaded = writers.load_config(tmp_path)
    assert loaded.augment.view1.crop_scale == config.augment.view1.crop_scale  # tuples again
    assert isinstance(loaded.augment.view1.crop_scale, tuple)
    assert writers.config_json(loaded) == writers.config_json(config)
    writers.check_config_matches(tmp_path, config)
    config.data.root = "/elsewhere"  # a key that may change on resume
    writers.check_config_matches(tmp_path, config)
    config.train.epochs += 1
    with pytest.raises(errors.WorkdirError, match=r"\(train.epochs differ\)"):
        writers.check_config_matches(tmp_path, config)
    with pytest.raises(errors.DataError, match="config.json not found"):
        writers.load_config(tmp_path / "nothing")


STATE = {"w": jnp.arange(1000.0), "b": {"x": jnp.ones((30, 30))}}


def two_checkpoints(workdir: pathlib.Path) -> pathlib.Path:
    ckpt = checkpoint.Checkpointer(workdir, keep=3)
    ckpt.save(3, STATE)
    ckpt.wait()
    ckpt.save(5, jax.tree.map(lambda x: x + 1, STATE))
    ckpt.close()
    return workdir / checkpoint.CHECKPOINT_DIR


def damage(step_dir: pathlib.Path, how: str) -> None:
    """Deletes or truncates the largest data file of a checkpoint step."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(files, key=lambda p: p.stat().st_size)
    if how == "delete":
        largest.unlink()
    else:
        largest.write_bytes(largest.read_bytes()[:100])


def restore(workdir: pathlib.Path):
    ckpt = checkpoint.Checkpointer(workdir, keep=3)
    try:
        return ckpt.restore_latest(STATE)
    finally:
        ckpt.close()


@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_damaged_newest_checkpoint_is_moved_aside_once(tmp_path, caplog, how):
    directory = two_checkpoints(tmp_path)
    damage(directory / "5", how)
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == 3
    np.testing.assert_array_equal(state["w"], STATE["w"])
    assert (directory / "5.damaged-0").is_dir() and not (directory / "5").exists()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(directory / "5") in warning and "5.damaged-0" in warning
    assert "\n" not in warning and "TensorStore" not in warning
    log = (tmp_path / errors.ERRORS_LOG).read_text()
    assert f"checkpoint {directory / '5'} cannot be restored" in log and "Traceback" in log

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert restore(tmp_path)[1] == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_reader_moves_nothing(tmp_path):
    directory = two_checkpoints(tmp_path)
    damage(directory / "5", "delete")
    (directory / "9").mkdir()  # a step being written by a live run
    ckpt = checkpoint.Checkpointer(tmp_path, keep=3, repair=False)
    assert ckpt.restore_latest(STATE)[1] == 3
    ckpt.close()
    assert sorted(p.name for p in directory.iterdir()) == ["3", "5", "9"]


def test_latest_step(tmp_path):
    ckpt = checkpoint.Checkpointer(tmp_path, keep=3)
    assert ckpt.latest_step() is None
    ckpt.save(7, STATE)
    assert ckpt.latest_step() == 7
    ckpt.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB tmpfs folder (root only): a disk a test can fill."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("needs root and mount for a small disk")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)  # also if a file is open


def test_a_full_disk_raises_in_the_writer_instead_of_hanging(small_disk):
    # tensorboardX's SummaryWriter wrote from a thread through a queue of 10 events: a full
    # disk ended the thread and the 11th scalar waited forever.
    threads = set(threading.enumerate())
    writer = writers.MetricWriter(small_disk, total_steps=10_000, progress=False)
    writer.write(1, {"loss": 1.0})
    (small_disk / "filler").write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * 4096))
    start = time.perf_counter()
    with pytest.raises(OSError) as e:
        for step in range(2, 10_000):
            writer.write(step, {"loss": 1.0 / step, "lr": 0.1})
    assert errors.disk_full(e.value)
    with pytest.raises(OSError):
        writer.close()
    assert time.perf_counter() - start < 30
    assert set(threading.enumerate()) <= threads  # no writer thread at all
    (small_disk / "filler").unlink()
    assert writers.read_metrics(small_disk)[0]["step"] == 1


def test_tensorboard_events_are_tfrecords_of_the_logged_scalars(tmp_path):
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    writer = writers.MetricWriter(tmp_path, total_steps=10, progress=False)
    writer.write(1, {"loss": 1.5, "epoch": 0})
    writer.write(2, {"loss": 1.25, "nan": float("nan"), "name": "x"})
    writer.close()
    [path] = (tmp_path / "tensorboard").iterdir()
    data, events = path.read_bytes(), []
    while data:
        (n,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
        assert struct.unpack("<I", data[12 + n : 16 + n])[0] == masked_crc32c(data[12 : 12 + n])
        events.append(event_pb2.Event.FromString(data[12 : 12 + n]))
        data = data[16 + n :]
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in events[1:]]
    assert scalars == [(1, {"loss": 1.5, "epoch": 0.0}), (2, {"loss": 1.25})]


def test_the_run_behind_an_encoder_is_found_one_way(tmp_path):
    """`init.workdir` names a run or its encoder/ folder; evaluation, embed and
    load_encoder all find the run's config.json through `checkpoint.run_config_file`."""
    run = tmp_path / "run"
    (run / checkpoint.ENCODER_DIR).mkdir(parents=True)
    (run / writers.CONFIG_FILE).write_text("{}")
    assert checkpoint.run_config_file(run) == run / writers.CONFIG_FILE
    assert checkpoint.run_config_file(run / checkpoint.ENCODER_DIR) == run / writers.CONFIG_FILE
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / writers.CONFIG_FILE).write_text("{}")  # its parent's is another run's
    assert checkpoint.run_config_file(export) is None

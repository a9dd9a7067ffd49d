"""Workdir checks and the workdir lock, through the API (no model is compiled here)."""

import os
import signal

import pytest

from ssljax import workdirs
from ssljax.errors import ResourceError, WorkdirError, WorkdirInUseError


def test_second_process_is_refused_naming_the_holder(tmp_path, start_holder):
    holder = start_holder(tmp_path / "run")
    try:
        with pytest.raises(WorkdirInUseError) as e, workdirs.lock(tmp_path / "run"):
            pass
        assert f"PID {holder.pid} on " in str(e.value) and str(tmp_path / "run") in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder's lock file survives a refused run.
    assert (tmp_path / "run" / workdirs.LOCK_FILE).read_text().startswith(f"PID {holder.pid}")


def test_kill_9_leaves_no_stale_lock(tmp_path, start_holder):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with workdirs.lock(tmp_path) as path:
        assert (path / workdirs.LOCK_FILE).read_text().startswith(f"PID {os.getpid()} on ")


def test_lock_is_taken_once_and_removes_what_a_failed_run_made(tmp_path):
    workdir = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), workdirs.lock(workdir):
        assert (workdir / workdirs.LOCK_FILE).is_file()
        # One entry locks once (issue 23): a second lock in the same process is a bug.
        with (
            pytest.raises(WorkdirError, match="held by this process already"),
            workdirs.lock(workdir),
        ):
            pass
        raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "a").exists()
    # A failed run that wrote something keeps its folder.
    with pytest.raises(RuntimeError), workdirs.lock(workdir):
        (workdir / "config.json").write_text("{}")
        raise RuntimeError("failed later")
    assert (workdir / "config.json").is_file()


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_workdir_is_refused(name):
    with pytest.raises(WorkdirError, match="--workdir is empty"):
        workdirs.check(name)


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert workdirs.check("~/runs/x") == tmp_path / "runs" / "x"


def test_a_file_is_refused(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("mine")
    with pytest.raises(WorkdirError, match="is a file, not a folder"):
        workdirs.check(path)
    with pytest.raises(WorkdirError, match=r"inside .*results\.txt, which is a file"):
        workdirs.check(path / "run")
    assert path.read_text() == "mine"


def test_unwritable_folder_is_refused(unwritable):
    with pytest.raises(WorkdirError, match="this user cannot write in"):
        workdirs.check(unwritable)
    with pytest.raises(WorkdirError, match="cannot create .*new in"):
        workdirs.check(unwritable / "new")


def test_too_little_free_space_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(workdirs, "MIN_FREE_BYTES", 2**62)
    with pytest.raises(ResourceError, match="MB free, and a run needs at least"):
        workdirs.check(tmp_path / "run")
    assert not (tmp_path / "run").exists()

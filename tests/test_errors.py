"""One line for every failure a user can cause: errors.report_failure and the library logs."""

import errno
import logging

import pytest

from ssljax import errors


def fail(exc: BaseException, capsys, workdir=None, resume="from step 8 (its last checkpoint)"):
    """(exit status, stderr lines) of report_failure for `exc` raised and caught."""
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001
        status = errors.report_failure(e, workdir, resume)
    return status, capsys.readouterr().err.splitlines()


def test_own_error_is_its_message_and_traceback_goes_to_the_workdir(tmp_path, capsys):
    status, lines = fail(errors.DataError("x.npz: is not a .npz (zip) file"), capsys, tmp_path)
    assert (status, lines) == (1, ["error: x.npz: is not a .npz (zip) file"])
    log = (tmp_path / errors.ERRORS_LOG).read_text()
    assert "Traceback" in log and "DataError: x.npz" in log


def test_workdir_errors_write_nothing_in_the_workdir(tmp_path, capsys):
    status, lines = fail(errors.WorkdirInUseError("workdir w is in use"), capsys, tmp_path)
    assert (status, lines) == (1, ["error: workdir w is in use"])
    assert list(tmp_path.iterdir()) == []


def test_full_disk_as_oserror_and_as_tensorstore_says_free_space_and_resume(capsys):
    full = OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl")
    status, lines = fail(full, capsys)
    assert status == 1
    assert lines == [
        "error: no space left on device writing /w/metrics.jsonl: free some space, then run "
        "the same command to resume from step 8 (its last checkpoint)"
    ]
    # Orbax's save fails with TensorStore's ValueError, raised from another exception.
    store = ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/16.orbax-checkpoint-tmp'
        '/_sharding": Failed to write 15179 bytes to file 9: No space left on device [os_'
        "error_code='28']"
    )
    try:
        raise store from RuntimeError("commit failed")
    except ValueError as e:
        assert errors.report_failure(e, None, "from the start") == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no space left on device: free some space, then run the same")


def test_permission_denied_names_the_file(capsys):
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/run/config.json")
    assert fail(denied, capsys) == (1, ["error: Permission denied: /data/run/config.json"])


def test_ctrl_c_says_where_the_run_resumes(capsys):
    assert fail(KeyboardInterrupt(), capsys, resume="w from the start") == (
        130,
        ["interrupted: run the same command to resume w from the start"],
    )


def test_a_bug_keeps_its_traceback(tmp_path, capsys):
    with pytest.raises(ZeroDivisionError):
        fail(ZeroDivisionError("division by zero"), capsys, tmp_path)
    assert "ZeroDivisionError" in (tmp_path / errors.ERRORS_LOG).read_text()


def test_nonfinite_message_counts_from_one_and_names_the_checkpoint():
    kept = errors.NonFiniteLossError.at("pretraining", 9, 8, "Lower train.base_lr.")
    assert str(kept) == (
        "the pretraining loss became non-finite at step 9; that update was skipped and "
        "training stopped; the last good checkpoint (step 8) is kept. Lower train.base_lr."
    )
    none = errors.NonFiniteLossError.at("fine-tuning", 1, None, "Lower train.base_lr.")
    assert "no checkpoint was written yet" in str(none) and "kept" not in str(none)


def test_library_records_go_to_errors_log_not_the_terminal(tmp_path):
    shown: list[str] = []
    terminal = logging.Handler()
    terminal.emit = lambda record: shown.append(record.getMessage())
    root = logging.getLogger()
    root.addHandler(terminal)

    def log(pathname: str, message: str) -> None:
        root.handle(logging.LogRecord("absl", logging.ERROR, pathname, 1, message, None, None))

    try:
        with errors.library_logs_to_workdir(tmp_path):
            log("/site-packages/orbax/checkpoint/_src/futures/future.py", "thread failed")
            log("/repo/ssljax/checkpoint.py", "moved aside")
        log("/site-packages/orbax/checkpoint/manager.py", "after the run")
    finally:
        root.removeHandler(terminal)
    assert shown == ["moved aside", "after the run"]
    assert "thread failed" in (tmp_path / errors.ERRORS_LOG).read_text()

"""TFDS builds that are safe to run twice at once and to kill (issue 22), and quiet: no
FileExistsError between two builders, no `incomplete.*` folder left by a kill -9 once the
next build starts, no `tmpXXXXtfds` folder in the temp directory, TFDS's log lines in the
run's errors.log."""

import logging
import os
import pathlib
import signal
import subprocess
import sys

from ssljax import errors, faults
from ssljax.data import registry, tfds_medmnist
from tests.test_tfds import _user_npz, data_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# Builds the dataset of a user's .npz and prints a digest of every record read back.
BUILD = """
import hashlib, sys
import numpy as np
from ssljax.data import registry, tfds_medmnist
from tests.test_tfds import data_config
config = data_config(sys.argv[1], path=sys.argv[2], task=registry.MULTI_LABEL, name="mine")
builder = tfds_medmnist.prepare(config, progress=False)
digest = hashlib.sha256()
for split in ("train", "val", "test"):
    for record in builder.as_data_source(split=split):
        digest.update(np.asarray(record["image"]).tobytes())
        digest.update(np.asarray(record["label"]).tobytes())
print(digest.hexdigest())
"""


def _build(tfds_dir, npz, tmp, fault: str = "") -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), faults.ENV: fault}
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(tfds_dir), str(npz)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _leftovers(tfds_dir: pathlib.Path) -> list[pathlib.Path]:
    return list(tfds_dir.glob("medmnist/*/incomplete.*"))


def test_two_builds_at_once_both_finish_with_equal_data(tmp_path):
    npz, tmp = _user_npz(tmp_path / "mine.npz"), tmp_path / "tmp"
    tmp.mkdir()
    procs = [_build(tmp_path / "tfds", npz, tmp) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    assert not _leftovers(tmp_path / "tfds")
    assert list(tmp.iterdir()) == []  # TFDS's GCS lookup left an empty tmpXXXXtfds here
    said = [line for out, _ in outs for line in out.splitlines()[:-1]]  # before the digest
    assert len(said) == 1 and said[0].startswith("building medmnist/file_mine_"), said


def test_a_killed_build_leaves_nothing_once_the_next_one_ran(tmp_path, capsys):
    npz, tmp = _user_npz(tmp_path / "mine.npz"), tmp_path / "tmp"
    tmp.mkdir()
    killed = _build(tmp_path / "tfds", npz, tmp, fault="tfds_shard_written:1")
    killed.communicate(timeout=180)
    assert killed.returncode == -signal.SIGKILL
    left = _leftovers(tmp_path / "tfds")
    assert len(left) == 1 and any(left[0].rglob("*.array_record-*"))  # what kill -9 leaves
    config = data_config(tmp_path / "tfds", path=str(npz), task=registry.MULTI_LABEL)
    builder = tfds_medmnist.prepare(config, progress=False)
    assert tfds_medmnist.is_built(builder) and not _leftovers(tmp_path / "tfds")
    lines = [line for line in capsys.readouterr().out.splitlines() if "unfinished" in line]
    assert lines == [
        f"warning: removed 1 unfinished TFDS build(s) in {left[0].parent}, left by a run that "
        f"was killed ({left[0].name})"
    ]
    assert len(builder.as_data_source(split="train")) == 40


def test_tfds_log_lines_go_to_the_runs_log(tmp_path, capfd):
    npz = _user_npz(tmp_path / "mine.npz")
    config = data_config(tmp_path / "tfds", path=str(npz), task=registry.MULTI_LABEL)
    terminal = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(terminal)
    try:
        with errors.library_logs_to_workdir(tmp_path):
            tfds_medmnist.builder_for(config)
        tfds_medmnist.builder_for(config)  # outside a run: shown, as before
    finally:
        logging.getLogger().removeHandler(terminal)
    shown = capfd.readouterr().err
    assert shown.count("Using custom data configuration") == 1
    logged = (tmp_path / errors.ERRORS_LOG).read_text()
    assert logged.count("Using custom data configuration: MedMNISTConfig(") == 1

"""launch.py as a user runs it: the augmentation preview and clear start-up errors."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_preview_writes_png(tmp_path):
    result = _launch(
        "--config=configs/barlow.py:breastmnist", f"--workdir={tmp_path}", "--mode=preview"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "augment_preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_impossible_value_fails_before_compiling(tmp_path):
    result = _launch(
        "--config=configs/simclr.py:breastmnist",
        f"--workdir={tmp_path}",
        "--config.loss.temperature=-0.5",
    )
    assert result.returncode != 0
    assert "config.loss.temperature=-0.5" in result.stderr
    assert not (tmp_path / "checkpoints").exists() and "Traceback" not in result.stderr


def test_missing_dataset_offline_names_url_md5_and_folder(tmp_path):
    result = _launch(
        "--config=configs/barlow.py:dermamnist",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.root={tmp_path / 'data'}",
        "--config.data.download=False",
    )
    assert result.returncode != 0
    assert "dermamnist.npz" in result.stderr and "zenodo" in result.stderr.lower()
    assert "md5" in result.stderr.lower()

"""A folder nobody here made (issue 22): decompression bombs, FIFOs, devices and symlinks
beside good images. The conversion finishes, in bounded memory and time, skips every bad
entry with its reason, and opens nothing outside the folder."""

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from ssljax.data import imagefile
from tests import crafted

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "folder_rss_worker.py"
# Above the worker's resident set after its imports (55 MiB): converting 42 small images,
# hashing the crafted files (~22 MB), reading headers took 14 MiB (2026-12-06). Decoding
# any one of the bombs would take 2-13 GB (9-27 bytes per pixel, measured at 3000 px).
PEAK_BOUND = 64 << 20
TOO_LARGE = "too large: 12000x12000 px, above data.max_pixels=16777216"
OUTSIDE = "a symlink to outside the folder (not followed)"


def _link(path: pathlib.Path, target: str | os.PathLike) -> None:
    path.symlink_to(target)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path, dict[str, str]]:
    """(folder, a FIFO outside it that a link inside points to, {entry: expected reason})."""
    pytest.importorskip("pydicom")
    top = tmp_path_factory.mktemp("hostile")
    src, outside = top / "src", top / "outside"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(20):  # 2 val images per class: one may be a file that fails to decode
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
                src / c / f"{i}.png"
            )
    (outside / "class").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(outside / "real.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(outside / "class" / "0.png")
    trap = outside / "trap"
    os.mkfifo(trap)
    a = src / "a"
    crafted.png(a / "huge.png", 30000, 30000)
    crafted.png(a / "deep16.png", 12000, 12000, bit_depth=16)
    crafted.deflated_dicom(a / "huge.dcm", 12000, 12000, 2 * 12000 * 12000)
    crafted.deflated_dicom(a / "lying.dcm", 30, 40, 300_000_000)  # declares 30 x 40 px
    crafted.deflated_dicom(a / "small.dcm", 30, 40, 2 * 30 * 40)
    crafted.dicom_with_blob(a / "blob.dcm", 20 << 20)  # 20 MiB before 2 KiB of pixels
    os.mkfifo(a / "pipe.png")
    _link(a / "zero.png", "/dev/zero")
    _link(a / "passwd.png", "/etc/passwd")
    _link(a / "outside.png", outside / "real.png")
    _link(a / "trap.png", trap)
    _link(a / "dangling.png", a / "missing.png")
    _link(a / "loop1.png", a / "loop2.png")
    _link(a / "loop2.png", a / "loop1.png")
    _link(a / "up", "..")
    _link(src / "c", outside / "class")
    _link(src / "b" / "linked.png", "../a/0.png")  # inside the folder: followed
    expected = {
        "a/huge.png": "too large: Pillow refuses it as a decompression bomb",
        "a/deep16.png": TOO_LARGE,
        "a/huge.dcm": TOO_LARGE,
        "a/lying.dcm": "deflated DICOM that inflates to more than",
        "a/blob.dcm": "DICOM file of 2097",  # 20 MiB + its header, then why
        "a/pipe.png": "a named pipe (FIFO), not a regular file",
        "a/zero.png": OUTSIDE,
        "a/passwd.png": OUTSIDE,
        "a/outside.png": OUTSIDE,
        "a/trap.png": OUTSIDE,
        "a/dangling.png": "a dangling symlink",
        "a/loop1.png": "a symlink loop",
        "a/loop2.png": "a symlink loop",
        "a/up": "a symlink loop (to a folder above it)",
        "c": OUTSIDE,
    }
    return src, trap, expected


def test_hostile_folder_is_converted_in_bounded_memory_and_time(hostile, tmp_path):
    src, trap, expected = hostile
    opened = threading.Event()

    def wait_for_a_reader():
        with open(trap, "wb"):  # returns only once something opens the FIFO to read
            opened.set()

    waiter = threading.Thread(target=wait_for_a_reader, daemon=True)
    waiter.start()
    try:
        done = subprocess.run(
            [sys.executable, str(WORKER), str(src), str(tmp_path / "root")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert not opened.is_set(), "the FIFO outside the folder was opened"
        os.close(os.open(trap, os.O_RDONLY | os.O_NONBLOCK))  # lets the waiter finish
        waiter.join(10)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["seconds"] < 60
    grown = result["peak"] - result["baseline"]
    print(f"peak RSS {result['peak'] >> 20} MiB, {grown >> 20} MiB above the baseline")
    assert grown < PEAK_BOUND
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    assert set(reasons) == set(expected), reasons
    for entry, reason in expected.items():
        assert reasons[entry].startswith(reason), (entry, reasons[entry])
    converted = {r["file"] for rows in result["splits"].values() for r in rows}
    assert {"a/small.dcm", "b/linked.png"} <= converted and len(converted) == 42
    assert result["label_names"] == ["a", "b"]  # the class folder linked outside is not one


def test_decodes_in_threads_share_one_budget():
    """Decodes running at once hold at most the budget between them; one image larger than
    the budget runs alone rather than never."""
    budget = imagefile._Budget(100)
    held, peaks, lock = [], [], threading.Lock()

    def decode(cost: int) -> None:
        with budget.hold(cost):
            with lock:
                held.append(cost)
                peaks.append(list(held))
            time.sleep(0.02)
            with lock:
                held.remove(cost)

    threads = [threading.Thread(target=decode, args=(c,)) for c in (60, 60, 30, 150, 40, 60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(peaks) == 6 and all(sum(p) <= 100 or p == [150] for p in peaks), peaks
    assert max(len(p) for p in peaks) >= 2  # not simply one at a time

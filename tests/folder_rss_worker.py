"""Peak memory and time of converting one image folder (tests/test_hostile.py).

usage: folder_rss_worker.py FOLDER ROOT
Prints one JSON line: the resident set after imports (baseline), its peak during the
conversion (VmHWM, reset once the baseline is taken), both in bytes, the seconds taken, and
the manifest.
"""

import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import base  # noqa: E402
from ssljax.data import folder  # noqa: E402


def _status_bytes(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(source: str, root: str) -> None:
    config = base.get_config()
    config.data.folder, config.data.root = source, root
    import pydicom  # noqa: F401, PLC0415 - part of the baseline, as PIL is

    baseline = _status_bytes("VmRSS")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.monotonic()
    _, manifest = folder.convert(config.data, progress=False)
    seconds = time.monotonic() - start
    peak = _status_bytes("VmHWM")
    print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds, **manifest}))


if __name__ == "__main__":
    main(*sys.argv[1:3])

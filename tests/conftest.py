"""Test set-up: 8 host devices, the shared real MedMNIST files, and tiny configs.

XLA_FLAGS must be set before JAX is imported anywhere, which is why it lives here.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

# One persistent compilation cache per test session, inherited by the subprocesses that
# tests start: the same train step is compiled by several runs (a killed run and its resume,
# in-process and launch.py runs), and on 2 CPU cores a cache hit saves most of a minute.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ssljax-jax-cache-"))

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("SSLJAX_TEST_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "medmnist")
)
# Configs default their data root to $SSLJAX_DATA_DIR: point it at the real files.
os.environ["SSLJAX_DATA_DIR"] = str(SHARED_DATA)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The folder holding the real, unmodified MedMNIST files (read-only)."""
    if not (SHARED_DATA / "breastmnist.npz").exists():
        pytest.fail(f"real MedMNIST files not found in {SHARED_DATA}; set SSLJAX_TEST_DATA_DIR")
    return SHARED_DATA


# Takes the lock on argv[1], says so, and sleeps until killed.
HOLDER = (
    "import sys, time\n"
    "from ssljax import workdirs\n"
    "with workdirs.lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


@pytest.fixture
def start_holder():
    """start(workdir) -> a process holding `workdir`'s lock (once it holds it); killed at
    the end of the test."""
    procs = []

    def start(workdir: pathlib.Path) -> subprocess.Popen:
        procs.append(_start_holder(workdir))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _start_holder(workdir: pathlib.Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write in (read-only mount when running as root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("running as root without mount: no folder root cannot write in")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


BREAST_CLASSES = ("malignant", "normal_benign")  # BreastMNIST's labels 0 and 1


def write_png_folder(npz_path, root: pathlib.Path, per_split: int | None = None) -> pathlib.Path:
    """Writes a MedMNIST .npz as PNGs: root/<split>/<class>/<index:04d>.png (the index of the
    image in its split), the first `per_split` images of each split (all when None)."""
    import numpy as np
    from PIL import Image

    with np.load(npz_path) as data:
        for split in ("train", "val", "test"):
            images, labels = data[f"{split}_images"], data[f"{split}_labels"][:, 0]
            for i, (image, label) in enumerate(zip(images[:per_split], labels, strict=False)):
                path = root / split / BREAST_CLASSES[label] / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    return root


@pytest.fixture(scope="session")
def breast_png_folder(data_dir, tmp_path_factory) -> pathlib.Path:
    """Real BreastMNIST (28 px) as a folder of PNGs, split and class subfolders (read-only)."""
    return write_png_folder(data_dir / "breastmnist.npz", tmp_path_factory.mktemp("breast_png"))

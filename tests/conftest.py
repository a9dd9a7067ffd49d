"""Test set-up: 8 host devices, the shared real MedMNIST files, and tiny configs.

XLA_FLAGS must be set before JAX is imported anywhere, which is why it lives here.
"""

import os
import pathlib
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

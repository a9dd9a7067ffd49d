"""A pretraining run's end (issue 22): the end-of-run figures embed a capped sample of the
test split, so a dataset with a large test split spends bounded time after its last step
(a 400k-image split, embedded whole twice, took more than 11 minutes with no output)."""

import time

import numpy as np
import pytest

from ssljax import pretrain, representations
from ssljax.data import npzstream, registry
from tests import rss_worker
from tests.test_pretrain import tiny_config

TEST_IMAGES, CAP = 20_000, 256


def _synthetic(path):
    """28 px grey, binary: 128 train, 32 val and TEST_IMAGES test images."""
    rng = np.random.default_rng(0)
    with npzstream.NpzWriter(path) as w:
        for split, n in (("train", 128), ("val", 32), ("test", TEST_IMAGES)):
            for start in range(0, n, 5000):
                rows = min(5000, n - start)
                w.append(f"{split}_images", rng.integers(0, 256, (rows, 28, 28, 1), np.uint8))
                w.append(f"{split}_labels", rng.integers(0, 2, (rows, 1)))
    return path


@pytest.mark.slow
def test_the_end_of_run_figures_embed_a_capped_sample(tmp_path, capsys, monkeypatch):
    config = tiny_config(
        **{
            "data.path": str(_synthetic(tmp_path / "big_test.npz")),
            "data.task": registry.BINARY,
            "data.name": "synthetic",
            "train.epochs": 1,
            "log.monitor_every_epochs": 0,
            "eval.figure_images": CAP,
        }
    )
    embedded = []
    write = representations.write

    def timed(*args, **kwargs):
        start = time.monotonic()
        write(*args, **kwargs)
        embedded.append(time.monotonic() - start)

    monkeypatch.setattr(representations, "write", timed)
    # The train step is not what is measured: a stand-in saves its compilation (~20 s).
    monkeypatch.setattr(pretrain, "build", rss_worker._stand_in_build(pretrain.build))
    pretrain.run(config, tmp_path / "run")
    xy = representations.load(tmp_path / "run", representations.EMBEDDINGS)
    assert xy["init"].shape == xy["final"].shape == (CAP, 2) and len(xy["classes"]) == CAP
    said = f"end of run: PCA of {CAP} of {TEST_IMAGES} test images, fresh and after"
    assert said in capsys.readouterr().out
    print(f"end-of-run figures: {embedded[0]:.1f} s")
    rows = representations.sample(TEST_IMAGES, CAP)
    assert len(np.unique(rows)) == CAP and (np.diff(rows) > 0).all()
    assert (rows == representations.sample(TEST_IMAGES, CAP)).all()  # the same draw each run
    assert (representations.sample(100, CAP) == np.arange(100)).all()

"""The grain pipeline: the same batches from memory and TFDS, process rows, resume, memory."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssljax import checkpoint, pretrain, writers
from ssljax.data import batches, load_npz, npzstream, pipeline, registry, sources, tfds_medmnist
from tests.processes import run_two_processes
from tests.test_pretrain import _encoder_leaves, _overrides_as_flags, tiny_config
from tests.test_tfds import data_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# Two epochs of 8 steps, a checkpoint after each, no kNN monitor (the tests compare losses
# and encoders; tests/test_pretrain.py covers the monitor).
RUN = {"log.monitor_every_epochs": 0}


@pytest.fixture(scope="module")
def tfds_dir(data_dir, tmp_path_factory):
    """BreastMNIST 28 and 64 px built offline (shared by every test here)."""
    folder = tmp_path_factory.mktemp("tfds")
    for size in (28, 64):
        tfds_medmnist.prepare(data_config(folder, root=str(data_dir), size=size), progress=False)
    return folder


def _record_images(tfds_dir, size: int = 28) -> pipeline.RecordImages:
    builder = tfds_medmnist.builder_for(data_config(tfds_dir, size=size))
    return pipeline.RecordImages(builder.as_data_source(split="train"))


def test_record_images_index_like_the_array(tfds_dir, data_dir):
    records = _record_images(tfds_dir)
    array = load_npz(data_dir / "breastmnist.npz", task=registry.BINARY).train.images
    assert records.shape == array.shape and len(records) == len(array)
    idx = np.array([[5, 3, 5], [545, 0, 100]])
    np.testing.assert_array_equal(records[idx], array[idx])
    np.testing.assert_array_equal(records[10:20:3], array[10:20:3])
    np.testing.assert_array_equal(records[-1], array[-1])
    with pytest.raises(IndexError):
        records[np.array([546])]


def test_an_image_folder_opens_from_tfds_as_from_memory(breast_png_folder, tmp_path):
    """data.folder with data.source=tfds: the converted folder's .npz built into
    array_record, with the folder's own label names (the stored form both paths share)."""
    from configs import base

    config = base.get_config().data
    config.update(folder=str(breast_png_folder), root=str(tmp_path / "root"))
    config.tfds_dir = str(tmp_path / "tfds")
    opened = {}
    for source in ("memory", "tfds"):
        config.source = source
        opened[source] = sources.open_dataset(config, progress=False)
    memory, records = opened["memory"], opened["tfds"]
    assert isinstance(records.train.images, pipeline.RecordImages)
    assert (records.name, records.label_names, records.task, records.num_outputs) == (
        memory.name,
        memory.label_names,
        memory.task,
        memory.num_outputs,
    )
    np.testing.assert_array_equal(records.train.images[:], memory.train.images)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(records.splits[split].labels, memory.splits[split].labels)
    np.testing.assert_array_equal(records.test.images, memory.test.images)


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_are_the_same_from_either_source(tfds_dir, data_dir, workers):
    array = load_npz(data_dir / "breastmnist.npz", task=registry.BINARY).train.images
    expected = np.stack([array[batches.train_batch_indices(0, s, 546, 64)] for s in range(12)])
    memory = pipeline.TrainBatches(array, seed=0, batch_size=64)
    records = pipeline.TrainBatches(
        _record_images(tfds_dir), seed=0, batch_size=64, workers=workers, threads=2
    )
    with memory, records:
        # Consecutive chunks (read ahead), then a jump back (a resume), across an epoch end.
        for first, chunk in ((0, 3), (3, 2), (5, 4), (1, 2), (9, 3)):
            want = expected[first : first + chunk]
            np.testing.assert_array_equal(memory.batch_at(first, chunk), want)
            np.testing.assert_array_equal(records.batch_at(first, chunk), want)


def test_auto_source_follows_the_memory_budget(tfds_dir):
    config = data_config(tfds_dir, source="auto")
    assert sources.train_bytes(config) == 546 * 28 * 28
    assert sources.resolve_source(config) == "memory"
    config.memory_budget_gb = 546 * 28 * 28 / 2**30 / 2
    assert sources.resolve_source(config) == "tfds"


def _run(workdir, **overrides) -> list[float]:
    pretrain.run(tiny_config(**{**RUN, **overrides}), workdir)
    return [r["loss"] for r in writers.read_metrics(workdir) if "loss" in r]


@pytest.fixture(scope="module")
def tfds_run(tfds_dir, tmp_path_factory):
    """An uninterrupted two-epoch data.source=tfds run on BreastMNIST 28 px: (workdir, losses)."""
    workdir = tmp_path_factory.mktemp("tfds_run")
    return workdir, _run(workdir, **{"data.source": "tfds", "data.tfds_dir": str(tfds_dir)})


@pytest.mark.slow
def test_losses_equal_from_memory_and_tfds_28px(tfds_run, tmp_path):
    _, tfds_losses = tfds_run
    memory_losses = _run(tmp_path, **{"data.source": "memory"})
    assert len(memory_losses) == 16 and np.all(np.isfinite(memory_losses))
    assert tfds_losses == memory_losses


@pytest.mark.slow
def test_losses_equal_from_memory_and_tfds_64px(tfds_dir, tmp_path):
    one_epoch = {"data.size": 64, "train.epochs": 1, "data.tfds_dir": str(tfds_dir)}
    memory_losses = _run(tmp_path / "memory", **one_epoch, **{"data.source": "memory"})
    tfds_losses = _run(tmp_path / "tfds", **one_epoch, **{"data.source": "tfds"})
    assert len(memory_losses) == 8 and tfds_losses == memory_losses


@pytest.mark.slow
def test_sigkill_during_a_tfds_run_then_rerun_gives_the_same_encoder(tfds_run, tfds_dir, tmp_path):
    reference, _ = tfds_run
    overrides = {**RUN, "data.source": "tfds", "data.tfds_dir": str(tfds_dir)}
    command = [
        sys.executable,
        "launch.py",
        "--config=configs/barlow.py:breastmnist",
        f"--workdir={tmp_path}",
        *_overrides_as_flags(**overrides),
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not checkpoint.committed_steps(tmp_path / "checkpoints"):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "encoder").exists(), "killed before the end"
    subprocess.run(command, cwd=REPO, check=True, timeout=600, capture_output=True)
    for resumed, uninterrupted in zip(
        _encoder_leaves(tmp_path), _encoder_leaves(reference), strict=True
    ):
        np.testing.assert_array_equal(resumed, uninterrupted)


@pytest.mark.slow
def test_two_processes_read_disjoint_rows(tfds_dir, data_dir, tmp_path):
    run_two_processes("pipeline_worker.py", lambda pid: [tfds_dir, tmp_path / f"rows{pid}.npy"])
    rows = [np.load(tmp_path / f"rows{pid}.npy") for pid in range(2)]
    assert rows[0].shape == rows[1].shape == (2, 8, 28, 28, 1)
    array = load_npz(data_dir / "breastmnist.npz", task=registry.BINARY).train.images
    for step in range(2):
        idx = batches.train_batch_indices(0, step, 546, 16)
        assert len(set(idx[:8]) & set(idx[8:])) == 0  # disjoint rows ...
        # ... whose union, in process order, is the global batch.
        np.testing.assert_array_equal(np.concatenate([r[step] for r in rows]), array[idx])


# 14,300 RGB images of 224 px: 2.15 GB of training images.
BIG_TRAIN, BIG_SIZE = 14_300, 224
RSS_BOUND = 3 << 29  # 1.5 GiB


def _write_big_npz(path: pathlib.Path) -> int:
    """A synthetic MedMNIST-layout file, written in chunks; returns its train images' bytes."""
    pattern = np.random.default_rng(0).integers(0, 256, (64, BIG_SIZE, BIG_SIZE, 3), np.uint8)
    with npzstream.NpzWriter(path) as w:
        for split, n in (("train", BIG_TRAIN), ("val", 64), ("test", 64)):
            for start in range(0, n, 64):
                rows = min(64, n - start)
                w.append(f"{split}_images", pattern[:rows] ^ np.uint8(start // 64 % 256))
                w.append(f"{split}_labels", (np.arange(start, start + rows) % 2)[:, None])
    return BIG_TRAIN * BIG_SIZE * BIG_SIZE * 3


@pytest.mark.slow
def test_converting_and_one_epoch_on_2gb_stay_within_the_bound(tmp_path):
    """Peak RSS above the baseline stays under RSS_BOUND (1.5 GiB) for 2.15 GB of images.

    What the peak holds does not grow with the dataset: one conversion chunk (64 MiB) and its
    serialised records, then the batches in flight (grain's threads and read-ahead, and the
    ones JAX has been handed but not yet run, up to the next log step), 38.5 MB each at
    batch 256, plus compilation, plus the end-of-run model figures (the real model applied at
    224 px to 64 val and 64 test images, 8 host devices). Measured: 1,214 MiB (2026-11-30,
    8 host devices on 2 CPU cores; 840 MiB before the run wrote its own figures).
    """
    train_bytes = _write_big_npz(tmp_path / "big.npz")
    assert train_bytes >= 2e9
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "rss_worker.py"),
            str(tmp_path / "big.npz"),
            str(tmp_path / "tfds"),
            str(tmp_path / "workdir"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"peak RSS {rss['peak'] / 2**20:.0f} MiB, baseline {rss['baseline'] / 2**20:.0f} MiB")
    assert rss["peak"] - rss["baseline"] < RSS_BOUND, rss
    logged = [r for r in writers.read_metrics(tmp_path / "workdir") if "loss" in r]
    assert logged[-1]["step"] == BIG_TRAIN // 256  # the whole epoch, batch 256
    assert all(r["loss"] > 0 for r in logged)  # the stand-in step's sum of the batch's pixels


@pytest.mark.slow
def test_evaluation_from_tfds_equals_memory(tfds_dir, tmp_path):
    """Fine-tuning (1% of the labels, its batches read per step) scores the same from
    either source: evaluation reads the train split through `data.source`."""
    from ssljax import evaluate
    from tests.test_evaluate import eval_config

    scores = {}
    for source in ("memory", "tfds"):
        for protocol in ("finetune",):
            config = eval_config(protocol, fraction=0.01, epochs=1)
            config.data.update(source=source, tfds_dir=str(tfds_dir))
            out = evaluate.run(config, tmp_path / f"{source}-{protocol}")
            scores[source, protocol] = (out["n_labelled"], out["val"], out["test"])
    assert scores["memory", "finetune"] == scores["tfds", "finetune"]

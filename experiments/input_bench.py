"""The input pipeline alone, for `experiments/benchmark.py --mode=input`: images/s per source.

Times `pipeline.TrainBatches.batch_at` (batch indices from (seed, step), this process's rows,
grain threads / worker processes / read-ahead) as `pretrain.run` calls it, with nothing on
the device: how many images per second the host can hand the train step. `memory` reads the
uint8 array in host memory; `tfds` the array_record build (made first if missing, its time
reported as `prepare_s`). Without --dataset, a synthetic archive of --images random images is
written once to <tfds_dir>/synthetic/ (there is no real 224 px file on the test machines).
"""

import datetime
import os
import pathlib
import statistics
import time
import types
from typing import Any

import ml_collections
import numpy as np

from ssljax.data import npzstream, pipeline, registry, sources


def synthetic_npz(folder: pathlib.Path, images: int, size: int, channels: int) -> pathlib.Path:
    """A MedMNIST-layout file of `images` random train images (and 64 val / test), written in
    chunks; reused when it exists."""
    path = folder / f"synthetic_{size}px_{channels}ch_{images}.npz"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, (64, size, size, channels), dtype=np.uint8)
    with npzstream.NpzWriter(path) as w:
        for split, n in (("train", images), ("val", 64), ("test", 64)):
            for start in range(0, n, 64):
                rows = min(64, n - start)
                w.append(f"{split}_images", pattern[:rows] ^ np.uint8(start // 64 % 256))
                w.append(f"{split}_labels", rng.integers(0, 2, (rows, 1)))
    return path


def data_config(config: ml_collections.ConfigDict, args: types.SimpleNamespace):
    """`config.data` for the measured source, pointing at a synthetic file when no dataset."""
    d = ml_collections.ConfigDict(config.data.to_dict())
    d.source = args.source
    d.tfds_dir = args.tfds_dir or d.tfds_dir
    if not args.dataset:
        folder = pathlib.Path(d.tfds_dir).expanduser() / "synthetic"
        d.path = str(synthetic_npz(folder, args.images, args.size, args.channels))
        d.task, d.name = registry.BINARY, "synthetic"
    return d


def measure(config: ml_collections.ConfigDict, args: types.SimpleNamespace) -> dict[str, Any]:
    """images/s of `batch_at` over `args.steps` timed calls after `args.warmup` untimed ones.

    Calls are made back to back, so read-ahead only helps as much as the pipeline keeps up:
    the rate is the timed calls' images over their total time (steady state), not a median
    of calls that may have found their batch ready.
    """
    d = data_config(config, args)
    start = time.perf_counter()
    train = sources.open_dataset(d, progress=False).train
    prepare_s = time.perf_counter() - start
    per_call, batch = args.steps_per_dispatch, args.batch
    host = pipeline.TrainBatches(
        train.images,
        seed=args.seed,
        batch_size=batch,
        workers=args.workers,
        threads=args.threads,
        prefetch=args.prefetch,
    )
    seconds = []
    with host:
        for call in range(args.warmup + args.steps):
            start = time.perf_counter()
            host.batch_at(call * per_call, per_call)
            seconds.append(time.perf_counter() - start)
    seconds = seconds[args.warmup :]
    return {
        "images_per_s": args.steps * per_call * batch / sum(seconds),
        "median_call_images_per_s": statistics.median(per_call * batch / s for s in seconds),
        "seconds_per_call": seconds,
        "mode": "input",
        "what": "input pipeline alone (indices, reads, grain; nothing on the device)",
        "source": args.source,
        "workers": host.workers,
        "threads": args.threads,
        "prefetch": args.prefetch,
        "size": int(train.images.shape[1]),
        "channels": int(train.images.shape[3]),
        "train_images": len(train.images),
        "batch": batch,
        "steps_per_dispatch": per_call,
        "steps": args.steps,
        "warmup": args.warmup,
        "dataset": args.dataset or "synthetic",
        "prepare_s": prepare_s,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

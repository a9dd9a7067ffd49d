"""The host's training batches: a grain pipeline over a random-access source of images.

The source is either the uint8 array in host memory (`data.source=memory`) or a TFDS
array_record split read on demand (`RecordImages`, `data.source=tfds`); both are indexed
with the batch indices `batches.train_batch_indices(seed, step, n, B)` defines, so the batch
at step s is the same from either source, and a run resumed at step s replays the same
future. Each process reads only its rows of the global batch (`parallel.process_rows`).

One grain element is one step's rows. Grain reads `threads` steps at a time in this process
and, with `workers` > 0 (TFDS only: worker processes get the source by pickling, a record
reader and not the images), in that many worker processes; `prefetch` steps are read ahead
of the one the train loop asks for, so reading overlaps the device's work.
"""

import dataclasses
from typing import Any

import grain
import numpy as np
from absl import flags

from ssljax import parallel
from ssljax.data import batches

# Records read per call when reading a whole split (labels, or val/test into memory).
_READ_CHUNK = 64
# Records fetched at once when reading images.
_READ_SLICE = 64


class RecordImages:
    """uint8 [N, H, W, C] read on demand from one split of a TFDS array_record dataset.

    Indexing with an int, a slice or an integer array reads those records only, so code
    written for an in-memory array (`images[idx]`, `len(images)`, `images.shape`) works on
    a split that does not fit in memory.
    """

    def __init__(self, source: Any):
        """source: a TFDS data source of the split (`builder.as_data_source(split)`)."""
        self._source = source
        image = source.dataset_info.features["image"]
        self.shape = (len(source), *image.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, int | np.integer):
            return self.read(np.asarray([index]))[0]
        if isinstance(index, slice):
            return self.read(np.arange(len(self))[index])
        return self.read(np.asarray(index))

    def read(self, indices: np.ndarray) -> np.ndarray:
        """indices: int [...] -> uint8 [..., H, W, C]. Records are read in file order (the
        reads are sequential where the indices allow) and returned in the order asked."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} records")
        flat = flat % max(len(self), 1)
        order = np.argsort(flat, kind="stable")
        out = np.empty((flat.size, *self.shape[1:]), np.uint8)
        # In slices, so that the records' bytes in flight are a slice's, not the batch's.
        for start in range(0, flat.size, _READ_SLICE):
            positions = order[start : start + _READ_SLICE]
            records = self._source.__getitems__(flat[positions].tolist())
            for position, record in zip(positions, records, strict=True):
                out[position] = record["image"]
        return out.reshape(*np.shape(indices), *self.shape[1:])

    def labels(self) -> np.ndarray:
        """Every record's label: int32 [N] (class index) or int32 [N, L] (multi-label)."""
        parts = []
        for start in range(0, len(self), _READ_CHUNK):
            keys = list(range(start, min(start + _READ_CHUNK, len(self))))
            parts.append(np.stack([r["label"] for r in self._source.__getitems__(keys)]))
        return np.concatenate(parts).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _ReadStep:
    """step -> this process's rows of the training batch at that step, uint8 [b, H, W, C]."""

    images: Any
    seed: int
    n: int
    batch_size: int
    rows: slice

    def __call__(self, step: int) -> np.ndarray:
        idx = batches.train_batch_indices(self.seed, int(step), self.n, self.batch_size)
        return np.asarray(self.images[idx[self.rows]])


class TrainBatches:
    """The host batches of a pretraining run, from any step on: `batch_at(step, chunk)`.

    Consecutive calls (`batch_at(s, k)` then `batch_at(s + k, ...)`) take batches the
    pipeline has read ahead; any other step (the first call, a resume) restarts it there.
    """

    def __init__(
        self,
        images: Any,
        *,
        seed: int,
        batch_size: int,
        workers: int = 0,
        threads: int = 1,
        prefetch: int = 2,
    ):
        """
        Args:
          images: uint8 [N, H, W, C]: an array in memory, or `RecordImages`.
          seed: data seed (`config.seed`).
          batch_size: global batch size; this process reads `parallel.process_rows` of it.
          workers: grain worker processes (used for `RecordImages` only; 0: none).
          threads: steps read concurrently in this process.
          prefetch: steps read ahead.
        """
        self.images = images
        self.n = len(images)
        batches.steps_per_epoch(self.n, batch_size)  # a batch larger than the data: error now
        self._read = _ReadStep(images, seed, self.n, batch_size, parallel.process_rows(batch_size))
        self.local_rows = self._read.rows.stop - self._read.rows.start
        self.workers = workers if isinstance(images, RecordImages) else 0
        self.threads, self.prefetch = max(threads, 1), max(prefetch, 1)
        self._iterator: Any = None
        self._next_step = -1

    def _start(self, step: int) -> None:
        self.close()
        dataset = grain.MapDataset.range(step, step + (1 << 40)).map(self._read)
        options = grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.prefetch)
        iterable = dataset.to_iter_dataset(options)
        if self.workers:
            if not flags.FLAGS.is_parsed():
                # Grain's workers read its absl flags; outside launch.py (a library call, a
                # test) nothing parsed them, so their defaults apply.
                flags.FLAGS.mark_as_parsed()
            mp = grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=1)
            iterable = iterable.mp_prefetch(mp)
        self._iterator = iter(iterable)
        self._next_step = step

    def batch_at(self, first_step: int, chunk: int) -> np.ndarray:
        """uint8 [chunk, local_rows, H, W, C]: this process's rows of steps
        first_step .. first_step + chunk - 1."""
        if self._iterator is None or first_step != self._next_step:
            self._start(first_step)
        out = np.empty((chunk, self.local_rows, *self.images.shape[1:]), np.uint8)
        for i in range(chunk):
            out[i] = next(self._iterator)
        self._next_step = first_step + chunk
        return out

    def close(self) -> None:
        """Stops the pipeline's threads and worker processes (a later call restarts it)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()

    def __enter__(self) -> "TrainBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

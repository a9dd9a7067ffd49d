"""Devices, the ('data',) mesh, shardings, multi-host start-up and host -> global arrays.

Parallelism in ssljax is `jax.jit` over a one-axis mesh: the batch is sharded over 'data',
parameters and optimizer state are replicated. Under jit, BatchNorm statistics and both
losses reduce over the global batch, which is what SyncBN and the all-gathers of the
reference implementations do, with no axis names in model code.
"""

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssljax.errors import ConfigError

DATA_AXIS = "data"


# Whether this process called jax.distributed.initialize (`initialize_distributed`).
_distributed = False


def initialize_distributed(dist: ml_collections.ConfigDict) -> None:
    """Calls `jax.distributed.initialize` when `config.distributed.initialize` is true.

    Empty/zero/negative fields are left for JAX to detect (TPU VM metadata, SLURM, ...).
    Must run before anything touches a device. Once per process: a later call (the next job
    of a sweep) does nothing.
    """
    global _distributed
    if not dist.initialize or _distributed:
        return
    jax.distributed.initialize(
        coordinator_address=dist.coordinator_address or None,
        num_processes=dist.num_processes or None,
        process_id=dist.process_id if dist.process_id >= 0 else None,
    )
    _distributed = True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ('data',) mesh over all (or the given) devices, with Auto axis types.

    `jax.make_mesh` defaults to Explicit axis types, under which the Barlow Twins
    cross-correlation (a matmul contracting the sharded batch axis) is rejected; with Auto
    axis types XLA inserts the all-reduce.
    """
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards axis `batch_axis` of an array over 'data', other axes replicated."""
    spec = [None] * batch_axis + [DATA_AXIS]
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, key: str = "train.batch_size") -> None:
    """Raises before any compilation if the global batch does not split over the devices."""
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ConfigError(
            f"config.{key}={batch_size} must be a positive multiple of the number of "
            f"devices ({n}); for example {max(n, batch_size // n * n or n)}."
        )
    if batch_size % jax.process_count():
        raise ConfigError(
            f"config.{key}={batch_size} must be divisible by the number of processes "
            f"({jax.process_count()})."
        )


def process_rows(global_batch: int) -> slice:
    """The rows of a global batch that this process feeds (contiguous, in process order)."""
    per_process = global_batch // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def host_to_global(local: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """This process's rows of a batch -> one global jax.Array sharded over 'data'.

    Args:
      local: [..., B / num_processes, ...] rows `process_rows(B)` of the global batch along
        `batch_axis`; on one process, the whole batch.
    """
    sharding = batch_sharding(mesh, batch_axis)
    return jax.make_array_from_process_local_data(sharding, local)


def to_host(x: jax.Array) -> np.ndarray:
    """A (possibly multi-host) global array -> the full NumPy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

"""One of two local processes for test_pretrain.test_two_processes_equal_one.

usage: multiprocess_worker.py COORDINATOR_ADDRESS PROCESS_ID OUT_JSON
Each process has one CPU device and feeds its half of the global batch.
"""

import json
import pathlib
import sys

import jax

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(address: str, process_id: int, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    from ssljax import parallel
    from tests.test_pretrain import tiny_config, two_steps

    assert jax.process_count() == 2 and jax.device_count() == 2
    loss, params = two_steps(tiny_config(**{"train.batch_size": 16}), parallel.make_mesh())
    if jax.process_index() == 0:
        record = {"loss": loss.tolist(), "param_sums": [float(p.sum()) for p in params]}
        pathlib.Path(out).write_text(json.dumps(record))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])

"""One of two local processes for test_pipeline.test_two_processes_read_disjoint_rows.

usage: pipeline_worker.py COORDINATOR_ADDRESS PROCESS_ID TFDS_DIR OUT_NPY
Each process reads its rows of the first two global batches of BreastMNIST (TFDS source).
"""

import pathlib
import sys

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(address: str, process_id: int, tfds_dir: str, out: str) -> None:
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    from ssljax.data import pipeline, tfds_medmnist
    from tests.test_tfds import data_config

    assert jax.process_count() == 2
    builder = tfds_medmnist.builder_for(data_config(tfds_dir))
    images = pipeline.RecordImages(builder.as_data_source(split="train"))
    with pipeline.TrainBatches(images, seed=0, batch_size=16, threads=2) as host:
        np.save(out, host.batch_at(0, 2))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])

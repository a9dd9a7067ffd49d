"""Peak memory of a data.source=tfds pretraining run: convert, then one epoch.

usage: rss_worker.py NPZ TFDS_DIR WORKDIR
Prints one JSON line: the resident set after imports (baseline) and its peak afterwards
(VmHWM, reset once the baseline is taken), in bytes. The jitted train step is replaced by
one that reads every image of the batch (a sum): on 2 CPU cores the real step at 224 px runs
at ~12 images/s, and what this measures is the host side (conversion, TFDS reads, grain,
the host -> device transfer, checkpoints), which the step does not change.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssljax import pretrain  # noqa: E402
from tests.test_pretrain import tiny_config  # noqa: E402


def _status_bytes(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _stand_in_build(build):
    def wrapped(*args, **kwargs):
        fns = build(*args, **kwargs)

        @jax.jit
        def train(state, batch, live, key):
            (images,) = batch
            total = jnp.sum(images, axis=(1, 2, 3, 4), dtype=jnp.float32)
            return state, {"loss": total, "lr": jnp.zeros_like(total)}

        return fns._replace(train=train)

    return wrapped


def main(npz: str, tfds_dir: str, workdir: str) -> None:
    config = tiny_config(
        **{
            "data.path": npz,
            "data.task": "binary-class",
            "data.name": "synthetic",
            "data.source": "tfds",
            "data.tfds_dir": tfds_dir,
            "train.epochs": 1,
            "train.batch_size": 256,
            "log.every_steps": 5,
            "log.monitor_every_epochs": 0,
            "eval.bn_images": 0,
            "eval.batch_size": 64,  # the end-of-run figures apply the model at 224 px
        }
    )
    pretrain.build = _stand_in_build(pretrain.build)
    jax.devices()  # the backend is part of the baseline
    baseline = _status_bytes("VmRSS")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    pretrain.run(config, workdir)
    print(json.dumps({"baseline": baseline, "peak": _status_bytes("VmHWM")}))


if __name__ == "__main__":
    main(*sys.argv[1:4])

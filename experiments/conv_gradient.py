"""XLA:CPU's convolution pieces against `ssljax.models.conv`'s kernel gradient.

    python experiments/conv_gradient.py [--batch=64] [--out=conv_gradient.jsonl]

One 3 x 3, stride-1 convolution of a small-image ResNet-18's first stage (28 x 28 x 64 ->
64): the forward pass, XLA's input gradient, XLA's kernel gradient and ours, each timed
after warm-up (median of 5 calls), with process CPU time per call (CPU time equal to wall
time means one core did the work). One JSON line per piece.
"""

import argparse
import datetime
import json
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.models import conv

DIMS = ("NHWC", "HWIO", "NHWC")
PADS = ((1, 1), (1, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="")
    args = p.parse_args()
    x = jax.random.normal(jax.random.key(0), (args.batch, 28, 28, 64))
    w = jax.random.normal(jax.random.key(1), (3, 3, 64, 64))
    dy = jax.random.normal(jax.random.key(2), (args.batch, 28, 28, 64))

    def forward(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), PADS, dimension_numbers=DIMS)

    pieces = {
        "forward": forward,
        "input_gradient_xla": lambda x, w: jax.vjp(lambda x: forward(x, w), x)[1](dy)[0],
        "kernel_gradient_xla": lambda x, w: jax.vjp(lambda w: forward(x, w), w)[1](dy)[0],
        "kernel_gradient_ssljax": lambda x, w: conv.kernel_gradient(x, dy, w.shape, (1, 1), PADS),
    }
    flops = 2 * args.batch * 28 * 28 * 64 * 64 * 9
    lines = []
    for name, fn in pieces.items():
        fn = jax.jit(fn)
        jax.block_until_ready(fn(x, w))
        wall, cpu = [], []
        for _ in range(5):
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(x, w))
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        ms = 1e3 * statistics.median(wall)
        record = {
            "piece": name,
            "batch": args.batch,
            "ms": round(ms, 1),
            "cpu_ms": round(1e3 * statistics.median(cpu), 1),
            "gflop_per_s": round(flops / ms / 1e6, 1),
            "device_kind": jax.devices()[0].device_kind,
            "jax_version": jax.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        lines.append(json.dumps(record))
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    jnp.zeros(())  # start the backend before timing anything
    main()

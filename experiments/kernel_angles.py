"""How far a pretraining run's conv kernels turned: from initialisation to each kept
checkpoint and to the exported encoder, and between consecutive ones.

    python -m experiments.kernel_angles runs/study/pretrain/barlow_twins-breastmnist-s0 [...]

Prints one line per pair: `diagnostics.weight_change` (relative change, BatchNorm scales, and
`weight_angle/conv`, the median angle in degrees). The initial encoder is recomputed from the
run's config, a pure function of its seed, as pretraining does for its own `weight_change`;
the run's last logged `weight_change/conv` is printed beside the recomputed one (7 digits) as
the check that it is the same initialisation. Keys a run's config.json predates take
today's defaults (they do not touch the encoder's initialisation).
"""

import pathlib
import sys

import jax
import ml_collections

from ssljax import checkpoint, diagnostics, methods, optim, parallel, pretrain, steps, writers
from ssljax.data import sources


def run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The run's config.json over its method's default config (for keys it predates)."""
    stored = writers.load_config(workdir)
    config = methods.default_config(methods.get(stored.method).config, stored.data.name)

    def merge(node, values):
        for key, value in values.items():
            if key in node and isinstance(value, ml_collections.ConfigDict):
                merge(node[key], value)
            elif key in node:
                node[key] = value

    merge(config, stored)
    return config


def encoders(workdir: pathlib.Path) -> dict[str, dict]:
    """'init', 'step N' for each kept checkpoint, and 'final': encoder params on the host."""
    config = run_config(workdir)
    data = sources.open_dataset(config.data, progress=False)
    n, shape = len(data.train.images), data.train.images.shape[1:]
    fns = pretrain.build(config, shape, optim.step_plan(config.train, n), parallel.make_mesh())
    state0 = fns.init(steps.derive_keys(config.seed)[0])
    out = {"init": jax.device_get(state0.params["encoder"])}
    ckpt = checkpoint.Checkpointer(workdir, keep=1, repair=False)
    try:
        for step in checkpoint.committed_steps(workdir / checkpoint.CHECKPOINT_DIR):
            out[f"step {step}"] = jax.device_get(ckpt.restore(step, state0).params["encoder"])
    finally:
        ckpt.close()
    out["final"] = jax.device_get(checkpoint.load_encoder(workdir))["params"]
    return out


def angles(workdir: pathlib.Path) -> list[tuple[str, str, dict[str, float]]]:
    """(from, to, weight_change) for init -> each, and each -> the next."""
    found = encoders(workdir)
    names = list(found)
    pairs = [("init", b) for b in names[1:]] + list(zip(names[1:-1], names[2:], strict=True))
    return [
        (a, b, {k: float(v) for k, v in diagnostics.weight_change(found[b], found[a]).items()})
        for a, b in pairs
    ]


def main(workdirs: list[str]) -> None:
    for workdir in map(pathlib.Path, workdirs):
        logged = [r for r in writers.read_metrics(workdir) if "weight_change/conv" in r]
        rows = angles(workdir)
        final = next(change for a, b, change in rows if (a, b) == ("init", "final"))
        print(
            f"{workdir}: init -> final weight_change/conv {final['weight_change/conv']:.7g} "
            f"recomputed, {logged[-1]['weight_change/conv']:.7g} logged by the run"
        )
        for a, b, change in rows:
            values = ", ".join(f"{k} {v:.4g}" for k, v in change.items())
            print(f"  {a} -> {b}: {values}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Pretraining throughput: the train step, the loop end to end, and augmentation alone.

    python -m experiments.benchmark --method=barlow_twins --model=resnet18 --size=28 \
        --batch=256 --mode=end_to_end --dataset=breastmnist --out=results.jsonl

Everything is built by the library, as a pretraining run builds it: the method's config
(`configs/barlow.py` / `configs/simclr.py`) with the flags below as overrides, then
`pretrain.build` (model, LARS, loss, `steps.make_pretrain_step` under `steps.scan_steps`,
jitted over the mesh with the state donated). Modes:

- `step`: the train step on a device-resident uint8 batch with every augmentation disabled
  (crop (1, 1), all probabilities 0), so what is left is normalisation, encoder, projector,
  loss and LARS: "step (augmentation disabled)", the counterpart of a step on pre-made views.
- `end_to_end`: what `pretrain.run` does per dispatch: batch indices from (seed, step), a
  gather from the uint8 images in host memory, `parallel.host_to_global`, and the jitted
  step with on-device augmentation.
- `augment`: `augment.two_views` alone on a device-resident uint8 batch.
- `input`: the input pipeline alone (`--source=memory|tfds`, `--workers`, `--threads`,
  `--prefetch`): images/s that `pipeline.TrainBatches` hands the loop (experiments/input_bench.py).

In `step` and `end_to_end`, each call is dispatched before the previous one is waited on, as
the loop does (it syncs only at log steps), and the time of a call is the interval between
two completions; `augment` calls are independent and are timed one by one. images/s counts
each source image once (the batch, not 2 x the views). One JSON line per run goes to stdout
and, with `--out`, is appended to a file.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
# Run as a script, Python puts experiments/ on the path, not the repo root where configs/ is.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from ssljax import (  # noqa: E402
    augment,
    cli,
    methods,
    models,
    optim,
    parallel,
    pretrain,
    steps,
    validation,
)
from ssljax.data import batches, sources  # noqa: E402

# The benchmark's own projectors (those of its dated records), not the configs' defaults.
DEFAULT_PROJECTORS = {"barlow_twins": "2048-2048-2048", "simclr": "2048-128"}
MODES = ("step", "end_to_end", "augment", "input")
MODE_LABELS = {
    "step": "step (augmentation disabled)",
    "end_to_end": "end to end (host gather + transfer + on-device augmentation + step)",
    "augment": "augmentation alone (two views)",
    "input": "input pipeline alone",
}
# Dense bfloat16 peak FLOP/s by a substring of `device.device_kind`, first match wins. MFU
# is always against this number, also for float32 runs.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
)
# Synthetic data: this many batches of random pixels (shuffled through by the batch indices).
_SYNTHETIC_BATCHES = 4


def define_flags(fv: flags.FlagValues) -> None:
    """The benchmark's flags (absl), in `fv`."""
    flags.DEFINE_enum(
        "method", "barlow_twins", sorted(methods.METHODS), "config.method", flag_values=fv
    )
    flags.DEFINE_string("model", "resnet18", "model.name, e.g. resnet18 | resnet50", flag_values=fv)
    flags.DEFINE_integer("width", 64, "model.width (64: standard ResNet)", flag_values=fv)
    flags.DEFINE_integer("size", 28, "image side in pixels (data.size)", flag_values=fv)
    flags.DEFINE_integer("batch", 256, "global batch (train.batch_size)", flag_values=fv)
    flags.DEFINE_enum("channels", "3", ["1", "3"], "image channels", flag_values=fv)
    flags.DEFINE_enum("dtype", "float32", list(models.DTYPES), "model.dtype", flag_values=fv)
    flags.DEFINE_string(
        "projector",
        "",
        "widths joined by '-'; default 2048-2048-2048 (BT), 2048-128 (SimCLR)",
        flag_values=fv,
    )
    flags.DEFINE_enum("mode", "end_to_end", list(MODES), "what is timed", flag_values=fv)
    flags.DEFINE_integer("steps", 5, "timed dispatches (calls)", flag_values=fv)
    flags.DEFINE_integer("warmup", 1, "untimed dispatches after compiling", flag_values=fv)
    flags.DEFINE_integer("steps_per_dispatch", 1, "train steps per call (lax.scan)", flag_values=fv)
    flags.DEFINE_string(
        "dataset",
        "",
        "a MedMNIST name read from $SSLJAX_DATA_DIR (e.g. breastmnist); empty: synthetic "
        "uint8 images",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "source",
        "memory",
        ["memory", "tfds"],
        "data.source: where --dataset's images (and the input mode's) come from",
        flag_values=fv,
    )
    flags.DEFINE_integer("workers", 0, "input mode: grain worker processes", flag_values=fv)
    flags.DEFINE_integer("threads", 2, "input mode: steps read at once", flag_values=fv)
    flags.DEFINE_integer("prefetch", 4, "input mode: steps read ahead", flag_values=fv)
    flags.DEFINE_integer("images", 4096, "input mode: synthetic images", flag_values=fv)
    flags.DEFINE_string("tfds_dir", "", "data.tfds_dir (default: the config's)", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "config.seed", flag_values=fv)
    flags.DEFINE_string("out", "", "append the JSON line to this file", flag_values=fv)


def parse_args(argv: Sequence[str] | None = None) -> types.SimpleNamespace:
    """The flags of `argv` (None: sys.argv[1:]) as attributes, `projector_dims` added; a bad
    flag is one line `error: ...` and SystemExit(2)."""
    fv, rest = cli.parse(argv, define_flags, "python -m experiments.benchmark [--flags]")
    if rest:
        cli.usage_error(f"unexpected arguments: {' '.join(rest)}")
    args = types.SimpleNamespace(**fv.flag_values_dict())
    args.channels = int(args.channels)
    if args.steps < 1 or args.warmup < 1 or args.steps_per_dispatch < 1:
        cli.usage_error("--steps, --warmup and --steps_per_dispatch must be >= 1")
    if not args.projector:
        args.projector = DEFAULT_PROJECTORS[args.method]
    try:
        args.projector_dims = tuple(int(d) for d in args.projector.split("-"))
    except ValueError:
        cli.usage_error(f"--projector={args.projector!r}: give widths joined by '-', e.g. 2048-128")
    return args


def make_config(args: types.SimpleNamespace) -> ml_collections.ConfigDict:
    """The method's config with the benchmark's settings, validated and locked."""
    config = methods.default_config(methods.get(args.method).config, args.dataset or "breastmnist")
    config.seed = args.seed
    config.data.size = args.size
    config.model.name = args.model
    config.model.width = args.width
    config.model.dtype = args.dtype
    config.model.projector_dims = args.projector_dims
    config.train.batch_size = args.batch
    config.train.steps_per_dispatch = args.steps_per_dispatch
    # Where --dataset's images come from, as a run's data.source says (sources.open_dataset).
    config.data.source = args.source
    config.data.tfds_dir = args.tfds_dir or config.data.tfds_dir
    if args.mode == "step":
        for view in (config.augment.view1, config.augment.view2):
            view.crop_scale = view.crop_ratio = (1.0, 1.0)
            for name in ("hflip_prob", "vflip_prob", "jitter_prob", "grayscale_prob"):
                view[name] = 0.0
            view.blur_prob = view.solarize_prob = view.noise_std = 0.0
    validation.validate(config)
    config.lock()
    return config


def load_images(config: ml_collections.ConfigDict, args: types.SimpleNamespace) -> np.ndarray:
    """uint8 [N, size, size, channels]: the dataset's training images, or random pixels.

    A grey dataset benchmarked with --channels=3 has its channel repeated (as a torchvision
    pipeline's `convert('RGB')`), so the RGB augmentations and a 3-channel stem run.
    """
    if not args.dataset:
        rng = np.random.default_rng(args.seed)
        shape = (_SYNTHETIC_BATCHES * args.batch, args.size, args.size, args.channels)
        return rng.integers(0, 256, shape, dtype=np.uint8)
    images = np.asarray(sources.open_dataset(config.data, progress=False).train.images[:])
    if images.shape[-1] == args.channels:
        return images
    if images.shape[-1] == 1:
        return np.repeat(images, args.channels, axis=-1)
    raise ValueError(
        f"--dataset={args.dataset} has {images.shape[-1]} channels; benchmark it with "
        f"--channels={images.shape[-1]}"
    )


def time_calls(
    dispatch: Callable[[int], Any], warmup: int, calls: int, overlap: bool
) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) per call of the last `calls` of `warmup + calls`.

    `dispatch(i)` starts call i and returns something that is ready when it has finished.
    With `overlap`, call i + 1 is started before call i is waited on, so host work overlaps
    device work as in the pretraining loop, and a call's time is the interval between two
    completions; that needs calls chained by their data (the train state), or they would
    run side by side. Without it, the next call starts when the last has finished.
    CPU seconds (all threads of this process) tell how much work a call took when other
    processes share the cores and stretch the wall time.
    """
    marks = []
    pending = dispatch(0)
    for i in range(1, warmup + calls + 1):
        more = i < warmup + calls
        following = dispatch(i) if overlap and more else None
        jax.block_until_ready(pending)
        marks.append((time.perf_counter(), time.process_time()))
        if len(marks) > 1:
            _progress(f"call {i} of {warmup + calls}: {marks[-1][0] - marks[-2][0]:.2f} s")
        pending = following if overlap else dispatch(i) if more else None
    wall, cpu = np.diff(np.asarray(marks), axis=0)[warmup - 1 :].T
    return [float(x) for x in wall], [float(x) for x in cpu]


def _progress(message: str) -> None:
    # stderr, so that stdout holds only the JSON line.
    print(message, file=sys.stderr, flush=True)


def peak_flops(device: jax.Device) -> tuple[float | None, str]:
    """(peak FLOP/s, where the number comes from) of one device, None when unknown."""
    for kind, flops in PEAK_FLOPS:
        if kind.lower() in device.device_kind.lower():
            return flops, f"table: {kind} dense bf16"
    if device.platform == "cpu":
        return _cpu_peak_flops()
    return None, "unknown device kind"


def _cpuinfo() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    names = [
        line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if "model name" in line
    ]
    return names[0] if names else platform.processor() or platform.machine()


def _cpu_peak_flops() -> tuple[float | None, str]:
    """An estimate: cores x float32 lanes x 2 FMA units x 2 FLOPs x clock (/proc/cpuinfo)."""
    info = _cpuinfo()
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= set(flags) else 0
    if not (mhz and lanes):
        return None, "CPU without AVX2+FMA or clock unknown"
    cores = len(os.sched_getaffinity(0))
    peak = cores * lanes * 2 * 2 * statistics.median(mhz) * 1e6
    return peak, f"estimate: {cores} cores x {lanes} fp32 lanes x 2 FMA x 2 x {mhz[0]:.0f} MHz"


def _compile(fn: Any, *example: Any) -> tuple[Any, float, float]:
    """(compiled, lower seconds, compile seconds) of a jitted function for these arguments."""
    t0 = time.perf_counter()
    lowered = fn.lower(*example)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1


def _memory(device: jax.Device, compiled: Any) -> dict[str, int | None]:
    """Peak bytes in use on the device (None where the backend keeps no statistics, e.g.
    CPU) and XLA's estimate for the compiled call: arguments + outputs - aliased + temps."""
    stats = device.memory_stats() or {}
    analysis = compiled.memory_analysis()
    estimate = None
    if analysis is not None:
        estimate = (
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes
        )
    return {"peak_memory_bytes": stats.get("peak_bytes_in_use"), "compiled_memory_bytes": estimate}


def benchmark(args: types.SimpleNamespace) -> dict[str, Any]:
    """Runs one measurement as `args` says; returns its JSON record."""
    config = make_config(args)
    if args.mode == "input":
        from experiments import input_bench

        return {**input_bench.measure(config, args), "cpu": cpu_model()}
    mesh = parallel.make_mesh()
    parallel.check_batch_size(args.batch, mesh)
    images = load_images(config, args)
    n, batch, per_call = len(images), args.batch, args.steps_per_dispatch
    init_key, train_key = steps.derive_keys(args.seed)

    if args.mode == "augment":
        views = methods.views(config)
        fn = jax.jit(
            lambda i, x: augment.two_views(jax.random.fold_in(train_key, i), x, *views),
            in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        )
        source = parallel.host_to_global(images[:batch], mesh)
        compiled, lower_s, compile_s = _compile(fn, jnp.int32(0), source)
        per_call = 1

        def dispatch(i: int) -> Any:
            return compiled(jnp.int32(i), source)

    else:
        fns = pretrain.build(config, images.shape[1:], optim.step_plan(config.train, n), mesh)
        rows = parallel.process_rows(batch)

        def host_batch(call: int) -> jax.Array:
            # pretrain.run's per-dispatch work: indices, host gather, transfer.
            first = call * per_call
            idx = np.stack(
                [
                    batches.train_batch_indices(args.seed, s, n, batch)[rows]
                    for s in range(first, first + per_call)
                ]
            )
            return parallel.host_to_global(images[idx], mesh, batch_axis=1)

        holder = {"state": fns.init(init_key)}
        resident = host_batch(0)
        live = jax.device_put(np.ones(per_call, bool), parallel.replicated(mesh))
        compiled, lower_s, compile_s = _compile(
            fns.train, holder["state"], (resident,), live, train_key
        )

        def dispatch(i: int) -> Any:
            data = resident if args.mode == "step" else host_batch(i)
            holder["state"], metrics = compiled(holder["state"], (data,), live, train_key)
            return metrics["loss"]

    _progress(f"{args.mode}: lowered in {lower_s:.1f} s, compiled in {compile_s:.1f} s")
    load_before = os.getloadavg()
    seconds, cpu_seconds = time_calls(
        dispatch, args.warmup, args.steps, overlap=args.mode != "augment"
    )
    load_after = os.getloadavg()
    device = mesh.devices.flat[0]
    rates = [per_call * batch / s for s in seconds]
    # XLA's cost analysis counts a while loop's body once, so a dispatch of S scanned steps
    # reports the FLOPs of one step (tests/test_benchmark.py checks S = 1 against S = 2).
    flops = (compiled.cost_analysis() or {}).get("flops")
    flops_per_image = flops / batch if flops else None
    peak, peak_source = peak_flops(device)
    achieved = flops_per_image * statistics.median(rates) if flops_per_image else None
    return {
        "images_per_s": statistics.median(rates),
        "images_per_s_all": rates,
        "seconds_per_call": seconds,
        "process_cpu_s_per_call": cpu_seconds,
        "mode": args.mode,
        "what": MODE_LABELS[args.mode],
        "method": args.method,
        "model": args.model,
        "width": args.width,
        "size": args.size,
        "batch": batch,
        "channels": args.channels,
        "dtype": args.dtype,
        "projector": args.projector,
        "steps_per_dispatch": args.steps_per_dispatch,
        "steps": args.steps,
        "warmup": args.warmup,
        "dataset": args.dataset or "synthetic",
        "lower_s": lower_s,
        "compile_s": compile_s,
        "flops_per_image": flops_per_image,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_flops_source": peak_source,
        "mfu": achieved / peak if achieved and peak else None,
        **_memory(device, compiled),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": [load_before[0], load_after[0]],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses `argv`, measures, prints (and with --out appends) one JSON line."""
    args = parse_args(argv)
    record = benchmark(args)
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")
    return record


if __name__ == "__main__":
    main()

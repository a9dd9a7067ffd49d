"""experiments/benchmark.py at a tiny size: every mode runs and writes a complete JSON line.

A smoke test: no timing is asserted, only that the harness measures what it says (fields,
counts, FLOPs from XLA's cost analysis, the data it feeds) on the 8 host devices of conftest.
"""

import datetime
import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark

TINY = ["--width=4", "--size=28", "--batch=16", "--steps=2", "--warmup=1", "--projector=16-16"]
FIELDS = {
    "images_per_s",
    "images_per_s_all",
    "seconds_per_call",
    "mode",
    "what",
    "method",
    "model",
    "size",
    "batch",
    "dtype",
    "compile_s",
    "lower_s",
    "flops_per_image",
    "mfu",
    "peak_memory_bytes",
    "compiled_memory_bytes",
    "device_kind",
    "jax_version",
    "date",
}


@pytest.fixture(scope="module")
def records(tmp_path_factory, data_dir) -> list[dict]:
    """One run of each mode, all appended to one --out file; returns the file's lines."""
    out = tmp_path_factory.mktemp("bench") / "results.jsonl"
    runs = [
        ["--mode=step", "--method=simclr"],
        ["--mode=end_to_end", "--method=barlow_twins", "--dataset=breastmnist"],
        ["--mode=augment", "--method=barlow_twins"],
    ]
    returned = [benchmark.main([*TINY, *run, f"--out={out}"]) for run in runs]
    lines = [json.loads(line) for line in pathlib.Path(out).read_text().splitlines()]
    assert lines == json.loads(json.dumps(returned))
    return lines


@pytest.mark.slow
def test_each_mode_writes_a_complete_record(records):
    assert [r["mode"] for r in records] == ["step", "end_to_end", "augment"]
    for record in records:
        missing = FIELDS - set(record)
        assert not missing, f"{record['mode']}: missing {missing}"
        assert (record["size"], record["batch"], record["dtype"]) == (28, 16, "float32")
        assert record["model"] == "resnet18"
        assert record["jax_version"] == jax.__version__
        assert record["device_kind"] == jax.devices()[0].device_kind
        assert record["device_count"] == 8
        datetime.datetime.fromisoformat(record["date"])
        assert len(record["seconds_per_call"]) == 2
        assert all(s > 0 for s in record["seconds_per_call"])
        # images/s counts each source image once: batch / seconds, median over calls.
        np.testing.assert_allclose(
            record["images_per_s_all"], [16 / s for s in record["seconds_per_call"]], rtol=1e-9
        )
        assert record["images_per_s"] == pytest.approx(np.median(record["images_per_s_all"]))
        assert record["compile_s"] > 0 and record["lower_s"] > 0
        assert record["flops_per_image"] > 0
        assert record["compiled_memory_bytes"] > 0
        if record["peak_flops_per_s"] is not None:
            assert record["mfu"] == pytest.approx(
                record["flops_per_image"] * record["images_per_s"] / record["peak_flops_per_s"]
            )


@pytest.mark.slow
def test_step_costs_more_than_augmentation_and_end_to_end_costs_both(records):
    step, end_to_end, augment = (r["flops_per_image"] for r in records)
    # The train step (encoder forward and backward on two views) dwarfs the augmentation;
    # end to end runs both, so it costs more than the step with augmentation disabled.
    assert augment < 0.2 * step
    assert end_to_end > step
    assert records[0]["what"] == "step (augmentation disabled)"
    assert records[1]["dataset"] == "breastmnist" and records[0]["dataset"] == "synthetic"


def test_cost_analysis_counts_a_scanned_body_once():
    """The harness divides a dispatch's FLOPs by the batch alone, whatever the number of
    scanned steps, because XLA counts a while loop's body once: check that assumption."""

    def run(xs):
        return jax.lax.scan(lambda c, x: (c, jnp.tanh(x @ x)), 0.0, xs)

    flops = [
        jax.jit(run).lower(jnp.ones((s, 32, 32))).compile().cost_analysis()["flops"] for s in (1, 3)
    ]
    assert flops[0] >= 2 * 32**3
    assert flops[1] == pytest.approx(flops[0], rel=0.05)


def test_grey_dataset_gets_its_channel_repeated(data_dir):
    args = benchmark.parse_args(["--dataset=breastmnist", "--channels=3", "--mode=step"])
    images = benchmark.load_images(benchmark.make_config(args), args)
    grey = np.load(data_dir / "breastmnist.npz")["train_images"]
    chex.assert_shape(images, (*grey.shape, 3))
    assert images.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(images[..., c], grey)


def test_synthetic_images_and_step_mode_config():
    args = benchmark.parse_args(["--batch=8", "--channels=1", "--mode=step", "--size=28"])
    images = benchmark.load_images(benchmark.make_config(args), args)
    chex.assert_shape(images, (4 * 8, 28, 28, 1))
    assert images.dtype == np.uint8 and images.min() < 10 and images.max() > 245
    view = benchmark.make_config(args).augment.view2
    assert view.crop_scale == (1.0, 1.0) and view.blur_prob == 0.0
    assert view.solarize_prob == 0.0 and view.jitter_prob == 0.0


def test_defaults_and_bad_flags(capsys):
    args = benchmark.parse_args(["--method=simclr"])
    assert args.projector_dims == (2048, 128)
    assert benchmark.parse_args([]).projector_dims == (2048, 2048, 2048)
    for bad, named in ((["--projector=wide"], "--projector='wide'"), (["--steps=0"], "--steps")):
        with pytest.raises(SystemExit):
            benchmark.parse_args(bad)
        assert named in capsys.readouterr().err


def test_peak_flops_table():
    class Device:
        platform = "gpu"
        device_kind = "NVIDIA H100 80GB HBM3"

    assert benchmark.peak_flops(Device())[0] == 989e12
    Device.device_kind = "TPU v5 lite"
    assert benchmark.peak_flops(Device())[0] == 197e12
    Device.device_kind = "Some new chip"
    assert benchmark.peak_flops(Device()) == (None, "unknown device kind")


@pytest.mark.parametrize("source", ["memory", "tfds"])
def test_input_mode_times_the_pipeline_alone(tmp_path, data_dir, source):
    record = benchmark.main(
        [
            "--mode=input",
            "--dataset=breastmnist",
            "--batch=64",
            "--steps=3",
            f"--source={source}",
            f"--tfds_dir={tmp_path}",
        ]
    )
    assert record["mode"] == "input" and record["source"] == source
    assert record["size"] == 28 and record["channels"] == 1 and record["train_images"] == 546
    assert len(record["seconds_per_call"]) == 3 and record["images_per_s"] > 0
    assert (tmp_path / "medmnist").is_dir() == (source == "tfds")

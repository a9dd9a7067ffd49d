"""One way into the data (issue 23): the preview, embed and the benchmark open what
`config.data` names through `sources.open_dataset`, so `data.source=tfds` gives them the
same images as memory, read from the array_record form."""

import pathlib

import jax
import numpy as np
import pytest

from configs import barlow
from experiments import benchmark
from ssljax import embed, preview
from ssljax.data import pipeline, sources


@pytest.fixture
def opened(monkeypatch):
    """The kind of train images each `sources.open_dataset` call handed out."""
    kinds = []
    real = sources.open_dataset

    def open_dataset(data_config, progress=True):
        data = real(data_config, progress)
        kinds.append(type(data.train.images))
        return data

    monkeypatch.setattr(sources, "open_dataset", open_dataset)
    return kinds


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, data_dir):
    return tmp_path_factory.mktemp("tfds")


def _config(source: str, tfds_dir: pathlib.Path, data_dir: pathlib.Path):
    config = barlow.get_config("breastmnist")
    config.data.update(source=source, tfds_dir=str(tfds_dir), root=str(data_dir))
    config.train.batch_size = 32
    return config


def test_preview_shows_the_same_batch_from_tfds(opened, monkeypatch, tmp_path, tfds_dir, data_dir):
    shown = {}

    def save_views_grid(images, p1, p2, key, path, *, n=8, title=None):
        shown[len(shown)] = (np.asarray(images), np.asarray(jax.random.key_data(key)))
        return pathlib.Path(path)

    monkeypatch.setattr(preview, "save_views_grid", save_views_grid)
    for source in ("memory", "tfds"):
        preview.preview_config(_config(source, tfds_dir, data_dir), tmp_path / f"{source}.png")
    assert opened == [np.ndarray, pipeline.RecordImages]
    (memory, key), (records, key_tfds) = shown[0], shown[1]
    assert memory.shape == (32, 28, 28, 1) and memory.dtype == np.uint8
    np.testing.assert_array_equal(records, memory)
    np.testing.assert_array_equal(key_tfds, key)


def test_embed_writes_the_same_rows_from_tfds(opened, monkeypatch, tmp_path, tfds_dir, data_dir):
    """The encoder is replaced by per-image pixel statistics, so the test compares what
    embed read, not a network."""

    def features(config, data, encoder, init_vars, init_info, mesh):
        out = {}
        for split, part in data.splits.items():
            x = np.asarray(part.images[:], np.float32).reshape(len(part), -1)
            out[split] = np.stack([x.mean(1), x.std(1), x.max(1)], axis=1)
        return out

    monkeypatch.setattr(embed.setup, "build_encoder", lambda config, size: None)
    info = {"workdir": "fake", "kind": "pretrained"}
    monkeypatch.setattr(embed.setup, "load_init", lambda config, enc, shape: (None, info))
    monkeypatch.setattr(embed.frozen, "features", features)
    written = {}
    for source in ("memory", "tfds"):
        config = _config(source, tfds_dir, data_dir)
        config.init.workdir = str(tmp_path / "no_run")  # no config.json: size not checked
        out = embed.run(config, tmp_path / source)
        written[source] = (np.load(tmp_path / source / embed.EMBEDDINGS_FILE), out["rows"])
        written[source + "_csv"] = (tmp_path / source / embed.CSV_FILE).read_text()
    assert opened == [np.ndarray, pipeline.RecordImages]
    assert written["memory"][1] == written["tfds"][1] == 546 + 78 + 156
    np.testing.assert_array_equal(written["tfds"][0], written["memory"][0])
    assert written["tfds_csv"] == written["memory_csv"]


def test_the_benchmark_reads_the_same_images_from_tfds(opened, tfds_dir, data_dir, monkeypatch):
    monkeypatch.setenv("SSLJAX_DATA_DIR", str(data_dir))
    images = {}
    for source in ("memory", "tfds"):
        args = benchmark.parse_args(
            [
                "--dataset=breastmnist",
                "--channels=1",
                f"--source={source}",
                f"--tfds_dir={tfds_dir}",
            ]
        )
        config = benchmark.make_config(args)
        assert config.data.source == source
        images[source] = benchmark.load_images(config, args)
    assert opened == [np.ndarray, pipeline.RecordImages]
    assert images["memory"].shape == (546, 28, 28, 1)
    np.testing.assert_array_equal(images["tfds"], images["memory"])

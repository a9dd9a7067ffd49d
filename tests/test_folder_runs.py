"""Image folders end to end: pretraining and fine-tuning on a folder of real BreastMNIST PNGs,
`launch.py --mode=embed`, `ssljax.load_encoder`, and an unlabelled folder (it pretrains;
evaluating it is refused in one line). Every run is tiny (width 4, one epoch, batch 64)."""

import csv
import json
import pathlib
import shutil

import numpy as np
import pytest

import ssljax
from configs import barlow, finetune
from ssljax import batchnorm, embed, evaluate, pretrain
from ssljax.data import folder, registry
from ssljax.errors import ConfigError, DataError
from ssljax.evaluate import setup
from tests.processes import launch

BATCH = 64
TINY = {"model.width": 4, "train.batch_size": BATCH, "train.epochs": 1}
TINY |= {"eval.batch_size": BATCH, "log.progress": False}
FLAGS = [f"--config.{k}={v}" for k, v in TINY.items()]


def configure(module, source: pathlib.Path, root: pathlib.Path, **overrides):
    config = module.get_config()
    config.data.folder, config.data.root = str(source), str(root)
    for key, value in {**TINY, **overrides}.items():
        node, leaf = config, key.split(".")
        for part in leaf[:-1]:
            node = node[part]
        node[leaf[-1]] = value
    return config


def pretrain_config(source, root, **overrides):
    return configure(
        barlow,
        source,
        root,
        **{
            "model.projector_dims": (64, 64),
            "train.warmup_epochs": 0,
            "log.monitor_every_epochs": 0,
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def pretrained(breast_png_folder, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """(workdir, data root) of a one-epoch Barlow Twins run on the PNG folder."""
    root = tmp_path_factory.mktemp("root")
    workdir = tmp_path_factory.mktemp("bt")
    pretrain.run(pretrain_config(breast_png_folder, root), workdir)
    return workdir, root


@pytest.mark.slow
def test_finetune_from_a_folder_run(pretrained, breast_png_folder, tmp_path):
    workdir, root = pretrained
    config = configure(finetune, breast_png_folder, root, **{"init.workdir": str(workdir)})
    results = evaluate.run(config, tmp_path)
    assert results["init"]["kind"] == "pretrained" and results["task"] == registry.BINARY
    assert (results["n_train"], results["n_test"], results["epochs"]) == (546, 156, 1)
    assert 0.0 <= results["test"]["auc"] <= 1.0
    assert len(list((root / "folders").glob("*/manifest.json"))) == 1  # converted once


@pytest.mark.slow
def test_embed_writes_one_row_per_image_and_load_encoder_agrees(
    pretrained, breast_png_folder, tmp_path
):
    workdir, root = pretrained
    data_flags = [f"--config.data.folder={breast_png_folder}", f"--config.data.root={root}"]
    out = tmp_path / "embed"
    result = launch(
        "--mode=embed",
        "--config=configs/barlow.py",
        f"--config.init.workdir={workdir}",
        f"--workdir={out}",
        *data_flags,
        *FLAGS,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 780 embeddings (32 features)" in result.stdout
    embeddings = np.load(out / embed.EMBEDDINGS_FILE)
    assert embeddings.shape == (780, 32) and embeddings.dtype == np.float32
    with (out / embed.CSV_FILE).open() as f:
        table = list(csv.DictReader(f))
    data, manifest = folder.load_folder(pretrain_config(breast_png_folder, root).data)
    named = [
        (s, r["file"], r["label"]) for s in ("train", "val", "test") for r in manifest["splits"][s]
    ]
    assert [(r["split"], r["file"], r["label"]) for r in table] == named
    assert (out / embed.MAP_FILE).read_bytes()[:4] == b"\x89PNG"

    # The same encoder in code of one's own, BatchNorm re-estimated as evaluation does.
    train = data.train.images
    encoder = ssljax.load_encoder(
        workdir, bn_images=batchnorm.bn_images(train, 2048), batch_size=BATCH
    )
    assert encoder.image_shape == (28, 28, 1)
    np.testing.assert_allclose(encoder.apply(train), embeddings[:546], rtol=1e-4, atol=1e-5)
    plain = ssljax.load_encoder(workdir / "encoder").apply(train[:3, ..., 0])  # [N, H, W]
    assert plain.shape == (3, 32) and np.isfinite(plain).all()
    # Images of another size or channel count are refused, naming both shapes.
    for shape in ((2, 1, 1, 1), (2, 64, 64, 1), (2, 28, 28, 3), (2, 7, 7)):
        with pytest.raises(DataError) as refused:
            encoder.apply(np.zeros(shape, np.uint8))
        assert str(refused.value) == (
            f"images of dtype uint8 and shape {shape}: the encoder was pretrained on uint8 "
            "[N, 28, 28, 1] (0..255); resize them to that"
        )


@pytest.mark.slow
def test_embed_at_another_size_than_pretraining_is_refused(pretrained, breast_png_folder):
    workdir, root = pretrained
    config = configure(finetune, breast_png_folder, root, **{"init.workdir": str(workdir)})
    config.model.width = 8  # the run used 4: the error names the run's dataset, the folder's
    with pytest.raises(ConfigError, match=rf"model.width=4 on {breast_png_folder.name} \(28 px\)"):
        setup.load_init(config, setup.build_encoder(config, 28), (28, 28, 1))
    config = pretrain_config(breast_png_folder, root, **{"init.workdir": str(workdir)})
    config.data.size = 64
    with pytest.raises(ConfigError) as refused:
        embed.run(config, workdir / "embed_64")
    assert str(refused.value) == (
        f"--mode=embed: the encoder of {workdir} was pretrained at 28 px and data.size=64; "
        "embed at the size it learned: --config.data.size=28"
    )
    assert not list((root / "folders").glob("*/*_64.npz"))  # refused before converting


@pytest.mark.slow
def test_unlabelled_folder_pretrains_and_evaluation_is_refused(breast_png_folder, tmp_path, capsys):
    source = tmp_path / "scans"
    source.mkdir()
    for i, png in enumerate(sorted(breast_png_folder.glob("train/*/*.png"))[:200]):
        shutil.copy(png, source / f"scan_{i:03d}.png")
    root = tmp_path / "root"
    overrides = {"log.monitor_every_epochs": 1, "eval.bn_images": 0, "train.batch_size": 256}
    pretrain.run(pretrain_config(source, root, **overrides), tmp_path / "bt")
    records = [json.loads(line) for line in (tmp_path / "bt" / "metrics.jsonl").open()]
    monitored = [r for r in records if "embedding/rankme" in r]
    assert len(monitored) == 2 and not any("knn_acc" in r for r in records)
    # 140 train images, batch 256: clipped to 136 (a multiple of the 8 devices), one step.
    assert "larger than the 140 train images: using batches of 136" in capsys.readouterr().out
    assert max(r["step"] for r in records) == 1
    assert json.loads((tmp_path / "bt" / "config.json").read_text())["train"]["batch_size"] == 256
    assert (tmp_path / "bt" / "encoder").is_dir()

    result = launch(
        "--config=configs/linear.py",
        f"--workdir={tmp_path / 'lin'}",
        f"--config.init.workdir={tmp_path / 'bt'}",
        f"--config.data.folder={source}",
        f"--config.data.root={root}",
        *FLAGS,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: scans has no labels") and "linear" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_folder_smaller_than_the_batch_previews_with_the_batch_clipped(
    breast_png_folder, tmp_path
):
    """80 train images and the default batch of 256: the preview (the first command of
    README's "Your own images") shows a batch of 80 and says so in one line; it used to end
    in a 29-line ValueError. Pretraining clips alike (the unlabelled folder's run below)."""
    source = tmp_path / "small"
    for split, count in (("train", 40), ("val", 5), ("test", 5)):
        for label in ("malignant", "normal_benign"):
            (source / split / label).mkdir(parents=True)
            for png in sorted(breast_png_folder.glob(f"{split}/{label}/*.png"))[:count]:
                shutil.copy(png, source / split / label / png.name)
    preview = launch(
        "--mode=preview",
        "--config=configs/barlow.py",
        f"--workdir={tmp_path / 'preview'}",
        f"--config.data.folder={source}",
        f"--config.data.root={tmp_path / 'root'}",
    )
    assert preview.returncode == 0 and "Traceback" not in preview.stderr, preview.stderr
    said = "train.batch_size=256 is larger than the 80 train images: using batches of 80"
    assert said in preview.stdout and (tmp_path / "preview" / "augment_preview.png").is_file()

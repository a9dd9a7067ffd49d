"""Image folders (`config.data.folder`): conversion to the stored form, labels, splits, reuse,
bad files, DICOM. No training here (that is tests/test_folder_runs.py)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import base
from ssljax import validation
from ssljax.data import MULTI_CLASS, MULTI_LABEL, folder, imagefile, registry, sources, userfiles
from ssljax.errors import ConfigError, DataError

REPO = pathlib.Path(__file__).resolve().parents[1]


def folder_config(source: pathlib.Path, root: pathlib.Path, **data) -> "base.ConfigDict":
    config = base.get_config()
    config.data.folder = str(source)
    config.data.root = str(root)
    config.data.update(data)
    return config


def convert(source, root, **data) -> tuple:
    """(dataset, manifest) of `source` converted under `root`, without progress bars."""
    return folder.load_folder(folder_config(source, root, **data).data, progress=False)


def grey(rng, size=28) -> np.ndarray:
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def save(path: pathlib.Path, pixels: np.ndarray, mode: str | None = None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path)
    return path


@pytest.fixture(scope="module")
def breast_converted(breast_png_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    return root, *convert(breast_png_folder, root)


def test_png_folder_converts_to_exactly_the_npz(breast_converted, data_dir):
    root, dataset, manifest = breast_converted
    assert (dataset.task, dataset.n_channels, dataset.size) == (registry.BINARY, 1, 28)
    assert dataset.label_names == ("malignant", "normal_benign")
    assert manifest["splits_from"] == "split folders" and manifest["skipped"] == []
    with np.load(data_dir / "breastmnist.npz") as npz:
        for split in ("train", "val", "test"):
            rows = manifest["splits"][split]
            order = [int(pathlib.Path(r["file"]).stem) for r in rows]
            assert sorted(order) == list(range(len(npz[f"{split}_labels"])))
            np.testing.assert_array_equal(
                dataset.splits[split].images[..., 0], npz[f"{split}_images"][order]
            )
            np.testing.assert_array_equal(
                dataset.splits[split].labels, npz[f"{split}_labels"][order, 0]
            )
    npz_path = next((root / "folders").glob("breast_png*/breast_png*_28.npz"))
    assert (npz_path.parent / "manifest.json").is_file()


def test_second_use_reuses_without_reading_images(breast_converted, monkeypatch, capsys):
    root, dataset, manifest = breast_converted
    monkeypatch.setattr(imagefile, "read", lambda *a: pytest.fail("an image was read again"))
    hashed = []
    monkeypatch.setattr(userfiles, "sha256", lambda path, root=None: hashed.append(path))
    again, manifest2 = convert(pathlib.Path(manifest["source"]), root)
    assert manifest2 == manifest and hashed == []
    np.testing.assert_array_equal(again.train.images, dataset.train.images)
    assert "780 images at 28 px (train 546, val 78, test 156" in capsys.readouterr().out


def test_source_auto_checks_the_conversion_once(breast_converted, monkeypatch, capsys):
    """`data.source=auto` sizes the converted file: the folder is listed and its conversion
    checked once, not once to choose the source and again to load it."""
    root, dataset, manifest = breast_converted
    calls, original = [], folder.convert
    monkeypatch.setattr(folder, "convert", lambda *a: calls.append(a) or original(*a))
    config = folder_config(pathlib.Path(manifest["source"]), root)
    config.data.source = "auto"
    opened = sources.open_dataset(config.data, progress=False)
    assert len(calls) == 1
    assert (opened.name, opened.label_names) == (dataset.name, dataset.label_names)
    np.testing.assert_array_equal(opened.train.images, dataset.train.images)
    assert "780 images at 28 px" in capsys.readouterr().out


def test_a_changed_folder_gets_a_new_conversion(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(5):
            save(tmp_path / "src" / c / f"{i}.png", grey(rng))
    _, first = convert(tmp_path / "src", tmp_path / "root")
    save(tmp_path / "src" / "a" / "0.png", grey(rng))  # same name, new content
    _, second = convert(tmp_path / "src", tmp_path / "root")
    assert first["key"] != second["key"]
    assert len(list((tmp_path / "root" / "folders").glob("src-*"))) == 2


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Three classes of 40, 30 and 20 noise images in class folders, no split folders."""
    rng = np.random.default_rng(1)
    src = tmp_path_factory.mktemp("classes")
    for c, n in (("cyst", 40), ("normal", 30), ("tumour", 20)):
        for i in range(n):
            save(src / c / f"{c}_{i:02d}.png", grey(rng))
    return src


def test_stratified_split_is_stable_and_recorded(class_folder, tmp_path):
    data, manifest = convert(class_folder, tmp_path / "one")
    _, again = convert(class_folder, tmp_path / "two")  # a fresh conversion elsewhere
    assert again["splits"] == manifest["splits"]
    assert data.task == MULTI_CLASS and manifest["splits_from"].startswith("val/test drawn")
    counts = {s: np.bincount(data.splits[s].labels, minlength=3) for s in ("train", "val", "test")}
    np.testing.assert_array_equal(counts["val"], [4, 3, 2])  # round(n * 0.1)
    np.testing.assert_array_equal(counts["test"], [8, 6, 4])  # round(n * 0.2)
    _, other_seed = convert(class_folder, tmp_path / "three", split_seed=1)
    assert other_seed["splits"]["val"] != manifest["splits"]["val"]


def test_csv_labels_single_and_multi_label(class_folder, tmp_path):
    files = sorted(p.relative_to(class_folder).as_posix() for p in class_folder.rglob("*.png"))
    single = tmp_path / "single.csv"
    lines = [f"{f},{f.split('/')[0]}" for f in files[1:]] + ["gone.png,cyst"]
    single.write_text("image,finding\n" + "\n".join(lines) + "\n")
    data, manifest = convert(class_folder, tmp_path / "r1", labels=str(single))
    assert data.label_names == ("cyst", "normal", "tumour") and data.task == MULTI_CLASS
    assert len(data.train) + len(data.val) + len(data.test) == len(files) - 1
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {files[0]: "not listed in data.labels", "gone.png": reasons["gone.png"]}
    assert "not found" in reasons["gone.png"]

    multi = class_folder.parent / "multi_labels.csv"
    rows = [
        f"{f},{int('cyst' in f)},{int(i % 2)},{'train' if i % 5 else 'test'}"
        for i, f in enumerate(files)
    ]
    rows[0] = rows[0].replace(",1,0,", ",2,0,")  # not 0/1: skipped
    multi.write_text("path,cystic,calcified,split\n" + "\n".join(rows) + "\n")
    data, manifest = convert(class_folder, tmp_path / "r2", labels=str(multi))
    assert data.task == MULTI_LABEL and data.label_names == ("cystic", "calcified")
    assert data.train.labels.shape[1] == 2 and len(data.val) > 0  # val drawn from train
    for split in ("train", "val", "test"):
        for row, label in zip(manifest["splits"][split], data.splits[split].labels, strict=True):
            i = files.index(row["file"])
            assert list(label) == [int("cyst" in row["file"]), i % 2]
            assert (split == "test") == (i % 5 == 0)
    assert "expected 0 or 1" in manifest["skipped"][0]["reason"]


def test_conflicting_csv_rows_are_an_error_naming_the_file_and_both_labels(class_folder, tmp_path):
    files = sorted(p.relative_to(class_folder).as_posix() for p in class_folder.rglob("*.png"))
    lines = [f"{f},{f.split('/')[0]}" for f in files] + [f"{files[3]},tumour", f"{files[4]},cyst"]
    labels = tmp_path / "labels.csv"
    labels.write_text("image,finding\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError) as raised:
        convert(class_folder, tmp_path / "root", labels=str(labels))
    first = files[3].split("/")[0]
    assert str(raised.value) == (
        f"data.labels={labels}: {files[3]!r} has two different labels, {first!r} on line 5 "
        f"and 'tumour' on line {len(files) + 2}; keep one row per file"
    )


def test_unlabelled_folder(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(12):
        save(tmp_path / "src" / f"scan_{i}.png", grey(rng))
    data, manifest = convert(tmp_path / "src", tmp_path / "root")
    assert data.task == registry.UNLABELLED and data.num_outputs == 0
    assert data.train.labels.shape == (len(data.train), 0)
    assert len(data.train) + len(data.val) + len(data.test) == 12 and len(data.val) >= 1


def test_bad_files_are_skipped_and_listed_others_converted(tmp_path, capsys):
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    for c in ("a", "b"):
        for i in range(8):
            save(src / c / f"{i}.png", grey(rng))
    good = save(src / "a" / "whole.png", grey(rng)).read_bytes()
    (src / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "a" / "garbage.png").write_bytes(b"this is not a picture" * 10)
    (src / "b" / "notes.txt").write_text("scanner settings")
    save(src / "b" / "tiny.png", grey(rng, size=4))
    deep = np.linspace(1000, 3000, 28 * 28).reshape(28, 28).astype(np.uint16)
    save(src / "b" / "deep16.png", deep)
    save(src / "a" / "colour.png", rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    save(src / "b" / "palette.png", grey(rng), mode="P")
    save(src / "a" / "alpha.png", rng.integers(0, 256, (28, 28, 4), dtype=np.uint8))
    (src / ".DS_Store").write_bytes(b"\0")
    data, manifest = convert(src, tmp_path / "root")
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"a/truncated.png", "a/garbage.png", "b/notes.txt", "b/tiny.png"}
    assert "cannot be decoded" in reasons["a/truncated.png"]
    assert reasons["a/garbage.png"].startswith("not an image")
    assert reasons["b/tiny.png"].startswith("too small: 4x4 px")
    assert data.n_channels == 1 and manifest["channels_found"] == {"grey": 20, "rgb": 2}
    assert manifest["converted"]["converted_to_grey"] == 2
    assert manifest["converted"]["scaled_to_8_bits"] == 1
    assert "4 file(s) skipped, reasons in" in capsys.readouterr().out
    rows = {
        r["file"]: (s, i) for s in manifest["splits"] for i, r in enumerate(manifest["splits"][s])
    }
    split, i = rows["b/deep16.png"]
    expected = np.rint((deep - 1000.0) * 255 / 2000).astype(np.uint8)
    np.testing.assert_array_equal(data.splits[split].images[i, ..., 0], expected)


def test_an_empty_class_or_split_stops_with_one_clear_error(tmp_path):
    rng = np.random.default_rng(4)
    for c in ("a", "b"):
        for i in range(6):
            save(tmp_path / "src" / c / f"{i}.png", grey(rng))
    (tmp_path / "src" / "c").mkdir()
    with pytest.raises(DataError, match=r"class 'c' has no readable image in the train split"):
        convert(tmp_path / "src", tmp_path / "root")
    for s in ("train", "val"):
        for c in ("a", "b"):
            save(tmp_path / "splits" / s / c / "0.png", grey(rng))
    (tmp_path / "splits" / "test" / "a").mkdir(parents=True)
    (tmp_path / "splits" / "test" / "a" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"the test split has no readable image; 1 file"):
        convert(tmp_path / "splits", tmp_path / "root")
    assert not list((tmp_path / "root" / "folders").glob("*-*/"))  # nothing half-written


def test_config_mistakes_are_refused_before_converting(tmp_path):
    with pytest.raises(ConfigError, match="data.folder=.*no such folder"):
        validation.validate(folder_config(tmp_path / "missing", tmp_path))
    with pytest.raises(ConfigError, match="data.split_fractions"):
        validation.validate(folder_config(tmp_path, tmp_path, split_fractions=(0.5, 0.1, 0.1)))
    with pytest.raises(ConfigError, match="data.labels=.*no such file"):
        validation.validate(folder_config(tmp_path, tmp_path, labels="labels.csv"))
    with pytest.raises(ConfigError, match="data.path or data.folder, not both"):
        validation.validate(folder_config(tmp_path, tmp_path, path=str(tmp_path / "x.npz")))
    validation.validate(folder_config(tmp_path, tmp_path, size=64))  # not only registry sizes


def test_concurrent_conversions_of_one_folder(breast_png_folder, tmp_path):
    code = (
        "import sys; from configs import base; from ssljax.data import folder\n"
        "c = base.get_config(); c.data.folder, c.data.root = sys.argv[1], sys.argv[2]\n"
        "print(folder.convert(c.data, progress=False)[1]['key'])\n"
    )
    args = [sys.executable, "-c", code, str(breast_png_folder), str(tmp_path)]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    keys = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and keys[0] == keys[1]
    done = list((tmp_path / "folders").iterdir())
    out = tmp_path / "folders" / f"{breast_png_folder.name}-{keys[0]}"
    assert [p for p in done if not p.name.startswith(".")] == [out]
    assert not [p for p in done if ".tmp" in p.name]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(len(v) for v in manifest["splits"].values()) == 780


def test_dicom_rescale_and_window(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4  # 0..4092

    def write(path, photometric="MONOCHROME2"):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
        ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET-1234"
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -4000  # stored 0..4092 -> -4000..4184
        ds.WindowCenter, ds.WindowWidth = 1000, 2001
        ds.PixelData = stored.tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        return path

    values = stored * 2.0 - 4000  # the standard's LINEAR window, c = 1000, w = 2001
    expected = np.clip(((values - 999.5) / 2000 + 0.5) * 255, 0, 255)
    expected = np.rint(np.where(values <= 999.5 - 1000, 0, expected)).astype(np.uint8)
    pixels, _ = imagefile.read(write(tmp_path / "one.dcm"), 32, "crop", 1)
    np.testing.assert_array_equal(pixels[..., 0], expected)
    inverted, _ = imagefile.read(write(tmp_path / "inv", "MONOCHROME1"), 32, "crop", 1)
    np.testing.assert_array_equal(inverted[..., 0], 255 - expected)
    assert pydicom.dcmread(tmp_path / "inv").PatientID == "SECRET-1234"

    for i in range(6):
        write(tmp_path / "src" / f"slice_{i}.dcm")
    data, manifest = convert(tmp_path / "src", tmp_path / "root", size=16)
    assert len(data.train) + len(data.val) + len(data.test) == 6 and data.n_channels == 1
    stored_text = (tmp_path / "root").rglob("*")
    for path in stored_text:
        if path.is_file():
            assert b"SECRET-1234" not in path.read_bytes() and b"Doe^Jane" not in path.read_bytes()

"""The stored form streamed: chunked reads equal np.load, written archives load with np.load."""

import zipfile

import numpy as np
import pytest

from ssljax.data import npzstream


def test_chunked_rows_equal_np_load_of_a_real_compressed_archive(data_dir):
    path = data_dir / "breastmnist.npz"
    with np.load(path) as archive:
        for key in ("train_images", "test_labels"):
            chunks = list(npzstream.iter_rows(path, key, chunk_rows=100))
            assert max(len(c) for c in chunks) == 100
            np.testing.assert_array_equal(np.concatenate(chunks), archive[key])
            assert npzstream.member_info(path, key) == (archive[key].shape, archive[key].dtype)


def test_written_archive_loads_with_np_load_and_streams_back(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 5, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (37, 1)).astype(np.int64)
    path = tmp_path / "out.npz"
    with npzstream.NpzWriter(path) as w:
        for start in range(0, 37, 10):
            w.append("train_images", images[start : start + 10])
            w.append("train_labels", labels[start : start + 10])
        w.ensure("val_labels", (0, 1), np.int64)
        assert w.rows("train_images") == 37 and w.rows("val_labels") == 0
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["train_images"], images)
        np.testing.assert_array_equal(archive["train_labels"], labels)
        assert archive["val_labels"].shape == (0, 1)
    chunks = list(npzstream.iter_rows(path, "train_images", chunk_rows=8))
    np.testing.assert_array_equal(np.concatenate(chunks), images)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temporary folder left


def test_a_failed_write_leaves_the_old_archive_and_no_parts(tmp_path):
    path = tmp_path / "out.npz"
    np.savez(path, train_labels=np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="do not match"), npzstream.NpzWriter(path) as w:
        w.append("train_images", np.zeros((2, 4, 4), np.uint8))
        w.append("train_images", np.zeros((2, 5, 5), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
    with np.load(path) as archive:
        assert archive.files == ["train_labels"]


def test_truncated_member_and_pickled_member_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, train_labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        npzstream.member_info(path, "train_labels")
    short = tmp_path / "short.npz"
    data = np.zeros((10, 8), np.uint8)
    with zipfile.ZipFile(short, "w") as archive, archive.open("x.npy", "w") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (10, 8)}
        )
        f.write(data[:6].tobytes())
    with pytest.raises(ValueError, match="truncated at row 6"):
        list(npzstream.iter_rows(short, "x", chunk_rows=4))

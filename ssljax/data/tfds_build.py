"""Building a TFDS dataset safely: twice at once, after a kill -9, and without litter.

TFDS builds into `<config folder>/incomplete.XXXXXX_<version>/` and renames it into place;
two processes building one new dataset at once collide on that rename (`FileExistsError`),
and a build killed with SIGKILL leaves its `incomplete.*` folder (up to the dataset's size)
forever. `locked` serialises the builds of one dataset with an flock beside its folder (as
the folder conversion does), and `remove_killed_builds`, called under that lock, removes
what killed builds left, with one warning line. `is_built` says whether a folder holds a
whole build. TFDS's own log lines go where `errors.library_logs_to_workdir` sends them (the
run's errors.log); `LocalInfo` skips TFDS's lookup of metadata on GCS, which left an
empty `tmpXXXXtfds` folder in the system temp directory on every build, and `QuietBuilder`
says "building ..." in one line where TFDS printed "Downloading and preparing dataset
Unknown size ..." and "... downloaded and prepared ..." for a build made from a local file.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil

import tensorflow_datasets as tfds

INCOMPLETE = "incomplete."  # tensorflow_datasets.core.constants.INCOMPLETE_PREFIX


class LocalInfo(tfds.core.DatasetInfo):
    """TFDS's DatasetInfo without its lookup of precomputed metadata on GCS (a MedMNIST
    build is always made here)."""

    def initialize_from_bucket(self) -> None:
        pass


class QuietBuilder:
    """A mixin of TFDS builders: one line of ours for TFDS's two stdout prints of a build."""

    def _log_download_bytes(self) -> None:
        print(f"building {self.name}/{self.builder_config.name} in {self.data_dir}", flush=True)

    def _log_download_done(self) -> None:
        pass


@contextlib.contextmanager
def locked(data_path: str | os.PathLike):
    """Holds an exclusive flock on `.<config>.lock` beside the config folder of `data_path`
    (`<tfds_dir>/<dataset>/<config>/<version>`) for the block; waits for another holder."""
    config_dir = pathlib.Path(data_path).parent
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    with (config_dir.parent / f".{config_dir.name}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_killed_builds(data_path: str | os.PathLike) -> list[pathlib.Path]:
    """Removes the `incomplete.*` folders of `data_path`'s config folder, which only a dead
    build leaves (call it under `locked`); prints one line when there were any."""
    config_dir = pathlib.Path(data_path).parent
    found = sorted(config_dir.glob(f"{INCOMPLETE}*")) if config_dir.is_dir() else []
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    if found:
        print(
            f"warning: removed {len(found)} unfinished TFDS build(s) in {config_dir}, left by "
            f"a run that was killed ({', '.join(p.name for p in found)})",
            flush=True,
        )
    return found


def is_built(builder) -> bool:
    """Whether `builder`'s folder holds a whole dataset: TFDS's metadata (written last) and
    every shard, each readable with the record count the metadata gives."""
    if not (pathlib.Path(os.fspath(builder.data_path)) / "dataset_info.json").is_file():
        return False
    if not builder.is_prepared():
        return False
    from array_record.python import array_record_module  # noqa: PLC0415 - TFDS's dependency

    for split in builder.info.splits.values():
        template = split.filename_template
        for i, length in enumerate(split.shard_lengths):
            path = template.sharded_filepath(shard_index=i, num_shards=len(split.shard_lengths))
            try:
                reader = array_record_module.ArrayRecordReader(os.fspath(path))
                count = reader.num_records()
                reader.close()
            except (OSError, RuntimeError, ValueError):
                return False
            if count != length:
                return False
    return True

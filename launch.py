"""The one entry point: `python launch.py --config=configs/F.py --workdir=W [--config.x=y ...]`.

The config's `method` chooses the job: `barlow_twins` / `simclr` pretrain an encoder;
`finetune` / `linear` / `knn` evaluate one (or a random initialisation) on the labelled task.
`--mode=preview` writes W/augment_preview.png (originals and their two augmented views) so
the augmentation can be checked before a long run. This is the only file that defines flags.
"""

import ast
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with an argument: configs/barlow.py:dermamnist."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for this run's outputs; resumes there.")
_MODE = flags.DEFINE_enum(
    "mode", "run", ["run", "preview"], "run: train/evaluate; preview: augmentation PNG only."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    """Runs the job; a user error (bad config, missing data, ...) exits with its message."""
    from ssljax.data.download import DatasetDownloadError
    from ssljax.pretrain import NonFiniteLossError
    from ssljax.validation import ConfigError

    try:
        _run(argv)
    except (ConfigError, DatasetDownloadError, NonFiniteLossError, FileNotFoundError) as e:
        sys.exit(f"launch.py: {e}")


def _run(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so --help answers without importing JAX.
    from ssljax import parallel, validation

    if not flags.FLAGS["verbosity"].present:
        # Orbax and JAX log every checkpoint step at INFO; progress bars say what matters.
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    validation.validate(config)
    parallel.initialize_distributed(config.distributed)
    workdir = pathlib.Path(_WORKDIR.value)
    if _MODE.value == "preview":
        from ssljax import preview

        path = preview.preview_config(config, workdir / "augment_preview.png")
        print(f"wrote {path}")
    elif config.method in validation.PRETRAIN_METHODS:
        from ssljax import pretrain

        pretrain.run(config, workdir)
    else:
        from ssljax import evaluate

        evaluate.run(config, workdir)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a one-line error for a mistyped or invalid override."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"launch.py: {e}\nSee --helpfull, and configs/base.py for every config key.")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections wraps a KeyError's repr in its AttributeError; unwrap it.
        text = str(e)
        while text[:1] in "'\"":
            try:
                text = str(ast.literal_eval(text))
            except (SyntaxError, ValueError):
                break
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(
            f"launch.py: bad config override among {overrides}: {text}\n"
            "Every config key is declared in configs/base.py."
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

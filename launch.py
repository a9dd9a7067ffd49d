"""The one entry point: `python launch.py --config=configs/F.py --workdir=W [--config.x=y ...]`.

The config's `method` chooses the job: `barlow_twins` / `simclr` pretrain an encoder;
`finetune` / `linear` / `knn` evaluate one (or a random initialisation) on the labelled task.
`--mode=preview` writes W/augment_preview.png (originals and their two augmented views) so
the augmentation can be checked before a long run. `--mode=embed` writes the features of
every image with `config.init.workdir`'s encoder (`ssljax/embed.py`). The job is named once,
from --mode and the config's method, and run under the one entry (`ssljax.jobs`,
`ssljax.entry`): the config validated, the workdir checked and locked, once.

A failure the user can cause ends in one line `error: ...` on stderr and exit status 1 (the
traceback in W/errors.log, and on the terminal with --verbose); Ctrl-C in one line saying
where the same command resumes, exit status 130 (`ssljax.errors`): the run stops at its next
step, a second Ctrl-C stops it at once (`ssljax.interrupt`).
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
    "mode",
    "run",
    ["run", "preview", "embed"],
    "run: train/evaluate; preview: augmentation PNG only; embed: features of every image "
    "with config.init.workdir's encoder (W/embeddings.npy, .csv, _map.png).",
)
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On an error, also print its traceback (always in WORKDIR/errors.log)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    """Runs the job; a failure the user can cause ends in one line `error: ...` on stderr
    (exit 1), Ctrl-C in one line saying where the run will resume (exit 130)."""
    # Holds the workdir once it passed its checks and is locked: errors.log goes there.
    checked: list[pathlib.Path] = []
    from ssljax import errors, interrupt

    interrupt.install(lambda: errors.interrupted_line(_resume_point()))
    try:
        _run(argv, checked)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - bugs are re-raised
        workdir = checked[0] if checked else None
        sys.exit(errors.report_failure(e, workdir, _resume_point(), _VERBOSE.value))


def _resume_point() -> str:
    """Where the same command resumes: the workdir's newest complete checkpoint, or the start."""
    workdir = pathlib.Path(_WORKDIR.value).expanduser() if _WORKDIR.value else None
    if workdir is None or not workdir.is_dir():
        return "from the start"
    from ssljax import checkpoint

    steps = checkpoint.committed_steps(workdir / checkpoint.CHECKPOINT_DIR)
    if not steps:
        return f"{workdir} from the start (it has no checkpoint yet)"
    return f"{workdir} from step {steps[-1]} (its last checkpoint)"


def _run(argv: list[str], checked: list[pathlib.Path]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and JAX log every checkpoint step at INFO (matplotlib its font cache, on the
        # import below); progress bars say what matters.
        logging.set_verbosity(logging.WARNING)
    # Imported here so --help answers without importing JAX.
    from ssljax import jobs

    # The one entry: validate, check and lock the workdir, then the job --mode and
    # config.method name (ssljax.jobs, ssljax.entry).
    jobs.run(_CONFIG.value, _WORKDIR.value, _MODE.value, what="--workdir", held=checked.append)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a one-line error for a mistyped or invalid override."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nSee --helpfull, and configs/base.py for every config key.")
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
            f"error: bad config override among {overrides}: {text}\n"
            "Every config key is declared in configs/base.py."
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

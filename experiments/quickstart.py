"""The whole story in minutes on a CPU: `python -m experiments.quickstart`.

    python -m experiments.quickstart [--root=runs/quickstart]
    python -m experiments.quickstart --grid=experiments/grids/quickstart.py:tiny --root=/tmp/qs

Runs the sweep of `experiments/grids/quickstart.py` (Barlow Twins on BreastMNIST with a
small ResNet-18, then fine-tuning, linear probe and kNN at 10% and 100% of the labels, beside
random initialisation), then `ssljax.report` on it: prints the comparison table and where
the report and its plots are (ROOT/report/). Rerunning skips what is finished. The `tiny`
grid argument shrinks every run for CI. Takes the flags of `experiments.sweep`, so any grid
value can be overridden: `--grid.pretrain.train.epochs=20`.
"""

import pathlib
import sys

from absl import app

from experiments import sweep
from ssljax import report

GRID_FILE = pathlib.Path(__file__).resolve().parent / "grids" / "quickstart.py"
_FLAGS = sweep.define_flags(default_grid=str(GRID_FILE), default_root="runs/quickstart")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    sweep.install_ctrl_c(_FLAGS)
    try:
        record = sweep.run_from_flags(_FLAGS, "experiments.quickstart")
        if record is None:
            return
        print(sweep.summary_text(record))
        root = pathlib.Path(_FLAGS["root"].value).expanduser()
        paths = report.make_report(root, root / "report")
        evals, _ = report.collect([root])
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - bugs are re-raised
        sys.exit(sweep.exit_status(e, _FLAGS))
    print()
    print(report.markdown_tables(report.aggregate(evals)))
    print(f"report: {paths['markdown']}")
    for name, path in paths.items():
        if path.suffix == ".png":
            print(f"plot:   {path}  ({name})")
    if sweep.failures(record):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)

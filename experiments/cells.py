"""A sweep's grid expanded into cells: one config and workdir per run.

See `experiments/sweep.py` for the grid's fields and the layout of the workdirs.
"""

import dataclasses
import pathlib
from typing import Any

import ml_collections

from experiments.grids import flatten
from ssljax import evaluate, methods
from ssljax.data import registry
from ssljax.errors import ConfigError

SECTIONS = ("common", "pretrain", *evaluate.PROTOCOLS)
GRID_FIELDS = ("name", "datasets", "methods", "label_fractions", "protocols", "seeds", *SECTIONS)
# Optional grid fields: pretrain_seeds, finetune_lrs, ablation_protocols, by_dataset,
# evaluate_failed (evaluate a pretraining run whose health verdict is failed; the sweep).


@dataclasses.dataclass
class Cell:
    """One run of the grid.

    Attributes:
      name: the workdir relative to ROOT, e.g. 'pretrain/barlow_twins-breastmnist-s0'.
      kind: 'pretrain' or 'eval'.
      config: the run's locked config.
      needs: name of the pretraining cell an evaluation starts from ('' for random init).
    """

    name: str
    kind: str
    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    needs: str = ""

    def finished(self) -> bool:
        marker = "encoder" if self.kind == "pretrain" else evaluate.RESULTS_FILE
        return (self.workdir / marker).exists()


def apply_overrides(
    config: ml_collections.ConfigDict, section: ml_collections.ConfigDict, where: str
) -> None:
    """Sets each dotted key of `section` in `config`; unknown keys and wrong types raise."""
    for key, value in flatten(section).items():
        node = config
        *parents, leaf = key.split(".")
        try:
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = value
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"grid.{where}.{key}={value!r} cannot be applied ({type(e).__name__}: {e}). "
                "Every config key and its type is declared in configs/base.py."
            ) from e


def check_grid(grid: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the grid field that cannot work."""
    missing = [f for f in GRID_FIELDS if f not in grid]
    if missing:
        raise ConfigError(f"the grid lacks {missing}; a grid names {list(GRID_FIELDS)}")
    for field, valid in (("methods", methods.arms()), ("protocols", tuple(evaluate.PROTOCOLS))):
        bad = [v for v in grid[field] if v not in valid]
        if bad:
            raise ConfigError(f"grid.{field}: unknown {bad}; valid: {list(valid)}")
    for field in ("datasets", "methods", "label_fractions", "seeds"):
        values = tuple(grid[field])
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"grid.{field}={values}: must be non-empty, without repeats")
    bad = [f for f in grid.label_fractions if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"grid.label_fractions: {bad} are not in (0, 1]")
    if not all(isinstance(s, int) for s in grid.seeds):
        raise ConfigError(f"grid.seeds={tuple(grid.seeds)}: seeds are integers")
    for spec in grid.datasets:
        registry.parse_dataset_key(spec, "grid.datasets")
    for spec, specific in grid.by_dataset.items() if "by_dataset" in grid else ():
        unknown = [k for k in specific if k not in SECTIONS]
        if spec not in grid.datasets or unknown:
            raise ConfigError(
                f"grid.by_dataset.{spec}: names a dataset of grid.datasets {tuple(grid.datasets)} "
                f"and holds sections of {list(SECTIONS)}; got {list(specific)}"
            )


def _config(
    module: str,
    grid: ml_collections.ConfigDict,
    section: str,
    spec: str,
    seed: int,
    **values: Any,
) -> ml_collections.ConfigDict:
    name, size = registry.parse_dataset_key(spec, "grid.datasets")
    config = methods.default_config(module, name)
    apply_overrides(config, grid.common, "common")
    apply_overrides(config, grid[section], section)
    specific = grid.by_dataset[spec] if "by_dataset" in grid and spec in grid.by_dataset else {}
    for where in ("common", section):
        if where in specific:
            apply_overrides(config, specific[where], f"by_dataset.{spec}.{where}")
    config.data.size = size
    config.seed = seed
    for key, value in values.items():
        node, _, leaf = key.rpartition("__")
        config[node][leaf] = value
    config.lock()
    return config


def expand(grid: ml_collections.ConfigDict, root: str | pathlib.Path) -> list[Cell]:
    """The grid's cells in run order: seed by seed, each pretraining before the evaluations
    that use it, so a sweep cut short still holds complete seeds.

    Evaluation seed i starts from the pretraining run of `pretrain_seeds[i % P]` (default:
    its own seed). Fine-tuning runs once per learning rate of `finetune_lrs` (default: the
    config's), in workdirs suffixed `-lr<LR>`; the report chooses among them on val.
    """
    check_grid(grid)
    root = pathlib.Path(root)
    seeds = tuple(grid.seeds)
    pretrain_seeds = tuple(grid.get("pretrain_seeds", None) or seeds)
    cells: list[Cell] = []
    done: set[str] = set()
    for i, seed in enumerate(seeds):
        p_seed = pretrain_seeds[i % len(pretrain_seeds)]
        for spec in grid.datasets:
            for base in dict.fromkeys(methods.parse_arm(m)[0] for m in grid.methods):
                name = f"pretrain/{base}-{spec}-s{p_seed}"
                if base != methods.RANDOM and name not in done:
                    done.add(name)
                    module = methods.METHODS[base].config
                    config = _config(module, grid, "pretrain", spec, p_seed)
                    cells.append(Cell(name, "pretrain", root / name, config))
            cells += _eval_cells(grid, root, spec, seed, p_seed)
    return cells


def _eval_cells(grid, root: pathlib.Path, spec: str, seed: int, p_seed: int) -> list[Cell]:
    """The evaluations of one dataset and evaluation seed, protocol by protocol."""
    lrs = tuple(grid.get("finetune_lrs", None) or ())
    cells = []
    for protocol in grid.protocols:
        for method in grid.methods:
            base, how = methods.parse_arm(method)
            if how != "all" and protocol not in grid.get("ablation_protocols", (protocol,)):
                continue
            needs = "" if base == methods.RANDOM else f"pretrain/{base}-{spec}-s{p_seed}"
            for fraction in grid.label_fractions:
                for lr in lrs if protocol == "finetune" and lrs else (None,):
                    suffix = "" if lr is None else f"-lr{lr:g}"
                    name = f"eval/{spec}/{protocol}/{method}/f{fraction}-s{seed}{suffix}"
                    values = {
                        "data__label_fraction": float(fraction),
                        "init__workdir": str(root / needs) if needs else "",
                        "init__transfer": how,
                    }
                    if lr is not None:
                        values["train__base_lr"] = float(lr)
                    module = evaluate.PROTOCOLS[protocol].config
                    config = _config(module, grid, protocol, spec, seed, **values)
                    cells.append(Cell(name, "eval", root / name, config, needs))
    return cells

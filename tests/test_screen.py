"""experiments/screen.py: a tiny recipe screen on real BreastMNIST, its table and its rerun."""

import json

import ml_collections
import pytest

from experiments import screen
from experiments.grids import bt_screen, overrides
from ssljax import health, validation
from ssljax.errors import ConfigError


def tiny_grid() -> ml_collections.ConfigDict:
    grid = ml_collections.ConfigDict()
    grid.method = "barlow_twins"
    grid.dataset = "breastmnist"
    grid.linear = False
    grid.common = overrides(
        {
            "model.width": 4,
            "model.projector_dims": (32, 32),
            "train.batch_size": 64,
            "train.epochs": 1,
            "log.every_steps": 4,
            "log.monitor_every_epochs": 1,
            "log.progress": False,
        }
    )
    recipes = {"default": {}, "paper_lars": bt_screen.recipes()["paper_lars"]}  # run: one
    grid.recipes = ml_collections.ConfigDict({k: overrides(v) for k, v in recipes.items()})
    return grid


@pytest.mark.slow
def test_screen_pretrains_scores_and_tables_each_recipe(tmp_path, monkeypatch):
    grid = tiny_grid()
    rows = screen.run_screen(grid, tmp_path, only=["paper_lars"])
    assert [r["recipe"] for r in rows] == ["random encoder", "paper_lars"]
    for row in rows[1:]:
        verdict = json.loads((tmp_path / row["recipe"] / health.HEALTH_FILE).read_text())
        assert row["verdict"] == verdict["verdict"]
        assert row["embedding_rankme"][0] > row["embedding_rankme"][1] > 0
        assert 0 < row["knn"]["test"] <= 1 and row["knn_val_auc"][0] > 0
    # The recipe's values reached the run: its config.json has the paper's trust coefficient.
    config = json.loads((tmp_path / "paper_lars" / "config.json").read_text())
    assert config["train"]["trust_coefficient"] == 0.001 and not config["train"]["clip_lr"]
    table = (tmp_path / "screen.md").read_text()
    assert table.splitlines()[0].startswith("| recipe | loss (last 5 logs) | diag of c |")
    assert "| random encoder |" in table and "| paper_lars |" in table
    assert len((tmp_path / "screen.jsonl").read_text().splitlines()) == 2

    # Run again: finished recipes are read back, not trained again.
    monkeypatch.setattr(screen.pretrain, "run", lambda *a: pytest.fail("trained again"))
    again = screen.run_screen(grid, tmp_path, only=["paper_lars"])
    assert again[1]["recipe"] == "paper_lars" and again[1]["knn"] == rows[1]["knn"]


def test_screen_refuses_an_unknown_recipe(tmp_path):
    with pytest.raises(ConfigError, match="'nope'.*'default', 'paper_lars'"):
        screen.run_screen(tiny_grid(), tmp_path, only=["nope"])


def test_every_recipe_of_the_committed_screen_is_a_valid_config():
    grid = bt_screen.get_config()
    for recipe in grid.recipes:
        config = screen.recipe_config(grid, recipe)
        validation.validate(config)
        assert config.model.width == 16 and config.train.batch_size == 128


def test_the_default_recipe_is_the_one_the_screen_chose():
    """configs/barlow.py's defaults are the screened recipe 'lars_eta003_crop035', value for
    value, so the screen's row for it is the default's."""
    grid = bt_screen.get_config()
    chosen = screen.recipe_config(grid, "lars_eta003_crop035").to_dict()
    assert screen.recipe_config(grid, "default").to_dict() == chosen

"""The fair protocol end to end on real PneumoniaMNIST: a default-recipe Barlow Twins encoder
beats the random encoder (BatchNorm statistics re-estimated on the train images) in the
linear probe at 10% of the labels."""

import pytest

from configs import barlow, linear
from ssljax import evaluate, pretrain

WIDTH = 8


@pytest.fixture(scope="module")
def barlow_pneumonia(tmp_path_factory):
    """Barlow Twins with configs/barlow.py's recipe, width 8, 3 epochs on PneumoniaMNIST."""
    config = barlow.get_config("pneumoniamnist")
    config.model.width = WIDTH
    config.train.epochs = 3
    config.log.monitor_every_epochs = 0
    config.log.progress = False
    workdir = tmp_path_factory.mktemp("barlow_pneumonia")
    summary = pretrain.run(config, workdir)
    return workdir, summary


def _linear(tmp_path, init: str, name: str) -> dict:
    config = linear.get_config("pneumoniamnist")
    config.model.width = WIDTH
    config.data.label_fraction = 0.1
    config.init.workdir = init
    config.log.progress = False
    return evaluate.run(config, tmp_path / name)


@pytest.mark.slow
def test_barlow_twins_beats_random_encoder_in_linear_probe(barlow_pneumonia, tmp_path):
    workdir, summary = barlow_pneumonia
    random = _linear(tmp_path, "", "random")
    pretrained = _linear(tmp_path, str(workdir), "barlow")
    assert random["bn_reestimated_on"] == 2048 == pretrained["bn_reestimated_on"]
    gain = pretrained["test"]["auc"] - random["test"]["auc"]
    assert gain > 0.0, (pretrained["test"], random["test"], summary)

"""The fair protocol end to end on real PneumoniaMNIST: a default-recipe Barlow Twins encoder
beats the random encoder (BatchNorm statistics re-estimated on the train images) in the
linear probe at 10% of the labels."""

import pytest

from configs import linear
from ssljax import evaluate, writers
from tests.processes import launch

WIDTH = 8


@pytest.fixture(scope="module")
def barlow_pneumonia(tmp_path_factory):
    """Barlow Twins with configs/barlow.py's recipe, width 8, 3 epochs on PneumoniaMNIST,
    through launch.py on one device (on 2 cores, a third of the time of 8 test devices)."""
    workdir = tmp_path_factory.mktemp("barlow_pneumonia")
    result = launch(
        "--config=configs/barlow.py:pneumoniamnist",
        f"--workdir={workdir}",
        f"--config.model.width={WIDTH}",
        "--config.train.epochs=3",
        "--config.log.monitor_every_epochs=0",
        "--config.log.progress=False",
        devices=1,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _linear(tmp_path, init: str, name: str) -> dict:
    config = linear.get_config("pneumoniamnist")
    config.model.width = WIDTH
    config.data.label_fraction = 0.1
    config.init.workdir = init
    config.log.progress = False
    return evaluate.run(config, tmp_path / name)


@pytest.mark.slow
def test_barlow_twins_beats_random_encoder_in_linear_probe(barlow_pneumonia, tmp_path):
    random = _linear(tmp_path, "", "random")
    pretrained = _linear(tmp_path, str(barlow_pneumonia), "barlow")
    assert random["bn_reestimated_on"] == 2048 == pretrained["bn_reestimated_on"]
    gain = pretrained["test"]["auc"] - random["test"]["auc"]
    last_record = writers.read_metrics(barlow_pneumonia)[-1]
    assert gain > 0.0, (pretrained["test"], random["test"], last_record)

"""Runs the first steps of a pretraining run, with the schedule of the whole run.

    python -m tests.recipe_worker WORKDIR STOP_STEP [KEY=VALUE ...]   # from the repository root

Barlow Twins on real PneumoniaMNIST (`configs/barlow.py:pneumoniamnist`), dotted overrides
as Python literals; the loop stops after STOP_STEP steps (its actions then run as at a
run's end), so a test sees steps 0..STOP_STEP of a long run without training all of it.
Run as its own process: one host device (XLA_FLAGS set by the caller), the step compiled
once.
"""

import ast
import dataclasses
import sys

from configs import barlow
from ssljax import loop, pretrain


def main(workdir: str, stop: str, *overrides: str) -> None:
    config = barlow.get_config("pneumoniamnist")
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = ast.literal_eval(value)

    whole_run = loop.Loop

    class FirstSteps(whole_run):
        def run(self, state, start_step, train_key):
            plan = dataclasses.replace(self.plan, total_steps=int(stop))
            first = dataclasses.replace(self, plan=plan)
            return whole_run.run(first, state, start_step, train_key)

    loop.Loop = FirstSteps  # what pretrain.run builds its loop from
    pretrain.run(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])

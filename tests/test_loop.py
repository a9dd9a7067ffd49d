"""The training loop: cadences, padded chunks, one trace per run, the non-finite guard and
the transfer guard, on a toy step; then pretraining and fine-tuning on real BreastMNIST with
steps_per_dispatch not dividing the epoch (one trace per run, exact fine-tuning resume)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import barlow, finetune
from ssljax import checkpoint, evaluate, loop, optim, parallel, pretrain, steps, writers
from ssljax.errors import NonFiniteLossError

B = 8  # toy global batch: one row per test device


def test_itstime():
    # every 4 steps, chunks of 3: due after the chunks that cross 4, 8, 12, and at the end
    ends = [3, 6, 9, 12, 14]
    assert [s for s in ends if loop.itstime(s, 4, 14, 3)] == [6, 9, 12, 14]
    assert loop.itstime(5, 5, 10) and not loop.itstime(4, 5, 10) and loop.itstime(10, 7, 10)
    assert not any(loop.itstime(s, 0, 10, 2) for s in (2, 10))  # every 0: never


@pytest.fixture
def traces(monkeypatch) -> list[tuple]:
    """The batch shapes of every trace of a jitted `steps.scan_steps` function."""
    seen, original = [], steps.scan_steps

    def counting(step):
        run = original(step)

        def traced(state, batches, *rest):
            seen.append(tuple(b.shape for b in batches))  # runs once per trace
            return run(state, batches, *rest)

        return traced

    monkeypatch.setattr(steps, "scan_steps", counting)
    return seen


def _toy_step(state: steps.TrainState, x: jax.Array, key: jax.Array):
    """Adds the batch's sum (the 'loss', float32 []) to params, skipped when non-finite."""
    del key
    loss = x.sum()
    finite = jnp.isfinite(loss)
    return state.replace(
        step=state.step + 1,
        params=jnp.where(finite, state.params + loss, state.params),
        nonfinite_step=jnp.where(
            (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
        ),
    ), {"loss": loss}


def _toy_loop(tmp_path, epochs, steps_per_epoch, steps_per_dispatch, nan_at=None, **kw):
    """A Loop over the toy step: batch s is B rows of s + 1 (NaN at step `nan_at`); the
    host batches it was asked for are recorded in `requests`."""
    mesh = parallel.make_mesh()
    repl = parallel.replicated(mesh)
    train = jax.jit(
        steps.scan_steps(_toy_step),
        in_shardings=(repl, (parallel.batch_sharding(mesh, 1),), repl, repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    requests = []

    def batch_at(first, n):
        requests.append((first, n))
        values = np.arange(first, first + n, dtype=np.float32) + 1
        if nan_at is not None:
            values[values == nan_at + 1] = np.nan
        return (np.repeat(values[:, None], B, axis=1)[:, parallel.process_rows(B)],)

    cfg = optim.StepPlan(steps_per_epoch, epochs * steps_per_epoch, 0, ())
    state = jax.device_put(
        steps.TrainState(jnp.int32(0), jnp.float32(0), {}, {}, jnp.int32(-1)), repl
    )
    ckpt = checkpoint.Checkpointer(tmp_path, keep=10)
    writer = writers.MetricWriter(tmp_path, cfg.total_steps, progress=False)
    the_loop = loop.Loop(
        train=train,
        batch_at=batch_at,
        plan=cfg,
        mesh=mesh,
        writer=writer,
        ckpt=ckpt,
        checkpoint_every=steps_per_epoch,
        what="toy",
        fix="Fix the toy.",
        steps_per_dispatch=steps_per_dispatch,
        **kw,
    )
    return the_loop, state, requests


def test_chunks_pad_to_one_shape_and_actions_come_due(tmp_path, traces):
    seen = []
    actions = [
        loop.Action(lambda s, n: loop.itstime(s, 4, 14, n), lambda c: seen.append(("log", c))),
        loop.Action(lambda s, n: loop.itstime(s, 7, 14, n), lambda c: seen.append(("epoch", c))),
    ]
    the_loop, state, requests = _toy_loop(tmp_path, 2, 7, 3, actions=actions)
    with loop.closing(the_loop.ckpt, the_loop.writer):
        state = the_loop.run(state, 0, jax.random.key(0))
    # An epoch of 7 steps in chunks of 3, 3, 1 (the last padded to 3): one trace.
    assert requests == [(0, 3), (3, 3), (6, 1), (7, 3), (10, 3), (13, 1)]
    assert traces == [((3, B),)]
    assert int(state.step) == 14  # padding steps do not count...
    assert float(state.params) == B * sum(range(1, 15))  # ...nor add anything
    steps_seen = {name: [c.step for n, c in seen if n == name] for name in ("log", "epoch")}
    assert steps_seen == {"log": [6, 10, 13, 14], "epoch": [7, 14]}
    last = next(c for n, c in seen if n == "epoch" and c.step == 7)
    assert last.size == 1 and last.last_metrics() == {"loss": B * 7.0}
    assert checkpoint.committed_steps(tmp_path / "checkpoints") == [7, 14]


def test_resume_replays_the_same_steps(tmp_path, traces):
    first, state, _ = _toy_loop(tmp_path, 1, 5, 1)  # one epoch, checkpointed at its end
    with loop.closing(first.ckpt, first.writer):
        first.run(state, 0, jax.random.key(0))
    assert traces == [((1, B),)]  # one step per dispatch: no scan, no padding
    second, target, requests = _toy_loop(tmp_path, 2, 5, 4)
    state, start = loop.restore(second.ckpt, target)
    assert start == 5
    with loop.closing(second.ckpt, second.writer):
        state = second.run(state, start, jax.random.key(0))
    assert requests == [(5, 4), (9, 1)]
    assert int(state.step) == 10 and float(state.params) == B * sum(range(1, 11))


def test_nonfinite_loss_names_its_step_and_the_checkpoint(tmp_path):
    # Step 8 (0-based 7) is NaN; checkpoints at 5 (epoch 1); due actions: epoch ends only.
    the_loop, state, _ = _toy_loop(tmp_path, 2, 5, 2, nan_at=7)
    with pytest.raises(NonFiniteLossError) as e, loop.closing(the_loop.ckpt, the_loop.writer):
        the_loop.run(state, 0, jax.random.key(0))
    assert "the toy loss became non-finite at step 8;" in str(e.value)
    assert "the last good checkpoint (step 5) is kept. Fix the toy." in str(e.value)
    the_loop, state, _ = _toy_loop(tmp_path / "early", 2, 5, 2, nan_at=0)
    with pytest.raises(NonFiniteLossError) as e, loop.closing(the_loop.ckpt, the_loop.writer):
        the_loop.run(state, 0, jax.random.key(0))
    assert "at step 1;" in str(e.value) and "no checkpoint was written yet" in str(e.value)


def test_dispatch_refuses_implicit_transfers(tmp_path):
    the_loop, state, _ = _toy_loop(tmp_path, 1, 2, 1)
    # A train function that slips a host constant onto the device, as `x + 1.0` on an
    # uncommitted NumPy value would: the guard stops it.
    sneaky = lambda state, batches, live, key: the_loop.train(  # noqa: E731
        state, (batches[0] + np.float32(1),), live, key
    )
    bad = dataclasses.replace(the_loop, train=sneaky)
    guarded = pytest.raises(Exception, match="Disallowed host-to-device transfer")
    with guarded, loop.closing(bad.ckpt, bad.writer):
        bad.run(state, 0, jax.random.key(0))


@pytest.mark.slow
def test_pretraining_traces_its_step_once(tmp_path, traces):
    """8 steps per epoch (546 // 64) in chunks of 3, 3, 2 (padded to 3), over 2 epochs."""
    config = barlow.get_config("breastmnist")
    config.model.width, config.model.projector_dims = 4, (64, 64)
    config.train.update(batch_size=64, epochs=2, steps_per_dispatch=3)
    config.log.update(every_steps=4, monitor_every_epochs=0, progress=False)
    config.checkpoint.every_epochs = 1
    pretrain.run(config, tmp_path)
    assert traces == [((3, 64, 28, 28, 1),)]
    logged = [r["step"] for r in writers.read_metrics(tmp_path) if "loss" in r]
    assert logged == [6, 8, 14, 16]  # crossing 4 and 12, and each epoch's end
    assert checkpoint.committed_steps(tmp_path / "checkpoints") == [8, 16]
    for name in ("cross_correlation", "embeddings"):
        assert (tmp_path / f"{name}.npz").is_file() and (tmp_path / f"{name}.png").is_file()


@pytest.mark.slow
def test_finetuning_traces_once_and_resumes_exactly(tmp_path, traces, monkeypatch):
    """ceil(546 / 128) = 5 steps per epoch in chunks of 2, 2, 1 (padded to 2), 2 epochs; a
    run stopped after its first checkpoint resumes to the same results."""
    config = finetune.get_config("breastmnist")
    config.model.width = 4
    config.data.label_fraction = 0.1
    config.train.update(batch_size=128, epochs=2, steps_per_dispatch=2)
    config.eval.batch_size = 128
    config.checkpoint.every_epochs = 1
    config.log.progress = False
    whole = evaluate.run(config, tmp_path / "whole")
    assert traces == [((2, 128, 28, 28, 1), (2, 128), (2, 128))]  # images, labels, mask
    original_save = checkpoint.Checkpointer.save

    def save_then_stop(self, step, state):
        original_save(self, step, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(config, tmp_path / "resumed")
    monkeypatch.setattr(checkpoint.Checkpointer, "save", original_save)
    traces.clear()
    resumed = evaluate.run(config, tmp_path / "resumed")
    assert len(traces) == 1
    for key in ("val", "test", "best_epoch", "selection", "steps"):
        assert resumed[key] == whole[key], key
    records = [json.loads(line) for line in (tmp_path / "resumed/metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2]

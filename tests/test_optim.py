"""LARS against a NumPy transcription of the Barlow Twins reference, masks on real Flax
parameters, schedules, learning-rate scaling, and the optimiser registry."""

import pathlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from ml_collections import config_flags

from configs.base import get_config
from ssljax import methods, optim, validation


class TinyNet(nn.Module):
    """Conv + BatchNorm + Dense: kernels, biases and BN parameters of a real encoder."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def flax_params():
    variables = TinyNet().init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
    return variables["params"]


def train_config(**overrides) -> ml_collections.ConfigDict:
    cfg = get_config().train
    cfg.update(overrides)
    return cfg


def plan(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optim.StepPlan:
    return optim.StepPlan.from_steps_per_epoch(cfg, steps_per_epoch)


def test_mask_excludes_every_1d_param_and_adapts_kernels(flax_params):
    mask = optim.exclude_bias_and_norm(flax_params)
    chex.assert_trees_all_equal_structs(mask, flax_params)
    pairs = list(zip(jax.tree.leaves(flax_params), jax.tree.leaves(mask), strict=True))
    assert all(keep == (p.ndim > 1) for p, keep in pairs)
    assert sum(keep for _, keep in pairs) == 2  # conv and dense kernels
    assert sum(not keep for _, keep in pairs) == 4  # conv/dense bias, BN scale/bias

    # First LARS step (empty momentum): 1-D params move by -lr * g exactly, kernels by a
    # step of norm lr * eta * ||p||, whatever the gradient's size.
    lr, eta = 0.5, 0.001
    tx = optim.lars(lr, weight_decay=1e-4, trust_coefficient=eta)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), flax_params)
    updates, _ = tx.update(grads, tx.init(flax_params), flax_params)
    for p, g, u in zip(*map(jax.tree.leaves, (flax_params, grads, updates)), strict=True):
        if p.ndim == 1:
            np.testing.assert_allclose(u, -lr * g, rtol=1e-6)
        else:
            np.testing.assert_allclose(jnp.linalg.norm(u), lr * eta * jnp.linalg.norm(p), rtol=1e-5)


def reference_lars(params, grads_per_step, lrs, wd, momentum, eta, bias_factor):
    """The facebookresearch/barlowtwins LARS step in float64 NumPy, one param at a time."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        for name, p in params.items():
            dp = np.asarray(grads[name], np.float64)
            if p.ndim > 1:
                dp = dp + wd * p
                param_norm, update_norm = np.linalg.norm(p), np.linalg.norm(dp)
                ratio = eta * param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1
                dp = dp * ratio
            mu[name] = momentum * mu[name] + dp
            params[name] = p - (lr if p.ndim > 1 else lr * bias_factor) * mu[name]
    return params


def test_lars_matches_reference_over_steps_with_changing_lr():
    rng = np.random.default_rng(0)
    params = {
        "conv_kernel": rng.normal(size=(3, 3, 2, 4)),
        "dense_kernel": np.zeros((5, 3)),  # zero norm: trust ratio falls back to 1
        "dense_bias": rng.normal(size=3),
        "bn_scale": 1.0 + 0.1 * rng.normal(size=4),
    }
    params = {k: v.astype(np.float32) for k, v in params.items()}
    grads_per_step = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        for _ in range(3)
    ]
    lrs = [0.2, 0.5, 0.1]
    hyper = {"weight_decay": 1.5e-6, "momentum": 0.9, "trust_coefficient": 0.001}
    tx = optim.lars(lambda count: jnp.asarray(lrs)[count], **hyper, bias_lr_factor=0.024)
    state, current = tx.init(params), params
    for grads in grads_per_step:
        updates, state = jax.jit(tx.update)(grads, state, current)
        current = optax.apply_updates(current, updates)
    expected = reference_lars(params, grads_per_step, lrs, hyper["weight_decay"], 0.9, 0.001, 0.024)
    chex.assert_trees_all_close(current, expected, rtol=1e-5, atol=1e-7)

    # optax.lars applies the rate before the momentum: the same at a constant rate only.
    mask = optim.exclude_bias_and_norm

    def run(tx):
        state, current = tx.init(params), params
        for grads in grads_per_step:
            updates, state = tx.update(grads, state, current)
            current = optax.apply_updates(current, updates)
        return current

    def optax_lars(lr):
        return optax.lars(
            lr,
            hyper["weight_decay"],
            weight_decay_mask=mask,
            trust_ratio_mask=mask,
            trust_coefficient=0.001,
            momentum=0.9,
        )

    chex.assert_trees_all_close(run(optim.lars(0.3, **hyper)), run(optax_lars(0.3)), rtol=1e-5)
    changing = lambda count: jnp.asarray(lrs)[count]  # noqa: E731
    diff = jax.tree.map(
        lambda a, b: np.abs(a - b).max(),
        run(optim.lars(changing, **hyper)),
        run(optax_lars(changing)),
    )
    assert max(jax.tree.leaves(diff)) > 1e-4


@pytest.mark.parametrize(
    ("optimizer", "batch_size", "expected"),
    [("lars", 512, 0.4), ("sgd", 64, 0.05), ("adam", 512, 0.2), ("adamw", 64, 0.2)],
)
def test_scaled_learning_rate(optimizer, batch_size, expected):
    assert optim.scaled_learning_rate(0.2, batch_size, optimizer) == pytest.approx(expected)


def test_cosine_schedule_values():
    # 10 epochs of 5 steps, 2 warmup epochs: warmup ends at step 10, cosine over 40 steps.
    cfg = train_config(base_lr=0.2, batch_size=512, epochs=10, warmup_epochs=2)
    schedule = optim.learning_rate_schedule(cfg, plan(cfg, 5))
    steps = jnp.array([0, 5, 10, 30, 50, 60], jnp.int32)
    values = jax.jit(jax.vmap(schedule))(steps)
    chex.assert_type(values, jnp.float32)
    np.testing.assert_allclose(values, [0.0, 0.2, 0.4, 0.2, 0.0, 0.0], atol=1e-7)
    assert float(schedule(11)) < 0.4
    assert float(schedule(9)) < float(schedule(10))


def test_step_and_constant_schedules():
    cfg = train_config(base_lr=0.2, batch_size=256, epochs=10, warmup_epochs=1)
    cfg.schedule, cfg.decay_epochs = "step", (4, 8)
    step = optim.learning_rate_schedule(cfg, plan(cfg, 5))
    got = [float(step(s)) for s in (5, 19, 20, 39, 40, 49)]
    np.testing.assert_allclose(got, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)
    cfg.schedule = "constant"
    constant = optim.learning_rate_schedule(cfg, plan(cfg, 5))
    np.testing.assert_allclose([float(constant(s)) for s in (0, 4, 5, 49)], [0, 0.16, 0.2, 0.2])


@pytest.mark.parametrize("optimizer", sorted(optim.OPTIMIZERS))
def test_make_optimizer_decays_kernels_only(optimizer, flax_params):
    cfg = train_config(optimizer=optimizer, warmup_epochs=0, epochs=2, weight_decay=0.1)
    tx, schedule = optim.make_optimizer(cfg, plan(cfg, 3))
    assert float(schedule(0)) > 0
    zero_grads = jax.tree.map(jnp.zeros_like, flax_params)
    updates, _ = jax.jit(tx.update)(zero_grads, tx.init(flax_params), flax_params)
    for p, u in zip(jax.tree.leaves(flax_params), jax.tree.leaves(updates), strict=True):
        chex.assert_tree_all_finite(u)
        if p.ndim == 1:
            assert not np.any(u), "biases and BatchNorm parameters must not be decayed"
        else:
            assert np.any(u), "kernels must be decayed"


def test_unknown_optimizer_lists_valid_ones():
    cfg = train_config(optimizer="rmsprop")
    with pytest.raises(ValueError, match="rmsprop.*adam, adamw, lars, sgd"):
        optim.make_optimizer(cfg, plan(cfg, 10))
    with pytest.raises(ValueError, match="rmsprop"):
        optim.scaled_learning_rate(0.1, 256, "rmsprop")


@pytest.mark.parametrize(
    ("overrides", "steps_per_epoch", "match"),
    [
        ({}, 0, "steps_per_epoch"),
        ({"warmup_epochs": 20, "epochs": 10}, 5, "warmup_epochs"),
        ({"schedule": "linear"}, 5, "constant, cosine, step"),
        ({"schedule": "step", "decay_epochs": (80, 50)}, 5, "decay_epochs"),
        ({"batch_size": 0}, 5, "batch_size"),
        ({"epochs": 0, "warmup_epochs": 0}, 5, "epochs"),
    ],
)
def test_bad_schedule_settings_are_rejected(overrides, steps_per_epoch, match):
    with pytest.raises(ValueError, match=match):
        cfg = train_config(**overrides)
        optim.learning_rate_schedule(cfg, plan(cfg, steps_per_epoch))


def reference_clipped_lars(params, grads_per_step, lrs, wd, momentum, eta):
    """solo-learn's LARS with clip_lr (solo/utils/lars.py) in float64 NumPy, our norm of
    g + wd * p in the trust ratio; 1-D params excluded from decay and adaptation."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        for name, p in params.items():
            dp = np.asarray(grads[name], np.float64)
            if p.ndim > 1:
                dp = dp + wd * p
                p_norm, u_norm = np.linalg.norm(p), np.linalg.norm(dp)
                if p_norm > 0 and u_norm > 0:
                    lars_lr = eta * p_norm / u_norm
                    dp = dp * (min(lars_lr / lr, 1.0) if lr > 0 else 1.0)
            buf[name] = momentum * buf[name] + dp
            params[name] = p - lr * buf[name]
    return params


def test_clipped_lars_matches_solo_learn_reference():
    rng = np.random.default_rng(3)
    params = {"kernel": rng.normal(size=(3, 3, 2, 4)), "big_grad": rng.normal(size=(4, 4))}
    params["scale"] = rng.normal(size=4)
    # Small gradients: eta * ||p|| / ||g|| > lr, so the clip binds; large: it does not.
    grads_per_step = [
        {
            "kernel": 1e-3 * rng.normal(size=(3, 3, 2, 4)),
            "big_grad": 50.0 * rng.normal(size=(4, 4)),
            "scale": rng.normal(size=4),
        }
        for _ in range(4)
    ]
    lrs = [0.0, 0.1, 0.3, 0.2]  # warmup from 0, then a changing rate
    tx = optim.lars(
        lambda count: jnp.asarray(lrs)[count],
        weight_decay=1e-4,
        momentum=0.9,
        trust_coefficient=0.02,
        clip_lr=True,
    )
    p = jax.tree.map(jnp.asarray, params)
    p = jax.tree.map(lambda x: x.astype(jnp.float32), p)
    state = tx.init(p)
    for grads in grads_per_step:
        g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads)
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    expected = reference_clipped_lars(params, grads_per_step, lrs, 1e-4, 0.9, 0.02)
    for name in params:
        np.testing.assert_allclose(p[name], expected[name], rtol=2e-5, atol=1e-7)
    # The clip is what bound the kernel: unclipped, it moves much further.
    unclipped = reference_lars(params, grads_per_step, lrs, 1e-4, 0.9, 0.02, 1.0)
    assert np.linalg.norm(unclipped["kernel"] - params["kernel"]) > 10 * np.linalg.norm(
        expected["kernel"] - params["kernel"]
    )


@pytest.mark.parametrize("epochs", [3, 5, 100])
def test_schedule_follows_the_runs_length_unless_set(epochs):
    cfg = train_config(base_lr=0.1, batch_size=256, epochs=epochs, warmup_epochs=None)
    cfg.schedule, cfg.decay_epochs = "step", None
    cfg.warmup_fraction, cfg.decay_fractions = 0.1, (0.5, 0.75)
    warmup, decay = optim.schedule_epochs(cfg)
    assert warmup == pytest.approx(0.1 * epochs)
    assert decay == pytest.approx((0.5 * epochs, 0.75 * epochs))
    schedule = optim.learning_rate_schedule(cfg, plan(cfg, 10))
    assert float(schedule(10 * epochs - 1)) == pytest.approx(0.1 * 0.01, rel=1e-5)
    cfg.warmup_epochs, cfg.decay_epochs = 0.0, (1, 2)  # set by the user: exactly that
    assert optim.schedule_epochs(cfg) == (0.0, (1, 2))


CONFIG_FILES = sorted(
    p for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py") if p.stem != "__init__"
)


@pytest.mark.parametrize("epochs", [1, 2, 5])
@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_epochs_alone_gives_every_config_a_schedule(path, epochs):
    """`--config.train.epochs=N` alone: the config validates and its plan, on BreastMNIST's
    546 train images, warms up and decays within the run (pretraining's 10% warmup of a
    1-epoch run included)."""
    module = config_flags.config_flags._LoadConfigModule(f"cfg_{path.stem}", str(path))
    config = module.get_config()
    config.train.epochs = epochs
    validation.validate(config)
    drop_last = config.method in methods.METHODS
    plan = optim.step_plan(config.train, 546, drop_last=drop_last)
    assert plan.steps_per_epoch == (
        546 // config.train.batch_size if drop_last else -(-546 // config.train.batch_size)
    )
    assert plan.total_steps == epochs * plan.steps_per_epoch
    assert 0 <= plan.warmup_steps <= plan.total_steps
    assert all(plan.warmup_steps <= d <= plan.total_steps for d in plan.decay_steps)
    tx, schedule = optim.make_optimizer(config.train, plan)
    assert float(schedule(plan.total_steps - 1)) >= 0 and tx is not None


def test_step_plan_rounds_by_the_batches_rule():
    cfg = train_config(batch_size=128, epochs=3, warmup_epochs=None, decay_epochs=None)
    cfg.warmup_fraction, cfg.decay_fractions = 0.1, (0.5, 0.75)
    dropped, streamed = optim.step_plan(cfg, 546), optim.step_plan(cfg, 546, drop_last=False)
    assert (dropped.steps_per_epoch, streamed.steps_per_epoch) == (4, 5)
    assert streamed == optim.StepPlan(5, 15, 2, (8, 11))  # round(0.3 * 5), round(7.5), ...
    assert streamed.epoch(9) == 1 and streamed.epoch(10) == 2
    cfg.warmup_epochs, cfg.decay_epochs = 1.0, (2, 3)  # set by the user: exactly that
    assert optim.step_plan(cfg, 546, drop_last=False) == optim.StepPlan(5, 15, 5, (10, 15))


def test_impossible_explicit_schedule_is_a_config_error():
    module = config_flags.config_flags._LoadConfigModule(
        "cfg_finetune", str(CONFIG_FILES[0].parent / "finetune.py")
    )
    config = module.get_config()
    config.train.epochs, config.train.decay_epochs = 5, (50, 75)
    with pytest.raises(validation.ConfigError, match=r"train\.decay_epochs.*\(50, 75\)"):
        validation.validate(config)


def _warmup_steps(trust_on: str, steps: int = 11):
    """Relative step sizes ||dp|| / ||p|| and lr * ||m|| / ||p|| of a kernel over the first
    `steps` steps of a linear warmup from 0 with momentum 0.9, under gradients 10x the
    parameter's norm (Barlow Twins' ratio at initialisation)."""
    rng = np.random.default_rng(0)
    eta, warmup, peak = 0.02, 36, 0.15
    schedule = lambda count: peak * jnp.asarray(count, jnp.float32) / warmup  # noqa: E731
    tx = optim.lars(
        schedule, weight_decay=1e-4, momentum=0.9, trust_coefficient=eta, clip_lr=True,
        trust_on=trust_on,
    )  # fmt: skip
    p = {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)}
    state, rel = tx.init(p), []
    for _ in range(steps):
        g = jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)
        g = {"kernel": g * 10 * jnp.linalg.norm(p["kernel"]) / jnp.linalg.norm(g)}
        updates, state = tx.update(g, state, p)
        rel.append(float(jnp.linalg.norm(updates["kernel"]) / jnp.linalg.norm(p["kernel"])))
        p = optax.apply_updates(p, updates)
    return np.array(rel), eta


def test_lars_clip_on_the_update_bounds_every_step_of_a_warmup_with_momentum():
    """With trust_on='update' no step moves a kernel by more than eta x its norm, step 0
    (rate 0) included; with the references' order the momentum buffer keeps gradients
    scaled for earlier, smaller rates, and the steps of the warmup break that bound."""
    rel, eta = _warmup_steps("update")
    assert rel[0] == 0.0  # the rate is 0 at step 0: nothing moves
    assert np.all(rel <= eta * (1 + 1e-5)), rel
    assert rel[-1] > 0.5 * eta  # and the bound is reached, not just respected
    rel_ref, _ = _warmup_steps("gradient")
    assert rel_ref.max() > 2 * eta, rel_ref


def test_unknown_trust_placement_is_rejected():
    with pytest.raises(ValueError, match="train.trust_on"):
        optim.lars(0.1, weight_decay=0.0, trust_on="weights")

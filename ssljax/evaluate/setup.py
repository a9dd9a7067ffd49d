"""What every protocol needs before it scores: the encoder, its starting variables, the label
budget checks, and the validation subset of a realistic low-label study."""

import hashlib
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssljax import checkpoint, methods, models, steps, writers
from ssljax.data import Dataset, registry, subsets
from ssljax.errors import ConfigError, DataError


def classification_loss(task: str):
    """(logits float32 [B, C], labels int32 [B] or [B, L]) -> per-example loss float32 [B]."""
    if task == registry.MULTI_LABEL:
        return lambda logits, labels: optax.sigmoid_binary_cross_entropy(
            logits, labels.astype(jnp.float32)
        ).mean(-1)
    return optax.softmax_cross_entropy_with_integer_labels


def build_encoder(config: ml_collections.ConfigDict, image_size: int) -> models.ResNet:
    m = config.model
    return models.make_encoder(m.name, m.width, m.stem, image_size, m.dtype, m.zero_init_residual)


def check_labelled(data: Dataset, method: str) -> None:
    """DataError for a dataset without labels (an image folder without any), before work."""
    if data.task == registry.UNLABELLED:
        raise DataError(
            f"{data.name} has no labels (data.folder without class subfolders or data.labels), "
            f"so it can be pretrained on but not evaluated by {method}: put each class's "
            "images in a subfolder named after it, or give config.data.labels=labels.csv"
        )


def check_classes(data: Dataset, labelled: np.ndarray) -> None:
    """Raises before training when a class (a label, for multi-label tasks) cannot be learned
    or scored: a single-label class needs examples in the labelled train subset, val and test;
    a multi-label label needs positives and negatives in val and test (AUC needs both).

    Args:
      labelled: int64 [M], indices of the labelled train subset.
    """
    names = data.label_names
    if data.task == registry.MULTI_LABEL:
        splits = (("val", data.val.labels), ("test", data.test.labels))
        for split, y in splits:
            positives = np.asarray(y).sum(axis=0)
            for i in np.flatnonzero((positives == 0) | (positives == len(y))):
                kind = "no positive" if positives[i] == 0 else "no negative"
                raise DataError(
                    f"{data.name}: label {i} ({names[i]!r}) has {kind} example in the {split} "
                    "split, so its AUC is undefined. Every label needs both in val and test; "
                    "fix or drop that label in the data file."
                )
        return
    splits = (
        ("labelled train subset", data.train.labels[labelled]),
        ("val", data.val.labels),
        ("test", data.test.labels),
    )
    for split, y in splits:
        counts = np.bincount(np.asarray(y).reshape(-1), minlength=len(names))
        empty = [f"{i} ({names[i]!r})" for i in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(
                f"{data.name}: class {', '.join(empty)} has no examples in the {split}. Every "
                "class needs examples in train, val and test; fix or drop that class in the "
                "data file."
            )


def load_init(
    config: ml_collections.ConfigDict, encoder: models.ResNet, image_shape: tuple
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The pretrained encoder variables named by config.init.workdir (None: random init).

    Args:
      image_shape: (H, W, C) of the images the encoder will see.
    Returns:
      (variables {'params', 'batch_stats'} or None, a description for results.json).
    Raises:
      ConfigError: the folder holds no encoder export, or its architecture, width or input
        channels differ from the config.
    """
    source = config.init.workdir
    if not source:
        return None, {"workdir": "", "kind": methods.RANDOM}
    source = pathlib.Path(source).expanduser()
    variables = checkpoint.load_encoder(source)
    expected = jax.eval_shape(
        lambda: encoder.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False)
    )
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)  # noqa: E731
    init_config = checkpoint.run_config_file(source)
    theirs = writers.read_config(init_config.parent) if init_config else None
    if shapes(variables) != shapes(dict(expected)):
        used = ""
        if theirs is not None:
            used = (
                f" The pretraining run used model.name={theirs['model']['name']}, "
                f"model.width={theirs['model']['width']} on {registry.own_name(theirs['data'])} "
                f"({theirs['data']['size']} px)."
            )
        raise ConfigError(
            f"the encoder in {source} does not match this config (model.name="
            f"{config.model.name}, model.width={config.model.width}, {image_shape[-1]} input "
            f"channel(s), {image_shape[0]} px).{used} Set model.name and model.width as the "
            "pretraining run did, on a dataset with the same number of channels."
        )
    transfer = config.init.transfer
    info = {"workdir": str(source), "kind": "pretrained", "transfer": transfer}
    if theirs is not None:
        info["config_sha256"] = hashlib.sha256(init_config.read_bytes()).hexdigest()
        # The ablation is its own arm in tables: 'barlow_twins:bn'.
        info["method"] = methods.arm(theirs["method"], transfer)
    return variables, info


def transfer(pretrained: dict[str, Any], random: dict[str, Any], how: str) -> dict[str, Any]:
    """The encoder variables a run starts from, given `init.transfer`.

    'all' keeps every pretrained variable; 'batchnorm' keeps the pretrained BatchNorm scales
    and biases (and statistics, which scoring re-estimates anyway) on the random kernels of
    `random` (leaves with ndim > 1): the ablation "random convolutions + pretrained BatchNorm".
    Traceable (used inside jit).
    """
    if how == "all":
        return pretrained
    params = jax.tree.map(
        lambda p, r: r if jnp.ndim(p) > 1 else p, pretrained["params"], random["params"]
    )
    return {"params": params, "batch_stats": pretrained["batch_stats"]}


def frozen_variables(
    config: ml_collections.ConfigDict,
    encoder: models.ResNet,
    init_vars: dict[str, Any] | None,
    image_shape: tuple,
) -> dict[str, Any]:
    """The frozen encoder's variables: pretrained (after `transfer`), or the seed's random init."""
    # Jitted: an eager init dispatches (and on CPU compiles) every initialiser op alone.
    init = jax.jit(lambda key: encoder.init(key, jnp.zeros((1, *image_shape)), train=False))
    random = init(steps.derive_keys(config.seed)[0])
    if init_vars is None:
        return random
    return transfer(init_vars, random, config.init.transfer)


def val_subset(data: Dataset, config: ml_collections.ConfigDict) -> np.ndarray:
    """Indices int64 [V'] of the low-label validation set: the val split subsampled as the
    labelled train subset is (same fraction or count per class, stratified, seeded).

    A study with 1% of the labels rarely has the full val split in practice; selecting the
    epoch or L2 strength on this subset shows what a realistic selection costs.
    """
    return subsets.subset_from_config(data.val.labels, data.task, config.data, config.seed + 7919)

"""Self-supervised losses: Barlow Twins and SimCLR's NT-Xent.

Both are pure functions of the two views' embeddings over the *global* batch. Under `jax.jit`
with the batch sharded over a `('data',)` mesh, the batch reductions and the matmuls become
cross-device collectives, which is what SyncBN and the all-gathers of the reference
implementations do: a multi-device run gives the same loss as a single-device run on the same
batch. Build the mesh with Auto axis types (`jax.make_mesh(..., axis_types=(AxisType.Auto,))`):
under Explicit axis types the cross-correlation matmul, which contracts the sharded batch
axis, is rejected.

Inputs of a lower precision (bfloat16 from a mixed-precision projector) are upcast: the losses
compute in float32, or in float64 when given float64 (used by the finite-difference tests).
"""

import jax
import jax.numpy as jnp

# BatchNorm1d(affine=False)'s eps, which the Barlow Twins reference uses to standardise.
_STANDARDISE_EPS = 1e-5
# torch.nn.functional.normalize's eps: keeps an all-zero embedding from producing NaNs.
_NORMALISE_EPS = 1e-12

Aux = dict[str, jax.Array]


def _as_float(z: jax.Array, name: str) -> jax.Array:
    """z: any real dtype [B, D] -> at least float32 [B, D]."""
    z = jnp.asarray(z)
    if z.ndim != 2:
        raise ValueError(f"{name} must be [batch, dim], got shape {z.shape}")
    return z.astype(jnp.promote_types(z.dtype, jnp.float32))


def _check_pair(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
    z1, z2 = _as_float(z1, "z1"), _as_float(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"the two views must have the same shape, got {z1.shape} and {z2.shape}")
    if z1.shape[0] < 2:
        raise ValueError(f"the losses need a batch of at least 2 examples, got {z1.shape[0]}")
    dtype = jnp.promote_types(z1.dtype, z2.dtype)
    return z1.astype(dtype), z2.astype(dtype)


def _standardise(z: jax.Array) -> jax.Array:
    """z: float [B, D] -> zero mean, unit (biased) variance per dimension over the batch."""
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    return (z - mean) * jax.lax.rsqrt(var + _STANDARDISE_EPS)


def barlow_twins_loss(
    z1: jax.Array,
    z2: jax.Array,
    lambd: float = 0.0051,
    *,
    scale: float = 1.0,
    has_aux: bool = False,
) -> jax.Array | tuple[jax.Array, Aux]:
    """Barlow Twins redundancy-reduction loss (Zbontar et al., 2021).

    Each view is standardised over the batch with the biased variance and eps = 1e-5 inside
    the square root (as BatchNorm1d(affine=False) in the reference); then
    `c = z1n.T @ z2n / B` and the loss is
    `scale * (sum((1 - diag c)^2) + lambd * sum(offdiag c^2))`.

    Args:
      z1, z2: float [B, D], the projector outputs of the two views (global batch, B >= 2).
      lambd: weight of the off-diagonal (redundancy) term.
      scale: multiplies the loss, and so its gradients (solo-learn's `scale_loss`, 0.1 in
        its CIFAR recipe); the aux terms are not scaled.
      has_aux: also return logging statistics.

    Returns:
      loss: float32 [] (float64 for float64 inputs). With `has_aux`, `(loss, aux)` where aux
      holds float32 scalars: `on_diag` (the invariance term), `off_diag` (the redundancy
      term, before `lambd`), `corr_diag_mean` (mean of diag c; 1 is perfect invariance),
      `corr_offdiag_sq_mean` (mean squared off-diagonal entry of c), `embedding_std`
      (per-dimension std of the raw embeddings averaged over dimensions and both views; a
      value near 0 warns of collapse), and `grad_norm/invariance` / `grad_norm/redundancy`:
      the norm of each weighted term's gradient with respect to (z1, z2), which says which
      term drives the projector.
    """
    z1, z2 = _check_pair(z1, z2)
    on_diag, off_diag, diag = _barlow_terms(z1, z2)
    loss = scale * (on_diag + lambd * off_diag)
    if not has_aux:
        return loss
    dim = z1.shape[1]
    embedding_std = 0.5 * (jnp.mean(jnp.std(z1, axis=0)) + jnp.mean(jnp.std(z2, axis=0)))
    zs = jax.lax.stop_gradient((z1, z2))
    term_grad = lambda i, w: _tree_norm(jax.grad(lambda z: w * _barlow_terms(*z)[i])(zs))  # noqa: E731
    aux = {
        "on_diag": on_diag,
        "off_diag": off_diag,
        "embedding_std": embedding_std,
        "corr_diag_mean": jnp.mean(diag),
        "corr_offdiag_sq_mean": off_diag / (dim * (dim - 1)),
        "grad_norm/invariance": term_grad(0, scale),
        "grad_norm/redundancy": term_grad(1, scale * lambd),
    }
    return loss, {k: v.astype(jnp.float32) for k, v in aux.items()}


def _barlow_terms(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(invariance term [], redundancy term before lambd [], diag of c [D]) of two views."""
    batch, dim = z1.shape
    c = _standardise(z1).T @ _standardise(z2) / batch
    diag = jnp.diagonal(c)
    on_diag = jnp.sum(jnp.square(1.0 - diag))
    off_diag = jnp.sum(jnp.square(jnp.where(jnp.eye(dim, dtype=bool), 0.0, c)))
    return on_diag, off_diag, diag


def _tree_norm(tree) -> jax.Array:
    """The global L2 norm of a pytree of arrays."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def nt_xent_loss(
    z1: jax.Array, z2: jax.Array, temperature: float = 0.1, *, has_aux: bool = False
) -> jax.Array | tuple[jax.Array, Aux]:
    """SimCLR's normalised temperature-scaled cross-entropy (Chen et al., 2020).

    The 2B embeddings are L2-normalised; the logits are their cosine similarities divided by
    `temperature`, with each embedding's similarity to itself masked out. Anchor i's positive
    is the other view of the same example; the loss is the softmax cross-entropy of the
    positive against all 2B - 1 others, averaged over the 2B anchors.

    Args:
      z1, z2: float [B, D], the projector outputs of the two views (global batch, B >= 2).
      temperature: softmax temperature, > 0.
      has_aux: also return logging statistics.

    Returns:
      loss: float32 [] (float64 for float64 inputs). With `has_aux`, `(loss, aux)` where aux
      holds float32 scalars: `pos_logit_mean` and `neg_logit_mean` (mean positive and
      negative logits, i.e. cosine / temperature) and `contrastive_acc` (fraction of anchors
      whose positive has the largest logit).
    """
    if isinstance(temperature, int | float) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z1, z2 = _check_pair(z1, z2)
    batch = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0)
    sq_norm = jnp.sum(jnp.square(z), axis=1, keepdims=True)
    z = z * jax.lax.rsqrt(jnp.maximum(sq_norm, _NORMALISE_EPS**2))
    logits = z @ z.T / temperature
    n = 2 * batch
    self_mask = jnp.eye(n, dtype=bool)
    # -inf drops self-similarity from the softmax; `where` keeps its gradient at exactly 0.
    masked = jnp.where(self_mask, -jnp.inf, logits)
    positive = (jnp.arange(n) + batch) % n
    pos_logits = jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
    loss = jnp.mean(jax.nn.logsumexp(masked, axis=1) - pos_logits)
    if not has_aux:
        return loss
    neg_mask = ~self_mask & ~jax.nn.one_hot(positive, n, dtype=bool)
    aux = {
        "pos_logit_mean": jnp.mean(pos_logits),
        "neg_logit_mean": jnp.sum(jnp.where(neg_mask, logits, 0.0)) / (n * (n - 2)),
        "contrastive_acc": jnp.mean(jnp.argmax(masked, axis=1) == positive),
    }
    return loss, {k: v.astype(jnp.float32) for k, v in aux.items()}

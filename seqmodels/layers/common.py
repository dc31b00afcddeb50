"""Small parts shared by several mixers.

``Dense`` keeps its parameters in float32 and computes in the activation dtype, which
is the mixed-precision policy of the library: bfloat16 activations run bfloat16
matmuls against float32 master weights, and scans accumulate in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def expand_to(x: jax.Array, ndim: int) -> jax.Array:
    """Left-pad ``x``'s shape with 1s to rank ``ndim`` (explicit broadcasting)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


class Dense(nnx.Module):
    """``y = x @ W + b`` over the last axis; float32 parameters, activation-dtype compute.
    ``b`` is zeros unless ``bias_init`` (an ``nnx.initializers`` function) is given."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init=nnx.initializers.lecun_normal(), bias_init=None, rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
        if not use_bias:
            self.bias = None
        elif bias_init is None:  # zeros draw no key: a default Dense leaves later layers' init unchanged
            self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        else:
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.matmul(x, self.kernel[...].astype(x.dtype))
        if self.bias is not None:
            y = y + expand_to(self.bias[...].astype(x.dtype), y.ndim)
        return y


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask`` (broadcastable, same rank).

    Masked entries get exactly 0, so adding masked keys never changes a row; a row with
    no allowed entry gives all zeros (not NaN), in value and in gradient.
    """
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    weights = jnp.where(mask, jnp.exp(logits - top), 0.0)
    return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), jnp.finfo(weights.dtype).tiny)


def local_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, window: int, causal: bool,
                    segment_ids: jax.Array | None = None, scale: float | None = None) -> jax.Array:
    """Banded (sliding-window) softmax attention, optionally within segments.

    Query ``t`` sees the keys ``s`` with ``t - window < s ≤ t`` (``causal``) or
    ``|s - t| < window`` (not causal) and, when ``segment_ids`` is given, only keys of
    its own segment (``segment_ids[s] == segment_ids[t]``).

    Args:
      q, k, v: ``(batch, length, heads, head_dim)``.
      window: band width (≥ 1); a window ≥ length is full (causal) attention.
      segment_ids: optional ``(batch, length, heads)`` integers, per head.
      scale: logit scale, ``1/√head_dim`` by default.

    Returns ``(batch, length, heads, head_dim)`` in ``q.dtype``. Queries are cut into
    blocks of ``b = min(window, length)`` and each block attends to itself and its
    neighbour block(s): cost ``O(length · window · head_dim)``, never a length × length
    matrix. Logits and softmax are float32.
    """
    if window < 1:
        raise ValueError(f"window must be ≥ 1; got {window}")
    batch, length, heads, head_dim = q.shape
    scale = 1.0 / float(head_dim) ** 0.5 if scale is None else scale
    block = min(window, length)
    num_blocks = -(-length // block)
    pad = num_blocks * block - length

    def to_blocks(x):  # (B, L, ...) -> (B, n, b, ...)
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape((batch, num_blocks, block) + x.shape[2:])

    def with_neighbours(xb):  # (B, n, b, ...) -> (B, n, span·b, ...): previous, own[, next]
        padded = jnp.pad(xb, [(0, 0), (1, 1)] + [(0, 0)] * (xb.ndim - 2))
        parts = [padded[:, :-2], xb] + ([] if causal else [padded[:, 2:]])
        return jnp.concatenate(parts, axis=2)

    query_pos = jnp.arange(num_blocks * block).reshape(num_blocks, block)
    offsets = jnp.arange(-block, (1 if causal else 2) * block)
    key_pos = (jnp.arange(num_blocks) * block)[:, None] + offsets[None, :]           # (n, keys)
    rel = key_pos[:, None, :] - query_pos[:, :, None]                                  # (n, b, keys)
    allowed = (rel > -window) & ((rel <= 0) if causal else (rel < window))
    allowed = allowed & ((key_pos >= 0) & (key_pos < length))[:, None, :]
    mask = allowed[None, :, None]                                                      # (1, n, 1, b, keys)
    if segment_ids is not None:
        seg_q = jnp.swapaxes(to_blocks(segment_ids), 2, 3)                             # (B, n, H, b)
        seg_k = jnp.swapaxes(with_neighbours(to_blocks(segment_ids)), 2, 3)            # (B, n, H, keys)
        mask = mask & (seg_q[..., :, None] == seg_k[..., None, :])

    logits = jnp.einsum("bnqhd,bnkhd->bnhqk", to_blocks(q), with_neighbours(to_blocks(k)),
                        preferred_element_type=jnp.float32) * scale
    weights = masked_softmax(logits, mask)
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights.astype(v.dtype), with_neighbours(to_blocks(v)),
                     preferred_element_type=jnp.float32)
    return out.reshape(batch, num_blocks * block, heads, head_dim)[:, :length].astype(q.dtype)


class SSMParam(nnx.Param):
    """A state-space parameter (A/Λ, B, Δ, ...): the training loop gives these their own
    learning rate and no weight decay, as the S4 and S5 papers require.

    A layer marks a parameter by creating it as ``SSMParam(value)`` instead of
    ``nnx.Param(value)``; it is still an ``nnx.Param`` for every other purpose
    (``nnx.state(model, nnx.Param)`` includes it, gradients flow as usual), and the
    optimizer's parameter groups are read off the types once, at set-up.
    """


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming option ``name`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")


def check_positive_int(name: str, value, *, even: bool = False) -> int:
    """Return ``value`` if it is a positive (and, if asked, even) int; else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (even and value % 2):
        raise ValueError(f"{name} must be a positive{' even' if even else ''} int; got {value!r}")
    return value


SSM_OUTPUTS = ("linear", "glu", "none")


class SSMOutput(nnx.Module):
    """Output stage of the state-space layers (S4, S4D, LSSL): skip term, GELU, projection.

    ``y`` holds the SSM outputs ``(..., H, M)`` (``H = d_model`` input channels, ``M``
    output channels per input channel), ``u`` the layer inputs ``(..., H)``:

        z   = GELU(y + D ⊙ u)                                 D: (H, M), y = K * u + D u
        out = W · flatten(z)                                  "linear": W: H·M → d_model
        out = a ⊙ σ(b),  [a, b] = W · flatten(z)              "glu":    W: H·M → 2·d_model
        out = y + D ⊙ u                                       "none":   M = 1, the bare SSM

``"none"`` leaves out the activation and the projection (no ``proj`` parameters), for
users who put the SSM into a block of their own.

    The S4 block ("Efficiently Modeling Long Sequences with Structured State Spaces",
    Gu, Goel, Ré, 2022; state-spaces/s4 ``S4Block``: GELU, then ``Linear(H, 2H)`` + GLU)
    and the LSSL ("Combining Recurrent, Convolutional, and Continuous-time Models with
    Linear State-Space Layers", Gu et al., 2021, §3: ``GELU(K * u + D u)``, then a
    linear layer over the ``H·M`` features). ``D ~ N(0, 1)`` is an ordinary ``nnx.Param``
    (as in both reference implementations). GELU is the exact (erf) form, as in torch.
    Computes in the dtype of ``y``.
    """

    def __init__(self, d_model: int, channels: int = 1, *, output: str = "linear", rngs: nnx.Rngs):
        check_choice("output", output, SSM_OUTPUTS)
        if output == "none" and channels != 1:
            raise ValueError(f"output='none' (the bare SSM) needs one output channel per input channel; "
                             f"got channels={channels}")
        self.output = output
        self.D = nnx.Param(jax.random.normal(rngs.params(), (d_model, channels), jnp.float32))
        width = 2 * d_model if output == "glu" else d_model
        self.proj = None if output == "none" else Dense(d_model * channels, width, rngs=rngs)

    def __call__(self, y: jax.Array, u: jax.Array) -> jax.Array:
        D = expand_to(self.D[...].astype(y.dtype), y.ndim)
        z = y + u.astype(y.dtype)[..., None] * D
        if self.proj is None:
            return z[..., 0]
        z = jax.nn.gelu(z, approximate=False)
        out = self.proj(z.reshape(z.shape[:-2] + (z.shape[-2] * z.shape[-1],)))
        if self.output == "glu":
            a, b = jnp.split(out, 2, axis=-1)
            out = a * jax.nn.sigmoid(b)
        return out


class RMSNorm(nnx.Module):
    """RMSNorm over groups of the last axis, optionally gated: ``RMSNorm(x) · w [· SiLU(gate)]``.

    ``groups`` splits the ``features`` into equal groups normalized separately (a
    per-head norm); the gate multiplies after the norm (``norm_before_gate``, as in
    mamba's ``RMSNormGated`` and fla's ``FusedRMSNormGated``). Statistics in float32;
    returns the dtype of ``x``.
    """

    def __init__(self, features: int, *, groups: int = 1, eps: float = 1e-5):
        if features % groups:
            raise ValueError(f"features={features} must be divisible by groups={groups}")
        self.features, self.groups, self.eps = features, groups, eps
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))

    def __call__(self, x: jax.Array, gate: jax.Array | None = None) -> jax.Array:
        if x.shape[-1] != self.features:
            raise ValueError(f"x must have {self.features} features on its last axis; got shape {x.shape}")
        grouped = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(
            x.shape[:-1] + (self.groups, self.features // self.groups))
        rms = jax.lax.rsqrt(jnp.mean(jnp.square(grouped), axis=-1, keepdims=True) + self.eps)
        y = (grouped * rms).reshape(x.shape) * expand_to(self.scale[...], x.ndim)
        if gate is not None:
            y = y * jax.nn.silu(gate.astype(y.dtype))
        return y.astype(x.dtype)


def depthwise_conv1d(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None, *,
                     causal: bool) -> jax.Array:
    """Depthwise (per-channel) convolution over axis 1 with zero padding, same length out.

    ``causal``: ``y_t = Σ_k w[k] x_{t-K+1+k}`` (left padding ``K-1``: output ``t`` sees
    inputs ``≤ t``). Otherwise the kernel is centred, ``y_t = Σ_k w[k] x_{t+k-(K-1)/2}``
    (``K`` odd; torch's ``Conv1d(groups=C, padding=K // 2)``, cross-correlation), as in
    Hydra's bidirectional short convolution.

    ``x (batch, length, C)``, ``weight (K, C)``, ``bias (C,)``; computes in ``x.dtype``.
    """
    K, length = weight.shape[0], x.shape[1]
    if not causal and K % 2 == 0:
        raise ValueError(f"a non-causal (centred) kernel must have odd size; got {K}")
    left = K - 1 if causal else K // 2
    padded = jnp.pad(x, ((0, 0), (left, K - 1 - left), (0, 0)))
    w = weight.astype(x.dtype)
    y = sum(padded[:, k:k + length] * expand_to(w[k], 3) for k in range(K))
    if bias is not None:
        y = y + expand_to(bias.astype(x.dtype), 3)
    return y


class ShortConv(nnx.Module):
    """Causal depthwise short convolution with a cache for step-by-step decoding.

    ``y_t = Σ_k w[k] x_{t-K+1+k} (+ b)`` per channel (:func:`depthwise_conv1d` with
    ``causal=True``): the short convolution that DeltaNet, DeltaProduct and Mamba put
    on their projections (fla's ``ShortConvolution`` without its activation; the caller
    applies one). The weight ``(K, features)`` is initialized as torch's ``Conv1d``
    (``U(±1/√K)``, fan-in ``K`` per channel); the bias, if any, likewise.

    ``__call__(x)`` runs over a whole sequence ``(batch, length, features)`` from zero
    history. ``step(x_t, cache)`` takes one input ``(batch, features)`` and the cache
    ``(batch, K - 1, features)`` of the last ``K - 1`` inputs (oldest first; zeros at
    the start, :meth:`initial_cache`) and returns ``(y_t, new_cache)``, equal to the
    sequence form token by token. The cache is float32 (an exact copy of bfloat16
    inputs; float64 for float64 inputs); outputs are in the dtype of the input.
    """

    def __init__(self, features: int, kernel_size: int = 4, *, use_bias: bool = False, rngs: nnx.Rngs):
        check_positive_int("features", features)
        check_positive_int("kernel_size", kernel_size)
        self.features, self.kernel_size = features, kernel_size
        bound = 1.0 / kernel_size ** 0.5
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (kernel_size, features), jnp.float32,
                                                   -bound, bound))
        self.bias = (nnx.Param(jax.random.uniform(rngs.params(), (features,), jnp.float32, -bound, bound))
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        if jnp.ndim(x) != 3 or x.shape[-1] != self.features:
            raise ValueError(f"x must have shape (batch, length, {self.features}); got {jnp.shape(x)}")
        bias = None if self.bias is None else self.bias[...]
        return depthwise_conv1d(x, self.weight[...], bias, causal=True)

    def initial_cache(self, batch_size: int) -> jax.Array:
        """Zeros ``(batch_size, K - 1, features)``: no earlier inputs."""
        return jnp.zeros((batch_size, self.kernel_size - 1, self.features), jnp.float32)

    def step(self, x_t: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: ``x_t (batch, features)``, ``cache (batch, K - 1, features)``."""
        if jnp.ndim(x_t) != 2 or x_t.shape[-1] != self.features:
            raise ValueError(f"x_t must have shape (batch, {self.features}); got {jnp.shape(x_t)}")
        expected = (x_t.shape[0], self.kernel_size - 1, self.features)
        if jnp.shape(cache) != expected:
            raise ValueError(f"cache must have shape {expected} (batch, kernel_size - 1, features); "
                             f"got {jnp.shape(cache)}")
        acc = jnp.promote_types(x_t.dtype, jnp.float32)  # a float32 cache holds bfloat16 inputs exactly
        window = jnp.concatenate([cache.astype(acc), x_t[:, None].astype(acc)], axis=1)
        w, inputs = self.weight[...].astype(x_t.dtype), window.astype(x_t.dtype)
        y = sum(inputs[:, k] * expand_to(w[k], 2) for k in range(self.kernel_size))  # the sequence form's order
        if self.bias is not None:
            y = y + expand_to(self.bias[...].astype(x_t.dtype), 2)
        return y, window[:, 1:]

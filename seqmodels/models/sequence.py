"""``SequenceModel``: a pre-norm residual stack around any registered mixer.

    h = embed(inputs)                       token ids (B, L) or features (B, L, input_dim)
    h = h + dropout(mixer(norm(h)))         × n_layers
    h = h + dropout(mlp(norm(h)))
    out = head(norm(h))                     per step (B, L, output_dim) or pooled (B, output_dim)

Causal mixers also run token by token: ``init_state`` / ``step`` give the same
outputs as the parallel forward, which ``generate`` uses for greedy or sampled decoding.

**Token ids** must lie in ``[0, vocab_size)``. Concrete ids (outside ``jit``) are
checked eagerly: an id out of range raises ``ValueError`` naming ``inputs``, the valid
range and the offending minimum and maximum. Under ``jit`` the ids are tracers and a
check cannot raise cheaply, so an out-of-range id (negative ones included) gives NaN
embeddings, hence NaN outputs from its position on and a NaN loss, never the
embedding of another id. To raise under ``jit`` instead, run the computation through
:func:`checked` (``jax.experimental.checkify``)::

    logits = checked(lambda model, tokens: model(tokens))(model, tokens)   # ValueError if out of range
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import checkify

from .. import layers
from ..layers.common import Dense
from ..layers.options import OptionTypeError

POOLINGS = ("none", "mean", "last")
NORMS = ("layer", "rms")
# The bias of an embedding of real-valued inputs starts like a row of a token embedding
# (N(0, 1), ``nnx.Embed``'s scale), not at zero: with a zero bias an all-zero input (blank
# pixels, silence, padding) embeds as the zero vector, stays exactly zero through every
# block (mixers and MLPs map zero to zero at init), and each LayerNorm then sees a
# constant vector, whose Jacobian is 1/sqrt(eps) = 1e3: the first gradients compound
# to ~1e12 over a few blocks (issue 16).
EMBED_BIAS_INIT = nnx.initializers.normal(1.0)


def _norm(kind: str, d_model: int, rngs: nnx.Rngs) -> nnx.Module:
    if kind == "layer":
        return nnx.LayerNorm(d_model, rngs=rngs)
    return nnx.RMSNorm(d_model, rngs=rngs)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionTypeError(f"{name} must be an int; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def check_token_ids(name: str, ids, vocab_size: int) -> None:
    """Token ids must lie in ``[0, vocab_size)``.

    Concrete ids raise ``ValueError`` naming ``name``, the range and the offending
    minimum and maximum. Traced ids (under ``jit``) are checked by
    ``checkify.debug_check``, which raises only inside :func:`checked` and is free
    elsewhere.
    """
    expected = f"token ids in [0, {vocab_size - 1}] (vocab_size={vocab_size})"
    try:
        concrete = np.asarray(ids)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        checkify.debug_check(jnp.all((ids >= 0) & (ids < vocab_size)),
                             f"{name} must be {expected}; got min {{low}} and max {{high}}",
                             low=jnp.min(ids) if ids.size else 0, high=jnp.max(ids) if ids.size else 0)
        return
    if concrete.size and (concrete.min() < 0 or concrete.max() >= vocab_size):
        raise ValueError(f"{name} must be {expected}; got min {concrete.min()} and max {concrete.max()}")


def checked(fn: Callable) -> Callable:
    """``fn`` compiled with ``jax.jit`` under ``checkify``, raising its failed checks.

    The model's checks that cannot raise on traced values (token ids out of
    ``[0, vocab_size)``) raise ``ValueError`` here, with the message an eager call
    gives; without ``checked`` they cost nothing and out-of-range ids give NaN. ``fn``'s
    arguments may be arrays and ``nnx`` modules (which are pytrees); it must return
    arrays (a module it mutates is not written back).
    """
    compiled = jax.jit(checkify.checkify(fn, errors=checkify.user_checks))

    @functools.wraps(fn)
    def run(*args, **kwargs):
        error, out = compiled(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise ValueError(message)
        return out

    return run


def per_layer_options(mixer_options: dict | None, layer_options: Sequence[dict] | None,
                      n_layers: int) -> list[dict]:
    """Each layer's mixer options: ``mixer_options`` updated by ``layer_options[i % len]``.

    ``layer_options`` cycles over the layers, so ``[{"mode": "P"}, {"mode": "D"}]``
    alternates two variants of one mixer (pLSTM's P/D vision blocks); empty or None
    gives every layer ``mixer_options``.
    """
    base, cycle = dict(mixer_options or {}), list(layer_options or [])
    if not all(isinstance(o, dict) for o in cycle):
        raise ValueError(f"layer_options must be a sequence of dicts; got {layer_options!r}")
    return [dict(base, **(cycle[i % len(cycle)] if cycle else {})) for i in range(n_layers)]


class MLP(nnx.Module):
    """``W_2 gelu(W_1 x)`` with hidden width ``ratio · d_model``."""

    def __init__(self, d_model: int, ratio: int, *, rngs: nnx.Rngs):
        self.up = Dense(d_model, ratio * d_model, rngs=rngs)
        self.down = Dense(ratio * d_model, d_model, rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


class Block(nnx.Module):
    """``x + dropout(mixer(norm(x)))`` then ``x + dropout(mlp(norm(x)))``."""

    def __init__(self, mixer: str, d_model: int, *, mixer_options: dict, mlp_ratio: int,
                 dropout: float, norm: str, rngs: nnx.Rngs):
        self.mixer_norm = _norm(norm, d_model, rngs)
        self.mixer = layers.build(mixer, d_model, rngs=rngs, **mixer_options)
        self.mlp_norm = _norm(norm, d_model, rngs)
        self.mlp = MLP(d_model, mlp_ratio, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        x = x + self.dropout(self.mixer(self.mixer_norm(x).astype(x.dtype)))
        return x + self.dropout(self.mlp(self.mlp_norm(x).astype(x.dtype)))

    def step(self, x_t, state):
        y_t, state = self.mixer.step(self.mixer_norm(x_t).astype(x_t.dtype), state)
        x_t = x_t + y_t
        return x_t + self.mlp(self.mlp_norm(x_t).astype(x_t.dtype)), state


class SequenceModel(nnx.Module):
    """A stack of ``n_layers`` blocks around the mixer registered as ``mixer``.

    Args:
      mixer: a name from ``seqmodels.layers.names()``.
      d_model, n_layers: width and depth.
      output_dim: size of the output head (classes, vocabulary, or regression targets).
      vocab_size: token-id inputs ``(B, L)`` when set; otherwise real-valued inputs
        ``(B, L, input_dim)`` (or the mixer's spatial layout) and ``input_dim`` is required.
      pooling: ``"none"`` (per-step outputs), ``"mean"`` over all positions, or ``"last"``.
      dropout: dropout rate after each mixer and MLP (off under ``model.eval()``).
      mixer_options: keyword options passed to the mixer.
      layer_options: per-layer overrides of ``mixer_options``, cycled over the layers
        (``per_layer_options``), e.g. ``[{"mode": "P"}, {"mode": "D"}]``.
      mlp_ratio, norm: MLP width ratio; ``"layer"`` or ``"rms"`` normalization.
    """

    def __init__(self, mixer: str, *, d_model: int, n_layers: int, output_dim: int,
                 vocab_size: int | None = None, input_dim: int | None = None,
                 pooling: str = "none", dropout: float = 0.0, mixer_options: dict | None = None,
                 layer_options: Sequence[dict] | None = None, mlp_ratio: int = 4, norm: str = "layer",
                 rngs: nnx.Rngs):
        for name, value in (("d_model", d_model), ("n_layers", n_layers), ("output_dim", output_dim),
                            ("vocab_size", vocab_size), ("input_dim", input_dim), ("mlp_ratio", mlp_ratio)):
            if value is not None:
                _check_positive_int(name, value)
        if (vocab_size is None) == (input_dim is None):
            raise ValueError(f"give exactly one of vocab_size (token ids) or input_dim (features); "
                             f"got vocab_size={vocab_size}, input_dim={input_dim}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.mixer_cls = layers.spec(mixer).cls
        self.vocab_size, self.input_dim, self.pooling = vocab_size, input_dim, pooling
        if vocab_size is not None:
            self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        else:
            self.embed = Dense(input_dim, d_model, bias_init=EMBED_BIAS_INIT, rngs=rngs)
        self.blocks = nnx.List([
            Block(mixer, d_model, mixer_options=options, mlp_ratio=mlp_ratio, dropout=dropout, norm=norm, rngs=rngs)
            for options in per_layer_options(mixer_options, layer_options, n_layers)
        ])
        self.final_norm = _norm(norm, d_model, rngs)
        self.head = Dense(d_model, output_dim, rngs=rngs)

    def _check_inputs(self, name: str, inputs, per_step: bool) -> None:
        ndim = self.mixer_cls.input_ndim() - int(per_step)
        if self.vocab_size is not None:
            ok = jnp.issubdtype(jnp.result_type(inputs), jnp.integer) and jnp.ndim(inputs) == ndim - 1
            if not ok:
                raise ValueError(f"{name} must be integer token ids of rank {ndim - 1}; "
                                 f"got dtype {jnp.result_type(inputs)} and shape {jnp.shape(inputs)}")
            check_token_ids(name, inputs, self.vocab_size)
        else:
            ok = jnp.ndim(inputs) == ndim and jnp.shape(inputs)[-1] == self.input_dim
            if not ok or not jnp.issubdtype(jnp.result_type(inputs), jnp.floating):
                raise ValueError(f"{name} must be floating features of rank {ndim} with last axis "
                                 f"input_dim={self.input_dim}; got dtype {jnp.result_type(inputs)} "
                                 f"and shape {jnp.shape(inputs)}")

    def _embed(self, inputs, dtype):
        if self.vocab_size is not None:  # out-of-range ids (possible only under jit) embed as NaN
            in_range = (inputs >= 0) & (inputs < self.vocab_size)
            return jnp.where(in_range[..., None], self.embed(inputs), jnp.nan).astype(dtype)
        return self.embed(inputs.astype(dtype))

    def __call__(self, inputs: jax.Array, *, dtype=jnp.float32) -> jax.Array:
        """Outputs per step ``(B, ..., output_dim)`` or pooled ``(B, output_dim)``.

        ``dtype`` is the activation dtype (e.g. ``jnp.bfloat16`` for mixed precision);
        outputs are float32.
        """
        self._check_inputs("inputs", inputs, per_step=False)
        h = self._embed(inputs, dtype)
        for block in self.blocks:
            h = block(h)
        h = self.final_norm(h).astype(dtype)
        if self.pooling == "mean":
            h = jnp.mean(h.astype(jnp.float32), axis=tuple(range(1, h.ndim - 1)))
        elif self.pooling == "last":
            h = h[:, -1]
        return self.head(h).astype(jnp.float32)

    def init_state(self, batch_size: int) -> tuple[Any, ...]:
        if not self.mixer_cls.causal:
            raise NotImplementedError(f"{self.mixer_cls.__name__} is not causal: no recurrent state")
        return tuple(block.mixer.init_state(batch_size) for block in self.blocks)

    def step(self, inputs_t: jax.Array, state: tuple[Any, ...], *, dtype=jnp.float32):
        """One position: ``inputs[:, t]`` -> ``(outputs[:, t], state)`` (per-step outputs)."""
        self._check_inputs("inputs_t", inputs_t, per_step=True)
        if not isinstance(state, tuple) or len(state) != len(self.blocks):
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else repr(type(state).__name__)
            raise ValueError(f"state must be the tuple of {len(self.blocks)} layer states returned by "
                             f"init_state(batch_size) or a previous step; got {got}")
        h = self._embed(inputs_t, dtype)
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return self.head(self.final_norm(h).astype(dtype)).astype(jnp.float32), tuple(new_state)


def sample_next(logits: jax.Array, key: jax.Array, temperature, *, top_k: int | None, greedy: bool) -> jax.Array:
    """The next token ids ``(B,)`` from ``logits`` ``(B, V)``: the argmax when ``greedy``,
    else a draw from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest
    logits (all when ``None``)."""
    if greedy:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is not None:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def _decode_step(state, token, cache, key, position, temperature, *, graphdef, top_k, greedy):
    """Feed ``token`` (B,) at ``position``; return the token that follows it and the new cache."""
    logits, cache = nnx.merge(graphdef, state).step(token, cache)
    next_token = sample_next(logits, jax.random.fold_in(key, position), temperature, top_k=top_k, greedy=greedy)
    return next_token.astype(token.dtype), cache


@functools.lru_cache(maxsize=64)
def _jitted_decode_step(graphdef, top_k: int | None, greedy: bool):
    """One jitted decoding step per model structure and sampling mode; jax's own cache
    then compiles it once per shape (batch size, cache shapes)."""
    return jax.jit(functools.partial(_decode_step, graphdef=graphdef, top_k=top_k, greedy=greedy))


def _check_generate_args(model: SequenceModel, prompt, num_tokens, temperature, top_k, key) -> np.ndarray:
    """Eager checks of ``generate``'s arguments (nothing compiles before they pass);
    returns the prompt's values."""
    if model.vocab_size is None or model.pooling != "none":
        raise ValueError(f"generate needs a model of token ids with per-step outputs; got "
                         f"vocab_size={model.vocab_size}, pooling={model.pooling!r}")
    if not model.mixer_cls.causal:
        raise ValueError(f"generate needs a causal mixer; {model.mixer_cls.__name__} is not causal")
    output_dim = model.head.out_features
    if output_dim > model.vocab_size:
        raise ValueError(f"generate feeds outputs back as inputs: output_dim={output_dim} must be at most "
                         f"vocab_size={model.vocab_size}")
    try:
        values = np.asarray(prompt)
    except jax.errors.TracerArrayConversionError as err:
        raise ValueError("prompt must be a concrete array (generate runs its own jitted steps)") from err
    if values.ndim != 2 or values.shape[1] < 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"prompt must be integer token ids of shape (batch, length ≥ 1); got dtype "
                         f"{values.dtype} and shape {values.shape}")
    if not 0 <= values.min() <= values.max() < model.vocab_size:
        raise ValueError(f"prompt token ids must be in [0, vocab_size={model.vocab_size}); got ids from "
                         f"{values.min()} to {values.max()}")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)) or num_tokens < 0:
        raise ValueError(f"num_tokens must be an integer ≥ 0; got {num_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 <= temperature < float("inf"):
        raise ValueError(f"temperature must be a finite number ≥ 0 (0: greedy); got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or not 1 <= top_k <= output_dim):
        raise ValueError(f"top_k must be None or an integer in [1, output_dim={output_dim}]; got {top_k!r}")
    if temperature > 0 and key is None:
        raise ValueError("key: sampling (temperature > 0) needs a jax.random key, e.g. jax.random.key(0)")
    return values


def generate(model: SequenceModel, prompt: jax.Array, num_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, key: jax.Array | None = None) -> jax.Array:
    """Decode through ``step``: feed ``prompt`` (B, P), then ``num_tokens`` new tokens;
    returns ``(B, P + num_tokens)`` token ids.

    ``temperature=0`` takes the most likely token (greedy); ``temperature > 0`` samples
    from ``softmax(logits / temperature)``, among the ``top_k`` most likely tokens if
    given, with the draw at position ``t`` from ``fold_in(key, t)`` (the same ``key``
    gives the same tokens). The decoding step is jitted once per model structure,
    sampling mode and shapes, and reused by later calls. Arguments are checked before
    anything compiles; the prompt's ids must lie in ``[0, vocab_size)``.
    """
    values = _check_generate_args(model, prompt, num_tokens, temperature, top_k, key)
    graphdef, state = nnx.split(model)
    step = _jitted_decode_step(graphdef, None if top_k is None else int(top_k), temperature == 0)
    key = jax.random.key(0) if key is None else key
    prompt = jnp.asarray(values)
    cache = model.init_state(prompt.shape[0])
    tokens = [prompt[:, t] for t in range(prompt.shape[1])]
    for t in range(prompt.shape[1] + num_tokens - 1):
        next_token, cache = step(state, tokens[t], cache, key, t, float(temperature))
        if t + 1 >= prompt.shape[1]:
            tokens.append(next_token)
    return jnp.stack(tokens, axis=1)

"""Sequence parallelism: every recurrence of the scan core with its time axis sharded.

Each scan maps the state entering a stretch of time to the state leaving it, and these
maps compose associatively (Blelloch, "Prefix Sums and Their Applications", 1990): so a
sequence split into ``P`` shards along a mesh axis is evaluated by

1. **summary** -- every shard computes, from its own steps only, the map it applies to
   the state entering it (the shard's *transition*) together with its final state
   from the zero (empty) state:

   * ``linear_scan``: ``h ↦ (Π_t a_t) ⊙ h + c`` -- the product of the shard's decays
     (a power for a time-invariant decay; resets zero the decay, so the carry stops
     there);
   * ``matrix_scan``: ``h ↦ (A_last ⋯ A_first) h + c`` -- the ordered product of the
     transitions (a matrix power for a time-invariant ``A``), a log-depth reduction;
   * ``linear_attention``: ``S ↦ exp(Σ_t g_t) ⊙ S + c`` (rows of ``S`` for a
     per-key-feature decay; the identity without decay);
   * ``delta_rule``: ``S ↦ M S + c`` with ``M = Π_t e^{g_t} Π_j (I − β k kᵀ)``,
     obtained in the same scan as ``c`` by extending the state with ``Dk`` columns
     that start from the identity and receive zero values;
   * ``plstm_scan``: ``C ↦ (T_last ⋯ T_first) C + c``, the ordered product of the
     transitions acting on the state's transition axis;
   * ``softmax_scan``: the shard's own ``(max, normalizer, weighted sum)``, whose
     log-sum-exp combine is already associative ("Attention as an RNN", Feng et al.,
     2024, eq. 5);

2. **exchange** -- one ``all_gather`` brings all ``P`` summaries to every device
   (``P`` small states; the pattern of LASP-2, "LASP-2: Rethinking Sequence
   Parallelism for Linear Attention and Its Hybrid", Sun et al., 2025), and each
   device folds them in order, from the caller's initial state: the state entering
   shard ``i`` is the exclusive fold of shards ``< i`` (of shards ``> i`` for
   ``reverse=True``), and the fold of all ``P`` is the final state, the same on every
   device;

3. **rerun** -- every shard runs its scan again from its true entering state, with
   the method the caller chose (``"auto"`` resolves per shard).

Per device this costs two local scans of ``L/P`` steps and memory ``∝ L/P``;
gradients (initial state included) flow through ``shard_map`` and ``all_gather`` by
automatic differentiation. Uneven lengths are padded to a multiple of ``P`` at the
end processed *first* (the start of a forward scan, the end of a reverse one) and
sliced off: padded steps are identities (``β = 0``, zero keys, scores ``-inf``, identity
transitions with zero sources) or,
for ``linear_scan`` and ``matrix_scan``, zero inputs processed from the zero state --
those two fold the caller's ``h0`` into the first real step (``b ← b + a h0``, as
their associative form does), so a time-invariant decay is never broadcast over time.

Selection, at trace time::

    with scans.sequence_parallel(mesh, axis="seq"):
        y = jax.jit(model)(x)          # traced here: every core scan runs sharded

or, under ``jax.set_mesh`` with an *explicit* mesh axis, by the inputs: a scan whose
main input (``b``, ``scores``, ``q``) is sharded along time (``jax.typeof(x).sharding
.spec[1]``) runs sharded over that axis. The batch is split over the mesh's other
axes whose sizes divide it (replicated otherwise). With an auto (GSPMD) mesh the
inputs are resharded by ``shard_map`` itself; with an explicit mesh they are
resharded with ``jax.reshard`` and the outputs keep the sharded layout. The setting
is read when a function is *traced*: a function compiled outside the context is not
recompiled by entering it (enter the context inside the jitted function, as the
training loop does).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

from . import _checks
from .reference import SoftmaxState

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class _Setting:
    mesh: Mesh | AbstractMesh
    axis: str


_ACTIVE: contextvars.ContextVar[_Setting | None] = contextvars.ContextVar("sequence_parallel", default=None)


@contextlib.contextmanager
def sequence_parallel(mesh: Mesh | AbstractMesh, axis: str = "seq"):
    """Run every core scan traced inside this context with time sharded over ``mesh[axis]``.

    Args:
      mesh: a ``jax.sharding.Mesh`` (auto or explicit axes).
      axis: the mesh axis that splits the time axis (axis 1) of every scan.
    """
    if not isinstance(mesh, (Mesh, AbstractMesh)):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh; its axes are {tuple(mesh.axis_names)}")
    token = _ACTIVE.set(_Setting(mesh, axis))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def sequence_parallel_active() -> bool:
    """Whether a :func:`sequence_parallel` context is active (scans traced now are sharded)."""
    return _ACTIVE.get() is not None


# ---------------------------------------------------------------------------------
# the rules: what each scan shards, pads, summarizes and folds


class _Rule:
    """How one scan runs sharded. ``timed``: arguments laid out ``(batch, time, ...)``
    (a size-1 batch or time axis broadcasts); ``state``: the initial-state argument
    (``(batch, ...)``); ``primary``: the argument whose ``(B, L)`` are the batch and
    length; ``pad``: the value of padded steps."""

    primary: str
    timed: tuple[str, ...]
    state: str
    pad: dict[str, Any]
    folds_initial_state = False  # the initial state enters the first real step's input

    def prepare(self, timed: dict) -> dict:
        """Bring the timed arrays to a common rank (broadcast axes of size 1)."""
        return timed

    def accumulation_dtype(self, timed: dict):
        return _checks.accumulation_dtype(*timed.values())

    def empty_state(self, timed: dict, acc):
        """The identity state, local shapes, ``acc`` dtype."""
        raise NotImplementedError

    def summary(self, raw, timed: dict, options: dict, acc):
        """The shard's transition and its final state from the empty state."""
        raise NotImplementedError

    def fold(self, state, summary):
        """The state after a shard, given the state entering it and its summary."""
        raise NotImplementedError

    def padding(self, name: str, x, widths):
        """``x`` padded along time by ``widths`` with the value of padded steps."""
        return jnp.pad(x, widths, constant_values=self.pad[name])

    def run(self, raw, timed: dict, state, options: dict):
        """The local scan from ``state``: ``(outputs, final_state)``."""
        return raw(**timed, **{self.state: state}, **options)

    def fold_in(self, timed: dict, state, here, position: int, acc) -> dict:
        """Add the initial state's contribution to step ``position`` where ``here``."""
        raise NotImplementedError


def _decays(timed, acc):
    """``a`` with the resets' zeros, in ``acc``."""
    a = timed["a"].astype(acc)
    reset = timed.get("reset")
    if reset is not None:
        keep = jnp.logical_not(reset).reshape(reset.shape + (1,) * (a.ndim - 2))
        a = a * keep.astype(acc)
    return a


class _Linear(_Rule):
    primary, timed, state = "b", ("a", "b", "reset"), "h0"
    pad = {"a": 0, "b": 0, "reset": False}
    folds_initial_state = True

    def prepare(self, timed):
        a, b = timed["a"], timed["b"]
        return dict(timed, a=jnp.reshape(a, (1,) * (b.ndim - jnp.ndim(a)) + jnp.shape(a)))

    def accumulation_dtype(self, timed):
        return _checks.accumulation_dtype(timed["a"], timed["b"])

    def empty_state(self, timed, acc):
        b = timed["b"]
        return jnp.zeros((b.shape[0],) + b.shape[2:], acc)

    def summary(self, raw, timed, options, acc):
        a = _decays(timed, acc)
        product = jax.lax.integer_pow(a[:, 0], timed["b"].shape[1]) if a.shape[1] == 1 else jnp.prod(a, axis=1)
        return product, raw(**timed, h0=None, **options)[1]

    def fold(self, h, summary):
        product, final = summary
        return product * h + final

    def fold_in(self, timed, h0, here, position, acc):
        a = _decays(timed, acc)
        step = a[:, position if a.shape[1] > 1 else 0] * h0.astype(acc)
        b = timed["b"].astype(acc)
        return dict(timed, b=b.at[:, position].add(jnp.where(here, step, jnp.zeros_like(step))))


def _matvec(A, h):
    return jnp.einsum("...ij,...j->...i", A, h, precision=_HIGHEST)


def _matmul(A, B):
    return jnp.einsum("...ij,...jk->...ik", A, B, precision=_HIGHEST)


def _ordered_product(A, reverse: bool):
    """``A_{n-1} ⋯ A_0`` over axis 1 (``A_0 ⋯ A_{n-1}`` for ``reverse``), by pairs in log depth."""
    while A.shape[1] > 1:
        if A.shape[1] % 2:  # an identity after the last step
            eye = jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A[:, :1].shape)
            A = jnp.concatenate([A, eye], axis=1)
        earlier, later = A[:, 0::2], A[:, 1::2]
        A = _matmul(earlier, later) if reverse else _matmul(later, earlier)
    return A[:, 0]


class _Matrix(_Rule):
    primary, timed, state = "b", ("A", "b"), "h0"
    pad = {"A": 0, "b": 0}
    folds_initial_state = True

    def prepare(self, timed):
        A, b = timed["A"], timed["b"]
        return dict(timed, A=jnp.reshape(A, (1,) * (b.ndim + 1 - jnp.ndim(A)) + jnp.shape(A)))

    def empty_state(self, timed, acc):
        b = timed["b"]
        return jnp.zeros((b.shape[0],) + b.shape[2:], acc)

    def summary(self, raw, timed, options, acc):
        A = timed["A"].astype(acc)
        if A.shape[1] == 1:
            product = jnp.linalg.matrix_power(A[:, 0], timed["b"].shape[1])
        else:
            product = _ordered_product(A, options["reverse"])
        return product, raw(**timed, h0=None, **options)[1]

    def fold(self, h, summary):
        product, final = summary
        return _matvec(product, h) + final

    def fold_in(self, timed, h0, here, position, acc):
        A = timed["A"].astype(acc)
        step = _matvec(A[:, position if A.shape[1] > 1 else 0], h0.astype(acc))
        b = timed["b"].astype(acc)
        return dict(timed, b=b.at[:, position].add(jnp.where(here, step, jnp.zeros_like(step))))


def _softmax_combine(left: SoftmaxState, right: SoftmaxState) -> SoftmaxState:
    """``left ∘ right`` (left first), the log-sum-exp operator of ``softmax.py``."""
    m = jnp.maximum(left.max, right.max)
    ref = jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)  # before subtracting: no -inf - -inf
    w_left, w_right = jnp.exp(left.max - ref), jnp.exp(right.max - ref)
    return SoftmaxState(m, w_left * left.normalizer + w_right * right.normalizer,
                        w_left[..., None] * left.weighted_sum + w_right[..., None] * right.weighted_sum)


class _Softmax(_Rule):
    primary, timed, state = "scores", ("scores", "v"), "state"
    pad = {"scores": -jnp.inf, "v": 0}

    def empty_state(self, timed, acc):
        scores, v = timed["scores"], timed["v"]
        heads = (scores.shape[0],) + scores.shape[2:]
        return SoftmaxState(jnp.full(heads, -jnp.inf, acc), jnp.zeros(heads, acc),
                            jnp.zeros(heads + v.shape[-1:], acc))

    def summary(self, raw, timed, options, acc):
        return raw(**timed, state=None, **options)[1]

    def fold(self, state, summary):
        return _softmax_combine(SoftmaxState(*state), summary)


def _attention_state(timed, acc):
    q, v = timed["q"], timed["v"]
    return jnp.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[-1]), acc)


class _LinearAttention(_Rule):
    primary, timed, state = "q", ("q", "k", "v", "log_decay"), "s0"
    pad = {"q": 0, "k": 0, "v": 0, "log_decay": 0}

    def empty_state(self, timed, acc):
        return _attention_state(timed, acc)

    def summary(self, raw, timed, options, acc):
        g = timed.get("log_decay")
        decay = None if g is None else jnp.exp(jnp.sum(g.astype(acc), axis=1))  # (B, H) or (B, H, Dk)
        return decay, raw(**timed, s0=None, **options)[1]

    def fold(self, S, summary):
        decay, final = summary
        if decay is None:
            return S + final
        return decay.reshape(decay.shape + (1,) * (S.ndim - decay.ndim)) * S + final


class _Delta(_Rule):
    primary, timed, state = "q", ("q", "k", "v", "beta", "log_gate"), "s0"
    pad = {"q": 0, "k": 0, "v": 0, "beta": 0, "log_gate": 0}

    def empty_state(self, timed, acc):
        return _attention_state(timed, acc)

    def summary(self, raw, timed, options, acc):
        # Columns evolve independently: Dk extra value columns that start from the
        # identity and receive zero values end as the transition M (S ↦ M S + c).
        v = timed["v"]
        Dk, Dv = timed["q"].shape[-1], v.shape[-1]
        zero = _attention_state(timed, acc)
        eye = jnp.broadcast_to(jnp.eye(Dk, dtype=acc), zero.shape[:-1] + (Dk,))
        extended = jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (Dk,), v.dtype)], axis=-1)
        _, S = raw(**dict(timed, v=extended), s0=jnp.concatenate([zero, eye], axis=-1), **options)
        return S[..., Dv:], S[..., :Dv]

    def fold(self, S, summary):
        transition, final = summary
        return _matmul(transition, S) + final


class _PLSTM(_Rule):
    primary, timed, state = "q", ("q", "k", "v", "source", "transition", "mark", "direct"), "initial_state"
    pad = {"q": 0, "k": 0, "v": 0, "source": 0, "mark": 0, "direct": 0}  # transition: the identity

    def padding(self, name, x, widths):
        if name != "transition":
            return super().padding(name, x, widths)
        before, after = widths[1]
        eye = lambda steps: jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype),  # noqa: E731
                                             x.shape[:1] + (steps,) + x.shape[2:])
        return jnp.concatenate([eye(before), x, eye(after)], axis=1)

    def empty_state(self, timed, acc):
        q, v, source = timed["q"], timed["v"], timed["source"]
        return jnp.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[-1], source.shape[-1]), acc)

    def summary(self, raw, timed, options, acc):
        product = _ordered_product(timed["transition"].astype(acc), reverse=False)   # (B, H, N, N)
        return product, raw(**timed, initial_state=None, **options)[1]

    def fold(self, C, summary):
        product, final = summary
        return jnp.einsum("...ij,...dvj->...dvi", product, C, precision=_HIGHEST) + final


RULES: dict[str, _Rule] = {"linear_scan": _Linear(), "matrix_scan": _Matrix(), "softmax_scan": _Softmax(),
                           "linear_attention": _LinearAttention(), "delta_rule": _Delta(), "plstm_scan": _PLSTM()}


# ---------------------------------------------------------------------------------
# the generic mechanism


def shardable(raw: Callable) -> Callable:
    """Wrap the scan ``raw`` (one of ``RULES``) so that it runs sharded along time when
    a :func:`sequence_parallel` context is active or its main input is sharded along
    time over an explicit mesh axis; otherwise it is ``raw`` itself."""
    rule = RULES[raw.__name__]
    signature = inspect.signature(raw)

    @functools.wraps(raw)
    def scan(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        arguments = dict(arguments.arguments)
        setting = _ACTIVE.get() or _from_input(arguments[rule.primary])
        shape = jnp.shape(arguments[rule.primary])
        if setting is None or setting.mesh.shape[setting.axis] == 1 or len(shape) < 2 or shape[1] < 2:
            return raw(*args, **kwargs)
        return _sharded(raw, rule, setting, arguments)

    scan.__doc__ = (raw.__doc__ or "") + (
        "\n    Sequence parallelism: under ``scans.sequence_parallel(mesh, axis)`` (or with the\n"
        "    main input sharded along time over an explicit mesh axis) the time axis is\n"
        "    split across that axis (``seqmodels.scans.parallel``); results are the same.\n")
    return scan


def _from_input(x) -> _Setting | None:
    """The explicit mesh axis that shards ``x`` along time (axis 1), if any."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or len(spec) < 2 or spec[1] is None:
        return None
    names = spec[1] if isinstance(spec[1], tuple) else (spec[1],)
    mesh = sharding.mesh
    if not all(_axis_type(mesh, name) == AxisType.Explicit for name in names):
        return None
    if len(names) != 1:
        raise ValueError(f"the time axis of a scan input may be sharded over one mesh axis; got {spec[1]}")
    return _Setting(mesh, names[0])


def _axis_type(mesh, name: str):
    return dict(zip(mesh.axis_names, mesh.axis_types))[name]


def _batch_axes(mesh, axis: str, batch: int) -> tuple[str, ...]:
    """The mesh's other axes (in order) whose sizes divide ``batch``, as many as fit."""
    chosen, size = [], 1
    for name in mesh.axis_names:
        n = mesh.shape[name]
        if name != axis and n > 1 and batch % (size * n) == 0:
            chosen.append(name)
            size *= n
    return tuple(chosen)


def _abstract(tree):
    """Shapes and dtypes only (no sharding), for checking arguments at global shapes."""
    def leaf(x):
        aval = jax.typeof(x)
        return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)
    return jax.tree.map(leaf, tree)


def _sharded(raw, rule: _Rule, setting: _Setting, arguments: dict):
    mesh, axis = setting.mesh, setting.axis
    arrays = {n: arguments[n] for n in (*rule.timed, rule.state) if arguments[n] is not None}
    options = {n: v for n, v in arguments.items() if n not in rule.timed and n != rule.state}
    # the scan's own checks, at global shapes: errors name the caller's arguments
    expected = jax.eval_shape(lambda arrays: raw(**arrays, **options), _abstract(arrays))

    timed = rule.prepare({n: arrays[n] for n in rule.timed if n in arrays})
    state = arrays.get(rule.state)
    if state is not None and rule.state == "state":
        state = SoftmaxState(*state)
    B, L = jnp.shape(timed[rule.primary])[:2]
    P = mesh.shape[axis]
    shard = -(-L // P)
    pad = shard * P - L
    reverse = bool(options.get("reverse", False))
    batch = _batch_axes(mesh, axis, B)
    batch_entry = None if not batch else batch[0] if len(batch) == 1 else batch

    def timed_spec(x):  # after padding: a time axis of size 1 broadcasts (L ≥ 2 here)
        return PartitionSpec(batch_entry if x.shape[0] == B else None, axis if x.shape[1] > 1 else None)

    def padded(name, x):
        if not pad or x.shape[1] != L:
            return x
        widths = [(0, 0), (0, pad) if reverse else (pad, 0)] + [(0, 0)] * (x.ndim - 2)
        return rule.padding(name, x, widths)

    timed = {n: padded(n, x) for n, x in timed.items()}
    in_specs = ({n: timed_spec(x) for n, x in timed.items()},
                jax.tree.map(lambda _: PartitionSpec(batch_entry), state))
    out_specs = (PartitionSpec(batch_entry, axis), jax.tree.map(lambda _: PartitionSpec(batch_entry), expected[1]))
    # the first real step in processing order: index 0 (forward, after the padding) or L - 1
    first = L - 1 if reverse else pad
    body = functools.partial(_body, raw=raw, rule=rule, options=options, axis=axis, shards=P, reverse=reverse,
                             first_shard=first // shard, first_position=first % shard, expected=expected)
    explicit = any(t == AxisType.Explicit for t in mesh.axis_types)
    if explicit:
        timed, state = _reshard(mesh, (timed, state), in_specs)
    outputs, final = jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                                   check_vma=False)(timed, state)
    if pad:
        if explicit:  # an uneven length cannot stay sharded: gather time before slicing
            outputs = _reshard(mesh, outputs, PartitionSpec(batch_entry))
        outputs = outputs[:, :L] if reverse else outputs[:, pad:]
    return outputs, final


def _reshard(mesh, tree, specs):
    def one(x, spec):
        return jax.reshard(x, NamedSharding(mesh, spec) if isinstance(mesh, Mesh) else spec)
    return jax.tree.map(one, tree, specs, is_leaf=lambda s: isinstance(s, PartitionSpec))


def _body(timed, state, *, raw, rule: _Rule, options, axis, shards, reverse, first_shard, first_position,
          expected):
    """One shard: summary, exchange and fold of the summaries, rerun from the entering state."""
    index = jax.lax.axis_index(axis)
    acc = rule.accumulation_dtype(timed)
    if state is not None and rule.folds_initial_state:
        timed = rule.fold_in(timed, state, index == first_shard, first_position, acc)
        state = None
    start = rule.empty_state(timed, acc) if state is None else jax.tree.map(lambda x: x.astype(acc), state)
    summaries = jax.tree.map(lambda x: jax.lax.all_gather(x, axis), rule.summary(raw, timed, options, acc))
    entering = [None] * shards
    s = start
    for j in (reversed(range(shards)) if reverse else range(shards)):
        entering[j] = s
        s = rule.fold(s, jax.tree.map(lambda x: x[j], summaries))
    mine = jax.tree.map(lambda *xs: jnp.stack(xs)[index], *entering)
    outputs, _ = rule.run(raw, timed, mine, options)
    final = jax.tree.map(lambda x, e: x.astype(e.dtype), s, expected[1])
    return outputs.astype(expected[0].dtype), final

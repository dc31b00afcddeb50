"""The Mixer protocol and the registry of mixers.

A mixer maps ``(batch, length, d_model)`` to the same shape (images:
``(batch, H, W, d_model)``, video: ``(batch, T, H, W, d_model)``). Causal mixers also
offer a recurrent form, ``init_state(batch_size)`` and ``step(x_t, state)``, whose
outputs equal the parallel ones token by token.

Subclasses implement ``forward(x)`` (and, if causal, ``forward_step(x_t, state)`` and
``init_state``); the public ``__call__``/``step`` check the input once here, so every
mixer rejects a wrong rank, feature size or dtype with the same clear message, and
return activations in the input dtype (parameters stay float32; scans accumulate in
float32). Also checked here, once for all mixers, before anything compiles:

* constructor options, against the constructor's annotations and the class's
  ``option_ranges`` / ``option_choices`` (``seqmodels.layers.options``);
* ``init_state``'s ``batch_size`` (a positive int);
* ``step``'s ``state``, against the structure, shapes and dtypes ``init_state`` gives
  for ``x_t``'s batch size (``None`` is refused: a fresh start is ``init_state``).

An input with no elements (length 0, batch 0) gives an empty output of its shape.

Registration::

    @register("aaren", example_options={"num_heads": 2})
    class Aaren(Mixer): ...

    mixer = build("aaren", d_model=64, rngs=nnx.Rngs(0), num_heads=4)
"""

from __future__ import annotations

import functools
import weakref
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from . import options as _options


def _check_activation(name: str, x, ndim: int, d_model: int, layout: str) -> None:
    if jnp.ndim(x) != ndim:
        raise ValueError(f"{name} must have rank {ndim} {layout}; got rank {jnp.ndim(x)} with shape {jnp.shape(x)}")
    if jnp.shape(x)[-1] != d_model:
        raise ValueError(f"{name} must have feature size d_model={d_model} on its last axis; got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} must have a floating dtype (float32, bfloat16, ...); got {jnp.result_type(x)}")


def _same_kind_at_least_as_wide(dtype, want) -> bool:
    """A state leaf may be wider than ``init_state``'s (float64 under x64), not narrower or
    of another kind (a float32 state for a complex one)."""
    return jnp.promote_types(dtype, want) == dtype and (
        jnp.issubdtype(dtype, jnp.complexfloating) == jnp.issubdtype(want, jnp.complexfloating))


# ``Mixer._expected_state``'s cache: dropped with its mixer.
_EXPECTED_STATES: "weakref.WeakKeyDictionary[Mixer, dict]" = weakref.WeakKeyDictionary()


class Mixer(nnx.Module):
    """Base class of every sequence mixer.

    Class attributes:
      causal: output ``t`` depends on inputs ``≤ t`` only (along axis 1).
      spatial_ndim: number of axes mixed besides batch and features for sequences
        (1) and images (2, ``(batch, H, W, d)``).
      temporal: an extra time axis before the spatial ones (video mixers such as
        ConvS5: ``(batch, T, H, W, d)``); ``step`` then runs over that time axis.
      supports_sequence_parallel: the mixer can run with axis 1 (the sequence; H for
        images, T for video) sharded across devices (``scans.sequence_parallel``, the
        training loop's ``mesh.seq``): its recurrence along that axis goes through the
        core scans, which shard it, and its other operations along it (short or FFT
        convolutions, flips, cumulative sums, reductions) are left to GSPMD, which
        exchanges halos or gathers. ``False`` for mixers whose mixing along axis 1 is
        neither (content-based routing): the training loop refuses ``mesh.seq > 1``
        for them before compiling anything.
    """

    causal: ClassVar[bool] = True
    spatial_ndim: ClassVar[int] = 1
    temporal: ClassVar[bool] = False
    supports_sequence_parallel: ClassVar[bool] = True
    option_ranges: ClassVar[dict[str, _options.Interval]] = {}
    option_choices: ClassVar[dict[str, tuple]] = {}
    d_model: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _validating_init(cls.__init__)
        if "init_state" in cls.__dict__:
            cls.init_state = _validating_init_state(cls.init_state)

    @classmethod
    def input_ndim(cls) -> int:
        return 2 + cls.spatial_ndim + int(cls.temporal)

    @classmethod
    def layout(cls) -> str:
        axes = {1: "length", 2: "H, W"}.get(cls.spatial_ndim, f"{cls.spatial_ndim} spatial axes")
        return f"(batch, {'T, ' if cls.temporal else ''}{axes}, d_model)"

    def __call__(self, x: Float[Array, "B *axes D"]) -> Float[Array, "B *axes D"]:
        """Mix ``x`` along its :meth:`layout` axes (``B`` batch, ``*axes`` length, or H, W, or
        T, H, W; ``D`` = ``d_model``); returns the same shape in ``x``'s dtype."""
        _check_activation("x", x, self.input_ndim(), self.d_model, self.layout())
        if jnp.size(x) == 0:  # length or batch 0: nothing to mix, and no scan to run
            return jnp.zeros(jnp.shape(x), jnp.result_type(x))
        return self.forward(x).astype(x.dtype)

    def step(self, x_t: Float[Array, "B *frame D"], state: Any) -> tuple[Float[Array, "B *frame D"], Any]:
        """One step of the recurrent form: ``x_t`` is ``x[:, t]``; returns ``(y[:, t], state)``
        (``*frame``: no axes for sequences, H, W for video)."""
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal and has no recurrent step")
        layout = self.layout().replace("T, " if self.temporal else "length, ", "", 1)
        _check_activation("x_t", x_t, self.input_ndim() - 1, self.d_model, layout)
        self._check_state(state, x_t)
        y_t, state = self.forward_step(x_t, state)
        return y_t.astype(x_t.dtype), state

    def init_state(self, batch_size: int) -> Any:
        """The state before the first step (float32)."""
        raise NotImplementedError(f"{type(self).__name__} is not causal and has no recurrent state")

    def _expected_state(self, batch: int):
        """``init_state(batch)``'s shapes and dtypes, and (for an ``init_state`` with more
        arguments) the leaves for ``batch + 1``, which tell the batch axes apart. Cached per
        mixer and batch size, so an eager token loop traces ``init_state`` once, not per step."""
        per_mixer = _EXPECTED_STATES.setdefault(self, {})
        if batch not in per_mixer:
            expected = jax.eval_shape(lambda: self.init_state(batch))
            flexible = len(inspect.signature(self.init_state).parameters) > 1
            other = jax.tree.leaves(jax.eval_shape(lambda: self.init_state(batch + 1))) if flexible else None
            per_mixer[batch] = (expected, other)
        return per_mixer[batch]

    def _check_state(self, state, x_t) -> None:
        """``state`` must have the tree structure, shapes and dtypes of ``init_state(batch)``.

        When ``init_state`` takes more than ``batch_size`` (a spatial shape, a length),
        those may change the other sizes, so only the batch axes (the axes whose size
        follows ``batch_size``) are compared exactly, with ranks and dtypes.
        """
        owner, batch = type(self).__name__, jnp.shape(x_t)[0]
        fresh = f"{owner}.init_state(batch_size={batch}) or a previous step"
        if state is None:
            raise ValueError(f"state must be the state returned by {fresh}; got None "
                             "(call init_state for a fresh start)")
        expected, other = self._expected_state(batch)
        leaves, structure = jax.tree.flatten(state)
        if structure != jax.tree.structure(expected):
            raise ValueError(f"state must have the structure of {fresh}: {jax.tree.structure(expected)}; "
                             f"got {structure}")
        flexible = other is not None
        for i, (leaf, want) in enumerate(zip(leaves, jax.tree.leaves(expected))):
            shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
            if flexible:
                batch_axes = [a for a, (n, m) in enumerate(zip(want.shape, other[i].shape)) if n != m]
                ok = len(shape) == len(want.shape) and all(shape[a] == want.shape[a] for a in batch_axes)
            else:
                ok = shape == want.shape
            if not ok or not _same_kind_at_least_as_wide(dtype, want.dtype):
                raise ValueError(f"state (leaf {i}) must have shape {want.shape} and dtype {want.dtype} as "
                                 f"returned by {fresh}; got shape {shape} and dtype {dtype}")

    def forward(self, x: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_step(self, x_t: jax.Array, state: Any) -> tuple[jax.Array, Any]:  # pragma: no cover
        raise NotImplementedError


def _validating_init(init: Callable) -> Callable:
    """``init`` that first checks its arguments (``options.check_options``) for ``type(self)``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        _options.check_options(type(self), init, signature.bind(self, *args, **kwargs))
        init(self, *args, **kwargs)

    return checked_init


def _validating_init_state(init_state: Callable) -> Callable:
    """``init_state`` that first checks ``batch_size`` (a positive int)."""

    @functools.wraps(init_state)
    def checked_init_state(self, batch_size, *args, **kwargs):
        _options.check_batch_size(type(self).__name__, batch_size)
        return init_state(self, batch_size, *args, **kwargs)

    return checked_init_state


@dataclass(frozen=True)
class MixerSpec:
    """A registered mixer: its class and small options that exercise it in tests and docs."""

    name: str
    cls: type[Mixer]
    example_options: dict = field(default_factory=dict)

    def options(self) -> dict[str, inspect.Parameter]:
        """Keyword options of the constructor (everything but ``d_model`` and ``rngs``)."""
        params = inspect.signature(self.cls.__init__).parameters
        return {n: p for n, p in params.items() if n not in ("self", "d_model", "rngs")
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


_REGISTRY: dict[str, MixerSpec] = {}


def register(name: str, *, example_options: dict | None = None) -> Callable[[type[Mixer]], type[Mixer]]:
    """Class decorator: make a mixer buildable by ``name``."""

    def decorate(cls: type[Mixer]) -> type[Mixer]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"a mixer named {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        if not issubclass(cls, Mixer):
            raise TypeError(f"{cls.__name__} must subclass seqmodels.layers.Mixer to be registered")
        _REGISTRY[name] = MixerSpec(name, cls, dict(example_options or {}))
        return cls

    return decorate


def names() -> list[str]:
    """Names of all registered mixers, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> MixerSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixer {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]


def build(name: str, d_model: int, *, rngs: nnx.Rngs, **options) -> Mixer:
    """Construct the mixer registered as ``name`` with keyword ``options``.

    Raises ValueError listing the valid names for an unknown name, and the valid
    options for an unknown option.
    """
    s = spec(name)
    valid = s.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listed = ", ".join(f"{n}={p.default!r}" if p.default is not p.empty else n for n, p in valid.items())
        raise ValueError(f"unknown option(s) {unknown} for mixer {name!r}; valid options: {listed}")
    return s.cls(d_model, rngs=rngs, **options)

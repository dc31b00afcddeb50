"""One validator for the keyword options of every mixer.

Each mixer's constructor is checked against its own signature before it runs
(``Mixer.__init_subclass__`` wraps it), so the mixers cannot drift apart in what they
accept. The rules come from the annotations and a small per-class declaration:

* ``int`` options must be ints (``bool`` is not) and, being sizes and counts, ``≥ 1``;
* ``float`` options must be real numbers (an int is fine, a bool or a string is not)
  and finite;
* ``bool`` options must be ``True`` or ``False`` (``"no"`` and ``1`` are refused);
* ``str`` options must be strings;
* ``X | None`` accepts ``None`` besides ``X``;
* ``option_ranges = {"name": Interval(...)}`` on the class replaces the default range
  (``Interval(0)`` for a count that may be zero, ``POSITIVE`` for a rate);
* ``option_choices = {"name": (...)}`` lists the valid values of a string option.

A wrong type raises :class:`OptionTypeError` (a ``TypeError`` that is also a
``ValueError``, so code that reports bad options by catching ``ValueError`` keeps
doing so), a wrong value ``ValueError``; both name the mixer, the option, what it must
be and what it got.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


class OptionTypeError(TypeError, ValueError):
    """An argument of the wrong type (``"4"`` for an int, ``"no"`` for a bool)."""


@dataclass(frozen=True)
class Interval:
    """The range ``[low, high]`` (an open end with ``open_low`` / ``open_high``; None: unbounded).

    ``label`` replaces the default description in messages (``"a positive int"``).
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    label: str | None = None

    def __contains__(self, value) -> bool:
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return bool(above and below)

    def __str__(self) -> str:
        if self.label is not None:
            return self.label
        if self.high is None:
            return f"{'>' if self.open_low else '≥'} {self.low}"
        if self.low is None:
            return f"{'<' if self.open_high else '≤'} {self.high}"
        return f"in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"


POSITIVE = Interval(0, open_low=True)
NON_NEGATIVE = Interval(0)
AT_LEAST_ONE = Interval(1, label="a positive int")


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


# What each annotated base type accepts, its name in messages, and its default range.
_KINDS: dict[type, tuple[Callable[[Any], bool], str, Interval | None]] = {
    int: (_is_int, "an int", AT_LEAST_ONE),
    float: (_is_real, "a real number", None),
    bool: (lambda v: isinstance(v, (bool, np.bool_)), "a bool (True or False)", None),
    str: (lambda v: isinstance(v, str), "a str", None),
}


def _base_type(annotation) -> tuple[type | None, bool]:
    """``(T, allows_none)`` for ``T`` or ``T | None`` with ``T`` in ``_KINDS``; ``(None, _)`` otherwise."""
    if annotation in _KINDS:
        return annotation, False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        allows_none = len(members) < len(typing.get_args(annotation))
        if len(members) == 1 and members[0] in _KINDS:
            return members[0], allows_none
    return None, False


def check_option(owner: str, name: str, value, annotation, *, interval: Interval | None = None,
                 choices: tuple | None = None) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``owner``'s option ``name`` unless ``value`` fits.

    ``interval`` overrides the annotated type's default range; ``choices`` lists the
    valid values. Options whose annotation is not an ``int``/``float``/``bool``/``str``
    (optionally ``| None``) are checked only against ``choices``.
    """
    base, allows_none = _base_type(annotation)
    if value is None and (allows_none or base is None):
        return
    if base is not None:
        accepts, kind, default_interval = _KINDS[base]
        if not accepts(value):
            want = f"{kind}{' or None' if allows_none else ''}"
            raise OptionTypeError(f"{owner} option {name} must be {want}; got {value!r} ({type(value).__name__})")
        if base is float and not math.isfinite(value):
            raise ValueError(f"{owner} option {name} must be finite; got {value!r}")
        interval = interval if interval is not None else default_interval
    if interval is not None and value not in interval:
        raise ValueError(f"{owner} option {name} must be {interval}; got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{owner} option {name} must be one of {tuple(choices)}; got {value!r}")


@functools.cache
def _annotations(init: Callable) -> dict:
    return inspect.get_annotations(init, eval_str=True)


def check_options(cls: type, init: Callable, bound: inspect.BoundArguments) -> None:
    """Check every argument of ``init`` bound in ``bound`` against ``cls``'s rules."""
    annotations = _annotations(init)
    ranges, choices = declared(cls, "option_ranges"), declared(cls, "option_choices")
    for name, value in bound.arguments.items():
        if name in ("self", "rngs"):
            continue
        check_option(cls.__name__, name, value, annotations.get(name), interval=ranges.get(name),
                     choices=choices.get(name))


def declared(cls: type, attribute: str) -> dict:
    """``attribute`` merged over ``cls``'s bases (a subclass adds to or overrides its parents')."""
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get(attribute, {}))
    return merged


def check_batch_size(owner: str, batch_size) -> None:
    """``init_state``'s ``batch_size``: a positive int."""
    if not _is_int(batch_size):
        raise OptionTypeError(f"{owner}.init_state: batch_size must be an int; got {batch_size!r} "
                        f"({type(batch_size).__name__})")
    if batch_size < 1:
        raise ValueError(f"{owner}.init_state: batch_size must be a positive int; got {batch_size!r}")

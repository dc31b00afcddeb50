"""Every mixer as a Flax Linen module, through ``flax.nnx.bridge.ToLinen``.

    mixer = seqmodels.layers.to_linen("aaren", 64, num_heads=4)
    variables = mixer.init(jax.random.key(0), x)        # x: (batch, length, 64)
    y = mixer.apply(variables, x)                        # same shape

The wrapper builds the NNX mixer (``build(name, d_model, rngs=..., **options)``) inside
``init``, from the rngs given to it, and again inside every ``apply`` (at trace time,
outside the compiled program), filled from the Linen variables; ``apply`` needs no rngs.
Its variables land in three Linen collections:

* ``params``: trainable weights;
* ``ssm_params``: the state-space parameters (``SSMParam``: A/Λ, B, Δ of S4, S4D, S5,
  LSSL, ConvS5), trainable too -- differentiate with respect to them as well; the S4 and
  S5 papers give them their own learning rate and no weight decay;
* ``centroids``: the Routing Transformer's k-means centroids, updated by the forward
  pass (not by gradients) unless the option ``deterministic=True`` (wrap a second
  module with it for evaluation): ``apply(..., mutable=["centroids"])`` keeps the update.

Other methods of the mixer are reached with ``nnx_method``:
``apply(variables, batch_size, nnx_method="init_state")`` and
``apply(variables, x_t, state, nnx_method="step")``.
"""

from __future__ import annotations

import jax
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import bridge

from .base import build, spec
from .common import SSMParam
from .routing import Centroids

nnx.register_variable_name("ssm_params", SSMParam)
nnx.register_variable_name("centroids", Centroids)


def to_linen(name: str, d_model: int, **options) -> LinenMixer:
    """The mixer registered as ``name`` (``build``'s arguments, less ``rngs``) as a Linen module.

    An unknown ``name`` raises here, listing the valid names; an unknown option raises
    from ``init``, listing the valid options, before anything is compiled.
    """
    spec(name)
    return LinenMixer(build, args=(name, d_model), kwargs=FrozenDict(options))


class LinenMixer(bridge.ToLinen):
    """``ToLinen`` whose rebuild of the mixer inside ``apply`` is evaluated at trace time.

    ``ToLinen`` builds the NNX mixer anew in every ``apply`` from a constant key, then
    overwrites its variables with the Linen ones. Under ``jax.ensure_compile_time_eval``
    that initialization runs once while tracing and never enters the compiled program,
    and mixers that initialize in NumPy (HiPPO matrices, S5's eigenbasis: S4, S5,
    ConvS5) can be applied under ``jit``. Their ``init`` must run outside ``jit``: a
    traced key cannot enter NumPy.
    """

    def __call__(self, *args, **kwargs):
        with jax.ensure_compile_time_eval():
            return super().__call__(*args, **kwargs)

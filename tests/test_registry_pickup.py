"""The conformance suite picks up a newly registered mixer with no edit, and fails a bad one.

A pytest plugin registers two toy mixers in a subprocess: ``toy_ema`` (a correct
causal exponential moving average on ``scans.linear_scan``) and ``toy_leaky`` (the
same, but its parallel form peeks one step into the future while claiming to be
causal). The suite must pass the first and catch the second.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent('''
    import jax, jax.numpy as jnp
    from flax import nnx
    from seqmodels import scans
    from seqmodels.layers import Mixer, register
    from seqmodels.layers.common import Dense, expand_to

    @register("toy_ema")
    class ToyEMA(Mixer):
        causal = True
        def __init__(self, d_model, *, rngs):
            self.d_model = d_model
            self.logit = nnx.Param(jnp.zeros((d_model,)))
            self.proj = Dense(d_model, d_model, rngs=rngs)
        def _coeffs(self, x):
            a = expand_to(jax.nn.sigmoid(self.logit[...]).astype(x.dtype), x.ndim)
            return a, (1 - a) * self.proj(x)
        def forward(self, x):
            a, b = self._coeffs(x)
            return scans.linear_scan(a, b)[0]
        def init_state(self, batch_size):
            return jnp.zeros((batch_size, self.d_model), jnp.float32)
        def forward_step(self, x_t, state):
            a, b = self._coeffs(x_t[:, None])
            h, state = scans.linear_scan(a, b, state)
            return h[:, 0], state

    @register("toy_leaky")
    class ToyLeaky(ToyEMA):
        def forward(self, x):
            nxt = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
            return super().forward(x + 0.5 * nxt)
''')


def test_new_mixer_joins_the_suite(tmp_path: Path):
    (tmp_path / "toy_mixers_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    suite = Path(__file__).with_name("test_mixer_conformance.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-p", "toy_mixers_plugin", "-k", "toy", "-q",
         "-p", "no:cacheprovider", "-rf"],
        capture_output=True, text=True, env=env, cwd=suite.parent.parent, timeout=600,
    )
    out = proc.stdout + proc.stderr
    failed = set(re.findall(r"^FAILED \S+::(\S+)", out, re.M))
    passed = int(re.search(r"(\d+) passed", out).group(1))
    assert passed >= 10, out
    assert failed, out
    assert all("toy_leaky" in t for t in failed), f"a correct mixer failed: {failed}\n{out}"
    assert any(t.startswith("test_causal_prefix_invariance") for t in failed), out
    assert any(t.startswith("test_step_equals_parallel") for t in failed), out

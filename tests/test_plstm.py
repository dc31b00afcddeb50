"""pLSTM: the official vectors (``plstm_1d.npz``, ``plstm_2d.npz``, ml-jku/plstm's torch
kernels in float64), and the layers: step == parallel with a carried and an initial
state, ``‖T‖₂ ≤ 1`` for random gate weights, the bias-only gates at init, the exclusive
read of the state, four orientations that really differ (the upstream non-fused layer
never flips y), P-mode and D-mode with both chiralities, and the image layer against a
float64 cell-by-cell recurrence."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from seqmodels.layers import plstm
from seqmodels.layers.plstm import PLSTM, PLSTM2D
from seqmodels.scans import reference as naive

D_MODEL = 16
SIGMOID_MINUS_4 = 1.0 / (1.0 + math.exp(4.0))     # σ(-4): upstream's vision source / mark bias
SIGMOID_MINUS_6 = 1.0 / (1.0 + math.exp(6.0))     # σ(-6): upstream's vision direct bias
TANH_5 = math.tanh(5.0)                           # λ = tanh(5 · 1): upstream's eigenvalue bias
# Jitted: eager scans compile every primitive one by one, which costs more than one program.
plstm_1d = jax.jit(plstm.plstm_1d, static_argnames=("qk_scale", "method"))
plstm_2d = jax.jit(plstm.plstm_2d, static_argnames=("reverse", "qk_scale", "method"))


# --------------------------------------------------------------------------- the official vectors


@pytest.fixture(scope="module")
def npz_1d(reference):
    return dict(np.load(reference / "plstm_1d.npz"))


@pytest.fixture(scope="module")
def npz_2d(reference):
    return dict(np.load(reference / "plstm_2d.npz"))


def arguments_1d(npz, dtype):
    """The npz's single-head layout with J axes -> ``plstm_1d``'s ``(B, L, H, ...)`` with H = 1.

    JQ = JK = JV = JO = 1 and JT = N = 2: ``Q, K`` (B, L, Dk, JQ|JK) -> (B, L, 1, Dk);
    ``V`` (B, L, Dv, JV) -> (B, L, 1, Dv); ``S0`` (B, L, JT, JK, JV) -> (B, L, 1, N);
    ``T0`` (B, L, JT, JT) -> (B, L, 1, N, N); ``M0`` (B, L, JO, JQ, JT) -> (B, L, 1, N);
    ``D0`` (B, L, JO, JQ, JK, JV) -> (B, L, 1); ``C_initial`` (B, Dk, Dv, JT) -> (B, 1, Dk, Dv, N).
    """
    assert npz["Q"].shape[-1] == npz["K"].shape[-1] == npz["V"].shape[-1] == 1
    assert npz["S0"].shape[-2:] == (1, 1) and npz["M0"].shape[2:4] == (1, 1) and npz["D0"].shape[2:] == (1,) * 4
    a = lambda name: jnp.asarray(npz[name], dtype)  # noqa: E731
    head = lambda arr: arr[:, :, None]               # noqa: E731  one head after (B, L)
    args = dict(q=head(a("Q")[..., 0]), k=head(a("K")[..., 0]), v=head(a("V")[..., 0]),
                source=head(a("S0")[..., 0, 0]), transition=head(a("T0")), mark=head(a("M0")[:, :, 0, 0]),
                direct=head(a("D0")[:, :, 0, 0, 0, 0]))
    return args, a("C_initial")[:, None]


def outputs_1d(h, C_last):
    """``plstm_1d``'s ``(B, L, 1, Dv)`` and ``(B, 1, Dk, Dv, N)`` -> the npz's ``Y``
    ``(B, L, Dv, JO)`` and ``C`` ``(B, Dk, Dv, JT)``."""
    return h[:, :, 0, :, None], C_last[:, 0]


def test_npz_1d_uses_the_default_scale(npz_1d):
    assert float(npz_1d["QK_scale"]) == pytest.approx(npz_1d["Q"].shape[2] ** -0.5, rel=1e-15)


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_plstm_1d_equals_reference_f64(npz_1d, x64, method):
    args, C_initial = arguments_1d(npz_1d, jnp.float64)
    h, C_last = outputs_1d(*plstm_1d(**args, method=method))
    assert h.dtype == jnp.float64
    assert_close(h, npz_1d["Y"], rtol=1e-10, name="Y")
    assert_close(C_last, npz_1d["C_last"], rtol=1e-10, name="C_last")
    h, C_last = outputs_1d(*plstm_1d(**args, initial_state=C_initial, method=method))
    assert_close(h, npz_1d["Y_with_C_initial"], rtol=1e-10, name="Y_with_C_initial")
    assert_close(C_last, npz_1d["C_last_with_C_initial"], rtol=1e-10, name="C_last_with_C_initial")


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_plstm_1d_equals_reference_f32(npz_1d, method):
    args, C_initial = arguments_1d(npz_1d, jnp.float32)
    h, C_last = outputs_1d(*plstm_1d(**args, method=method))
    assert h.dtype == jnp.float32 and C_last.dtype == jnp.float32
    assert_close(h, npz_1d["Y"], rtol=1e-5, name="Y")
    assert_close(C_last, npz_1d["C_last"], rtol=1e-5, name="C_last")
    h, C_last = outputs_1d(*plstm_1d(**args, initial_state=C_initial, method=method))
    assert_close(h, npz_1d["Y_with_C_initial"], rtol=1e-5, name="Y_with_C_initial")
    assert_close(C_last, npz_1d["C_last_with_C_initial"], rtol=1e-5, name="C_last_with_C_initial")


def test_plstm_1d_scalar_transition_equals_embedded_matrix_case(x64):
    """N = 1 (``linear_scan``) equals the same problem embedded in N = 2 (``matrix_scan``)
    with a second, disconnected slot: ``S = [s, 0]``, ``T = diag(λ, 0)``, ``M = [m, 0]``."""
    B, L, H, Dk, Dv = 2, 9, 2, 3, 4
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.normal(size=(B, L, H, Dk))) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(B, L, H, Dv)))
    s, m, d = (jnp.asarray(rng.uniform(size=(B, L, H, 1))) for _ in range(3))
    lam = jnp.asarray(rng.uniform(-1.0, 1.0, size=(B, L, H, 1)))
    C0 = jnp.asarray(rng.normal(size=(B, H, Dk, Dv, 1)))
    h1, C1 = plstm_1d(q, k, v, s, lam[..., None], m, d[..., 0], C0)
    pad = lambda a: jnp.concatenate([a, jnp.zeros_like(a)], axis=-1)  # noqa: E731
    T2 = pad(lam)[..., None] * jnp.eye(2, dtype=jnp.float64).reshape(1, 1, 1, 2, 2)
    h2, C2 = plstm_1d(q, k, v, pad(s), T2, pad(m), d[..., 0], pad(C0))
    assert_close(h1, h2, name="h")
    assert_close(C1, C2[..., :1], name="C_last")
    assert float(jnp.max(jnp.abs(C2[..., 1]))) == 0.0


def arguments_2d(npz, dtype):
    """``plstm_2d.npz`` (one head, J axes, JT = N = 2, other J's 1) -> ``plstm_2d``'s
    ``(B, X, Y, H, ...)`` with H = 1: ``Q, K, V`` (B, X, Y, D, 1) -> (B, X, Y, 1, D);
    ``S0_*`` (B, X, Y, JT, 1, 1) and ``M0_*`` (B, X, Y, 1, 1, JT) -> (B, X, Y, 1, N);
    ``T0_*`` (B, X, Y, JT, JT) -> (B, X, Y, 1, N, N); ``D0`` (B, X, Y, 1, 1, 1, 1) -> (B, X, Y, 1)."""
    a = lambda name: jnp.asarray(npz[name], dtype)  # noqa: E731
    head = lambda arr: arr[:, :, :, None]            # noqa: E731
    return dict(q=head(a("Q")[..., 0]), k=head(a("K")[..., 0]), v=head(a("V")[..., 0]),
                source_r=head(a("S0_r")[..., 0, 0]), source_d=head(a("S0_d")[..., 0, 0]),
                T_rl=head(a("T0_rl")), T_ru=head(a("T0_ru")), T_dl=head(a("T0_dl")), T_du=head(a("T0_du")),
                mark_l=head(a("M0_l")[:, :, :, 0, 0]), mark_u=head(a("M0_u")[:, :, :, 0, 0]),
                direct=head(a("D0")[..., 0, 0, 0, 0]))


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)])
def test_plstm_2d_equals_reference(npz_2d, x64, dtype, rtol):
    assert float(npz_2d["QK_scale"]) == pytest.approx(npz_2d["Q"].shape[3] ** -0.5, rel=1e-15)
    h = plstm_2d(**arguments_2d(npz_2d, dtype))
    assert h.dtype == dtype
    assert_close(h[:, :, :, 0, :, None], npz_2d["Y"], rtol=rtol, name="Y")


# --------------------------------------------------------------------------- helpers for the layers


def jitted(fn):
    """``fn(mixer, *arrays)`` compiled once per mixer structure, the parameters as inputs
    (eager layers compile every primitive, ``expm`` included, one by one)."""
    @partial(jax.jit, static_argnums=0)
    def run(graphdef, state, *args):
        return fn(nnx.merge(graphdef, state), *args)

    def call(mixer, *args):
        graphdef, state = nnx.split(mixer)
        return run(graphdef, state, *args)

    return call


apply = jitted(lambda mixer, x: mixer(x))
step = jitted(lambda mixer, x_t, state: mixer.step(x_t, state))
run_parallel = jitted(lambda mixer, x, state: mixer._run(x, state, "auto"))
transitions = jitted(lambda mixer, x: mixer.transition(x))
orientation_gates = jitted(lambda mixer, x: mixer._orientation_gates(x))


# Test data from numpy: eager jax.random compiles a program per shape.
def normal(shape, seed, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def inputs(shape, seed=0, scale=1.0):
    return normal(shape + (D_MODEL,), seed, scale)


def randomize(module, seed, scale):
    """Every parameter of ``module`` (gates: kernels and biases) drawn from N(0, scale²)."""
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    nnx.update(module, jax.tree.unflatten(treedef, [normal(p.shape, (seed, i), scale) for i, p in enumerate(leaves)]))


def randomize_transition(transition, seed):
    """Random eigenvalue gates small enough that ``tanh(5 ·)`` does not saturate, random
    rotation gates large enough that ``U_out, U_in`` are far from the identity."""
    randomize(transition.eigen, seed, scale=0.05)
    if transition.rotation is not None:
        randomize(transition.rotation, seed + 1, scale=0.5)


def spectral_norms(T):
    """Largest singular value of every ``(..., N, N)`` matrix, in float64."""
    return np.linalg.svd(np.asarray(T, np.float64), compute_uv=False)[..., 0]


def run_steps(mixer, x, state):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = step(mixer, x[:, t], state)
        ys.append(y_t)
    return jnp.stack(ys, axis=1), state


# --------------------------------------------------------------------------- plstm (1-D)


def test_step_equals_parallel_with_carried_and_initial_state():
    mixer = PLSTM(D_MODEL, num_heads=2, transition_dim=2, rngs=nnx.Rngs(0))
    for i, gate in enumerate((mixer.source, mixer.transition, mixer.mark, mixer.direct)):
        randomize(gate, seed=10 + i, scale=0.3)
    x = inputs((2, 12))
    y, C_last = run_parallel(mixer, x, mixer.init_state(2))                   # what forward computes
    # carried: the state after the first 5 steps continues into the last 7
    y_head, state = run_steps(mixer, x[:, :5], mixer.init_state(2))
    assert float(jnp.max(jnp.abs(state))) > 1e-2
    y_tail, state = run_steps(mixer, x[:, 5:], state)
    assert_close(jnp.concatenate([y_head, y_tail], axis=1), y, rtol=1e-5, name="y")
    assert_close(state, C_last, rtol=1e-5, name="final state")
    # a nonzero initial state: the parallel form from the same state
    C0 = normal(mixer.init_state(2).shape, seed=3)
    y_steps, _ = run_steps(mixer, x, C0)
    y_parallel, _ = run_parallel(mixer, x, C0)
    assert_close(y_steps, y_parallel, rtol=1e-5, name="y from C0")
    assert float(jnp.max(jnp.abs(y_parallel - y))) > 1e-2, "the initial state must matter"


def test_gates_at_init_are_upstream_vision_defaults():
    """Source and mark σ(-4) with input weights at 0, the direct gate σ(-6) and bias-only
    (no input weights to learn), ``T = tanh(5) I``."""
    mixer = PLSTM(D_MODEL, num_heads=2, transition_dim=3, rngs=nnx.Rngs(0))
    x = inputs((2, 7), scale=3.0)
    for gate, shape, value in ((mixer.source, (2, 7, 2, 3), SIGMOID_MINUS_4), (mixer.mark, (2, 7, 2, 3), SIGMOID_MINUS_4),
                               (mixer.direct, (2, 7, 2), SIGMOID_MINUS_6)):
        np.testing.assert_allclose(gate(x), np.full(shape, value), rtol=1e-6)
    assert mixer.source.kernel is not None and mixer.mark.kernel is not None and mixer.direct.kernel is None
    other = PLSTM(D_MODEL, num_heads=2, transition_dim=3, source_bias=-5, mark_bias=-3.0, direct_bias=-5,
                  rngs=nnx.Rngs(0))
    for gate, bias in ((other.source, -5.0), (other.mark, -3.0), (other.direct, -5.0)):
        np.testing.assert_allclose(gate.bias[...], np.full(gate.shape, bias))
    T = transitions(mixer, x)
    np.testing.assert_allclose(T, np.broadcast_to(TANH_5 * np.eye(3), (2, 7, 2, 3, 3)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("transition_dim", [1, 3])
def test_transitions_are_contractive_for_random_gate_weights(transition_dim):
    """``‖T_t‖₂ ≤ 1`` with random biases and input weights (not the init), and T is
    really a rotated, input-dependent matrix (the check is not vacuous)."""
    mixer = PLSTM(D_MODEL, num_heads=2, transition_dim=transition_dim, rngs=nnx.Rngs(0))
    randomize_transition(mixer.transition, seed=1)
    T = transitions(mixer, inputs((2, 7), seed=2))
    norms = spectral_norms(T)
    assert norms.max() <= 1.0 + 1e-6, norms.max()
    assert norms.max() > 0.9 and norms.min() < 0.9 and norms.std() > 1e-2
    if transition_dim > 1:
        off_diagonal = np.asarray(T) * (1.0 - np.eye(transition_dim))
        assert np.abs(off_diagonal).max() > 0.1


def test_output_reads_the_previous_state():
    """Exclusive scan: ``x_t`` reaches ``y_t`` only through the direct term. With ``q`` and
    the gates made input-independent, ``x_t`` enters only through ``k_t, v_t``; with the
    direct gate at 0, ``y_t`` does not move when ``x_t`` does (an inclusive scan would),
    ``y_{t+1}`` does, and with the direct gate back ``y_t`` does too."""
    mixer = PLSTM(D_MODEL, num_heads=2, transition_dim=2, rngs=nnx.Rngs(0))
    mixer.heads.query.kernel.set_value(jnp.zeros((D_MODEL, D_MODEL)))
    mixer.heads.query.bias.set_value(normal((D_MODEL,), seed=5))
    mixer.source.bias.set_value(jnp.zeros_like(mixer.source.bias[...]))
    mixer.mark.bias.set_value(jnp.zeros_like(mixer.mark.bias[...]))
    mixer.direct.bias.set_value(jnp.full_like(mixer.direct.bias[...], -1e4))   # σ = 0
    t = 4
    x = inputs((2, 9))
    x2 = x.at[:, t].add(inputs((2,), seed=1))
    diff = jnp.max(jnp.abs(apply(mixer, x2) - apply(mixer, x)), axis=(0, 2))
    assert float(jnp.max(diff[: t + 1])) <= 1e-6, diff
    assert float(jnp.min(diff[t + 1:])) > 1e-3, diff
    mixer.direct.bias.set_value(jnp.zeros_like(mixer.direct.bias[...]))
    diff = jnp.max(jnp.abs(apply(mixer, x2) - apply(mixer, x)), axis=(0, 2))
    assert float(jnp.max(diff[:t])) <= 1e-6 and float(diff[t]) > 1e-3, diff


# --------------------------------------------------------------------------- plstm2d


def keep_only_orientation(mixer, j, drop_right_sources=False):
    """Marks and sources of every orientation but ``j`` at σ(-1e4) = 0 (their propagated
    terms vanish: the marks read nothing, whatever the upstream split ``S_d = 1 - o S``
    leaves in the sources), orientation ``j``'s source and marks at σ(0) = 0.5 so that
    its propagation is visible; ``drop_right_sources`` also zeroes ``S_r`` (D-mode)."""
    def only_j(bias):
        return jnp.full(bias.shape, -1e4).at[..., j, :, :].set(0.0)

    source = only_j(mixer.source.bias[...])
    if drop_right_sources:
        source = source.at[0].set(-1e4)
    mixer.source.bias.set_value(source)
    mixer.mark.bias.set_value(only_j(mixer.mark.bias[...]))
    return mixer


def changed_cells(mixer, x, cell):
    """Which cells' outputs move when the input at ``cell`` moves: ``(X, Y)`` of max |Δy|."""
    x2 = x.at[:, cell[0], cell[1]].add(2.0)
    return np.asarray(jnp.max(jnp.abs(apply(mixer, x2) - apply(mixer, x)), axis=(0, 3)))


def assert_changes_exactly(diff, expected, what):
    assert diff[~expected].max(initial=0.0) <= 1e-6, f"{what}: cells outside the cone moved\n{diff}"
    assert diff[expected].min() > 1e-4, f"{what}: cells inside the cone did not move\n{diff}"


X, Y, CELL = 5, 7, (2, 3)                    # non-square grid, an interior cell


@pytest.mark.parametrize("mode", ["P", "D"])
def test_each_orientation_propagates_into_its_own_quadrant(mode):
    """Orientation ``j`` flips x if ``j & 1`` and y if ``j & 2``: a change at one cell
    reaches exactly the quadrant downstream of it. Upstream's non-fused layer never flips
    y, which makes orientations 2, 3 copies of 0, 1 -- this test fails on that."""
    xs, ys = np.arange(X)[:, None], np.arange(Y)[None, :]
    x = inputs((1, X, Y))
    outputs = []
    for j in range(4):
        mixer = keep_only_orientation(PLSTM2D(D_MODEL, num_heads=2, mode=mode, rngs=nnx.Rngs(0)), j)
        in_x = xs <= CELL[0] if j & 1 else xs >= CELL[0]
        in_y = ys <= CELL[1] if j & 2 else ys >= CELL[1]
        assert_changes_exactly(changed_cells(mixer, x, CELL), in_x & in_y, f"{mode} orientation {j}")
        outputs.append(apply(mixer, x))
    for a in range(4):
        for b in range(a):
            assert float(jnp.max(jnp.abs(outputs[a] - outputs[b]))) > 1e-3, (a, b)


def test_chiralities_route_differently():
    """D-mode without right sources: chirality "L" (``T_ru = T_×``) turns the down state
    right once, so a change reaches its column and the cells right of it and below;
    "R" (``T_dl = T_×``) has no right state to turn, so only the column below moves.
    With all gates at their (input-independent, equal) init, L and R give the same
    function -- each path's weight then depends only on its length -- so the plain
    comparison uses random gates, the same for both."""
    xs, ys = np.arange(X)[:, None], np.arange(Y)[None, :]
    x = inputs((1, X, Y))
    column = (xs == CELL[0]) & (ys >= CELL[1])
    right_and_below = (xs > CELL[0]) & (ys > CELL[1])
    y = {}
    for chirality, expected in (("L", column | right_and_below), ("R", column)):
        mixer = keep_only_orientation(PLSTM2D(D_MODEL, num_heads=2, mode="D", chirality=chirality,
                                              rngs=nnx.Rngs(0)), 0, drop_right_sources=True)
        assert_changes_exactly(changed_cells(mixer, x, CELL), expected, chirality)
        mixer = PLSTM2D(D_MODEL, num_heads=2, mode="D", chirality=chirality, rngs=nnx.Rngs(0))
        for i, name in enumerate(("source", "transition", "mark", "direct")):
            randomize(getattr(mixer, name), seed=30 + i, scale=0.3)
        y[chirality] = apply(mixer, x)
    assert float(jnp.max(jnp.abs(y["L"] - y["R"]))) > 1e-3


def test_p_and_d_modes_run_and_differ():
    x = inputs((1, X, Y))
    y = {mode: apply(PLSTM2D(D_MODEL, num_heads=2, mode=mode, rngs=nnx.Rngs(0)), x) for mode in "PD"}
    for out in y.values():
        assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.max(jnp.abs(y["P"] - y["D"]))) > 1e-3


def test_2d_gates_at_init_and_contractive_for_random_weights():
    """At init, per orientation ``j`` and head, with ``o = σ(linspace(-2, 2, heads))``,
    ``s = σ(-4)``, ``λ = tanh(5)``: P-mode, upstream split (N = 1): ``S_r = o s``,
    ``S_d = 1 - o s``, ``T_rl = T_ru = o λ``, ``T_dl = T_du = 1 - o λ``; P-mode, scaled
    split (N = 2): ``S_d = (1 - o) s``, ``T_dl = T_du = (1 - o) λ I``; D-mode ``S = M = s``,
    ``T = λ I`` (no ``T_dl`` for chirality L); the direct gate ``σ(-6)``. With random
    gates every transition has ``‖T‖ ≤ 1``, and the scaled P-mode's two transitions out
    of one incoming edge together too."""
    H = 4
    x = inputs((2, 3, 4), scale=3.0)
    o = np.broadcast_to(1.0 / (1.0 + np.exp(-np.linspace(-2.0, 2.0, H))), (2, 3, 4, H))
    close = partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
    mixers = {("P", "upstream", 1): PLSTM2D(D_MODEL, num_heads=H, rngs=nnx.Rngs(0)),
              ("P", "scaled", 2): PLSTM2D(D_MODEL, num_heads=H, transition_dim=2, pmode_split="scaled",
                                          rngs=nnx.Rngs(0)),
              ("D", None, 2): PLSTM2D(D_MODEL, num_heads=H, transition_dim=2, mode="D", rngs=nnx.Rngs(0))}
    for (mode, split, N), mixer in mixers.items():
        close(mixer.direct(x), np.full((2, 3, 4, H), SIGMOID_MINUS_6))
        eye = np.broadcast_to(TANH_5 * np.eye(N), (2, 3, 4, H, N, N))
        s = np.full((2, 3, 4, H, N), SIGMOID_MINUS_4)
        if split == "upstream":
            want_S_r, want_S_d = o[..., None] * s, 1 - o[..., None] * s
            want_T_r, want_T_d = o[..., None, None] * eye, 1 - o[..., None, None] * eye
        elif split == "scaled":
            want_S_r, want_S_d = o[..., None] * s, (1 - o[..., None]) * s
            want_T_r, want_T_d = o[..., None, None] * eye, (1 - o[..., None, None]) * eye
        else:
            want_S_r, want_S_d, want_T_r, want_T_d = s, s, eye, eye
        for S_r, S_d, T_rl, T_ru, T_dl, T_du, M_l, M_u in orientation_gates(mixer, x):
            for got, want in ((S_r, want_S_r), (S_d, want_S_d), (M_l, s), (M_u, s), (T_rl, want_T_r),
                              (T_ru, want_T_r), (T_du, want_T_d)):
                close(got, want)
            if mode == "P":
                close(T_dl, want_T_d)
            else:
                assert T_dl is None
    scaled, dmode = mixers[("P", "scaled", 2)], mixers[("D", None, 2)]
    for mixer in (scaled, dmode):
        randomize_transition(mixer.transition, seed=1)
    randomize(scaled.orientation, seed=2, scale=3.0)
    x = inputs((2, 3, 4), seed=4)
    for j, (_, _, T_rl, T_ru, T_dl, T_du, _, _) in enumerate(orientation_gates(scaled, x)):
        from_left, from_up = spectral_norms(T_rl) + spectral_norms(T_dl), spectral_norms(T_ru) + spectral_norms(T_du)
        assert max(from_left.max(), from_up.max()) <= 1.0 + 1e-6, j
        assert from_left.max() > 0.9 and spectral_norms(T_rl).std() > 1e-2, j
    for gates in orientation_gates(dmode, x):
        norms = np.concatenate([spectral_norms(T).ravel() for T in gates[2:6] if T is not None])
        assert norms.max() <= 1.0 + 1e-6 and norms.max() > 0.9 and norms.std() > 1e-2


def test_upstream_split_needs_scalar_transitions():
    with pytest.raises(ValueError, match="pmode_split='upstream'.*transition_dim=1; got transition_dim=2"):
        PLSTM2D(D_MODEL, transition_dim=2, rngs=nnx.Rngs(0))
    PLSTM2D(D_MODEL, transition_dim=2, mode="D", rngs=nnx.Rngs(0))   # D-mode has no split


def naive_image_layer(mixer, x):
    """The image layer from its own gate values by the module docstring's formulas, with
    the float64 cell-by-cell grid recurrence (``scans.reference.grid_scan``, eager: its
    unrolled loop compiles slower than it runs) per orientation."""
    H, N, O = mixer.heads.num_heads, mixer.transition_dim, 4
    q, k, v = mixer.heads.qkv(x)                                                  # (B, X, Y, H, D)
    scale = q.shape[-1] ** -0.5
    mark, T = mixer.mark(x), transitions(mixer, x)
    if mixer.mode == "P":
        S, o = mixer.source(x), mixer.orientation(x)                              # (.., O, H, N), (.., O, H)
        T = T.reshape(T.shape[:3] + (O, H, N, N))
        gates = []
        for j in range(O):
            o_S, o_T, S_j, T_j = o[..., j, :, None], o[..., j, :, None, None], S[..., j, :, :], T[..., j, :, :, :]
            if mixer.pmode_split == "upstream":
                S_d, T_d = 1 - o_S * S_j, 1 - o_T * T_j
            else:
                S_d, T_d = (1 - o_S) * S_j, (1 - o_T) * T_j
            gates.append((o_S * S_j, S_d, o_T * T_j, o_T * T_j, T_d, T_d, mark[..., j, :, :], mark[..., j, :, :]))
    else:
        S, T = mixer.source(x), T.reshape(T.shape[:3] + (3, O, H, N, N))         # (.., 2, O, H, N)
        gates = []
        for j in range(O):
            cross = T[..., 2, j, :, :, :]
            T_ru, T_dl = (cross, None) if mixer.chirality == "L" else (None, cross)
            gates.append((S[..., 0, j, :, :], S[..., 1, j, :, :], T[..., 0, j, :, :, :], T_ru, T_dl,
                          T[..., 1, j, :, :, :], mark[..., 0, j, :, :], mark[..., 1, j, :, :]))
    kv = jnp.einsum("bxyhd,bxyhe->bxyhde", k, v)
    qk = jnp.einsum("bxyhd,bxyhd->bxyh", q, k)
    h = scale * (mixer.direct(x) * qk)[..., None] * v
    for j, (S_r, S_d, T_rl, T_ru, T_dl, T_du, M_l, M_u) in enumerate(gates):
        b_r = jnp.einsum("bxyhde,bxyhn->bxyhden", kv, S_r)
        b_d = jnp.einsum("bxyhde,bxyhn->bxyhden", kv, S_d)
        Ts = [None if t is None else t[:, :, :, :, None, None] for t in (T_rl, T_ru, T_dl, T_du)]
        (c_left, c_up), _ = naive.grid_scan(b_r, b_d, *Ts, reverse=(bool(j & 1), bool(j & 2)), exclusive=True)
        h = h + scale * (jnp.einsum("bxyhd,bxyhn,bxyhden->bxyhe", q, M_l, c_left)
                         + jnp.einsum("bxyhd,bxyhn,bxyhden->bxyhe", q, M_u, c_up))
    return mixer.heads.output(h, x.dtype)


@pytest.mark.parametrize("mode,chirality,transition_dim,pmode_split,method",
                         [("P", "L", 1, "upstream", "auto"), ("P", "L", 2, "scaled", "auto"),
                          ("D", "R", 1, "upstream", "auto"), ("D", "L", 1, "upstream", "factorized")])
def test_image_layer_equals_cell_by_cell_recurrence(x64, mode, chirality, transition_dim, pmode_split, method):
    """The fused wavefront (``auto``) and the per-cell-state path (``factorized``)."""
    mixer = PLSTM2D(D_MODEL, num_heads=2, transition_dim=transition_dim, mode=mode, chirality=chirality,
                    pmode_split=pmode_split, method=method, rngs=nnx.Rngs(0))
    for i, name in enumerate(("source", "transition", "mark", "direct", "orientation")):
        if hasattr(mixer, name):
            randomize(getattr(mixer, name), seed=20 + i, scale=0.3)
    x = inputs((1, 3, 4)).astype(jnp.float64)
    y = apply(mixer, x)
    assert y.dtype == jnp.float64
    assert_close(y, naive_image_layer(mixer, x), rtol=1e-10, name=f"{mode}-mode")


def compiled_gradient_peak(mixer, x):
    """XLA's peak-memory estimate (temporaries + arguments + outputs) of the gradient of
    ``mean(y²)`` with respect to the whole layer state, compiled and not run."""
    graphdef, state = nnx.split(mixer)
    grad = jax.grad(lambda state, x: jnp.mean(nnx.merge(graphdef, state)(x) ** 2))
    stats = jax.jit(grad).lower(state, x).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def test_auto_backward_keeps_no_state_per_cell():
    """``auto`` is the fused wavefront: its compiled forward+backward peak is a fraction of
    the per-cell-state path's, which keeps ``(B, X, Y, Dk, Dv)`` arrays several times per
    orientation (``benchmarks/plstm2d.py``: 2.38 GiB against 195 GiB at 64 × 64, B = 8, d = 128)."""
    x = normal((1, 8, 8, D_MODEL), 0, 1.0)
    fused = compiled_gradient_peak(PLSTM2D(D_MODEL, rngs=nnx.Rngs(0)), x)
    old = compiled_gradient_peak(PLSTM2D(D_MODEL, method="wavefront", rngs=nnx.Rngs(0)), x)
    assert 4 * fused < old, (fused, old)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("cls,options,match", [
    (PLSTM, {"num_heads": 0}, "num_heads"),
    (PLSTM, {"num_heads": 3}, "num_heads"),
    (PLSTM, {"transition_dim": 0}, "transition_dim"),
    (PLSTM2D, {"mode": "X"}, "mode"),
    (PLSTM2D, {"chirality": "C"}, "chirality"),
    (PLSTM2D, {"transition_dim": 2.0}, "transition_dim"),
    (PLSTM2D, {"pmode_split": "half"}, "pmode_split"),
    (PLSTM2D, {"segment_size": 0}, "segment_size"),
    (PLSTM2D, {"method": "tiled"}, "method"),
    (PLSTM, {"source_bias": float("nan")}, "source_bias"),
    (PLSTM2D, {"direct_bias": "-6"}, "direct_bias"),
])
def test_bad_options_raise_naming_the_option(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(D_MODEL, rngs=nnx.Rngs(0), **options)


def test_bad_methods_raise_naming_the_method():
    """The scans check ``method`` when the layer first runs (traced here, not executed)."""
    with pytest.raises(ValueError, match="method"):
        apply(PLSTM(D_MODEL, num_heads=2, transition_dim=1, method="wavefront", rngs=nnx.Rngs(0)), inputs((1, 3)))
    with pytest.raises(ValueError, match="method"):
        apply(PLSTM2D(D_MODEL, method="sequential", rngs=nnx.Rngs(0)), inputs((1, 2, 3)))
    with pytest.raises(ValueError, match="factorized"):                      # P-mode couples the states
        apply(PLSTM2D(D_MODEL, mode="P", method="factorized", rngs=nnx.Rngs(0)), inputs((1, 2, 3)))

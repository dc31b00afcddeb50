"""ConvS5 against NVlabs/ConvSSM's apply_convSSM vectors, recurrent == parallel, and the
video backbone's frame-by-frame rollout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import relative_error
from seqmodels.layers.common import SSMParam
from seqmodels.layers.convs5 import ConvS5, apply_convssm
from seqmodels.models import SequenceModel, VideoModel
from seqmodels.models.video import rollout

# The reference is float32 (it casts to complex64 itself): atol 1e-5 relative to max|y|.
F32_TOL = 1e-5


def time_major(a):
    return jnp.moveaxis(jnp.asarray(a), 0, 1)  # (L, B, ...) <-> (B, L, ...)


def scan_steps(mixer, x, state=None):
    """All outputs of ``mixer.step`` over the frames of x, inside one jit."""
    graphdef, params = nnx.split(mixer)

    @jax.jit
    def run(params, x, state):
        m = nnx.merge(graphdef, params)

        def body(h, x_t):
            y_t, h = m.step(x_t, h)
            return h, y_t

        h0 = m.init_state(x.shape[0], x.shape[2:4]) if state is None else state
        h_last, ys = jax.lax.scan(body, h0, jnp.moveaxis(x, 1, 0))
        return jnp.moveaxis(ys, 0, 1), h_last

    return run(params, x, state)


def reference_layer(d):
    """A ConvS5 layer holding the reference's Λ, B̃ and Δ and C̃, without D or activation."""
    P, U, k = 4, 3, 3
    m = ConvS5(U, state_size=2 * P, blocks=1, clip_eigs=False, kernel_b=k, kernel_c=k, kernel_d=None,
               activation="none", rngs=nnx.Rngs(0))
    m.A.Lambda_re[...] = jnp.asarray(d["Lambda"].real)
    m.A.Lambda_im[...] = jnp.asarray(d["Lambda"].imag)
    m.A.log_step[...] = jnp.log(jnp.asarray(d["step"]))
    b_tilde = d["B_tilde"].reshape(P, U, k, k).transpose(2, 3, 1, 0)  # (P, U·k·k) -> HWIO
    m.B[...] = jnp.stack([b_tilde.real, b_tilde.imag], axis=-1)
    m.C[...] = jnp.stack([d["C_tilde"].real, d["C_tilde"].imag], axis=-1)
    return m


@pytest.mark.parametrize("method", ["sequential", "associative"])
@pytest.mark.parametrize("x0", [False, True], ids=["zero_state", "x0"])
def test_apply_convssm_equals_reference(reference, method, x0):
    d = np.load(reference / "convs5.npz")
    suffix = "_x0" if x0 else ""
    y, x_last = apply_convssm(jnp.asarray(d["A_bar"]), jnp.asarray(d["B_bar"]), jnp.asarray(d["C_tilde"]),
                              time_major(d["us"]), h0=jnp.asarray(d["x0"]) if x0 else None, method=method)
    for kind in ("parallel", "sequential"):
        assert relative_error(time_major(y), d[f"ys_{kind}{suffix}"]) <= F32_TOL
        assert relative_error(x_last, d[f"x_last_{kind}{suffix}"]) <= F32_TOL


def test_layer_equals_reference(reference):
    """Parameters -> discretization -> convolutions and scan, parallel and frame by frame."""
    d = np.load(reference / "convs5.npz")
    m = reference_layer(d)
    lambda_bar, b_bar, _ = m.discretized()
    assert relative_error(lambda_bar, d["A_bar"]) <= F32_TOL
    assert relative_error(b_bar, d["B_bar"]) <= F32_TOL
    us = time_major(d["us"])
    assert relative_error(time_major(m(us)), d["ys_parallel"]) <= F32_TOL
    ys, x_last = scan_steps(m, us, jnp.asarray(d["x0"]))
    assert relative_error(time_major(ys), d["ys_sequential_x0"]) <= F32_TOL
    assert relative_error(x_last, d["x_last_sequential_x0"]) <= F32_TOL


def test_step_equals_scan_float64(x64):
    m = ConvS5(4, state_size=8, method="chunked", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 1000, 3, 4, 4), jnp.float64)
    y = nnx.jit(lambda m, x: m(x))(m, x)
    assert y.dtype == jnp.float64 and m.init_state(1).dtype == jnp.complex128
    assert relative_error(scan_steps(m, x)[0], y) <= 1e-9


def test_step_equals_scan_float32():
    m = ConvS5(4, state_size=8, method="chunked", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 1000, 3, 4, 4))
    assert relative_error(scan_steps(m, x)[0], nnx.jit(lambda m, x: m(x))(m, x)) <= 1e-4


def test_parameters_and_state():
    m = ConvS5(6, state_size=8, blocks=2, kernel_b=3, kernel_c=5, rngs=nnx.Rngs(0))
    ssm_paths = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(m, SSMParam))}
    assert ssm_paths == {"A/Lambda_re", "A/Lambda_im", "A/log_step", "B"}
    assert type(m.C) is nnx.Param and type(m.D) is nnx.Param
    assert m.B.shape == (3, 3, 6, 4, 2) and m.C.shape == (5, 5, 4, 6, 2) and m.D.shape == (3, 3, 6, 6)
    for p in jax.tree.leaves(nnx.state(m, nnx.Param)):
        assert p.dtype == jnp.float32  # no complex parameters
    assert m.init_state(2).shape == (2, 1, 1, 4)                 # broadcasts over any frame size
    assert m.init_state(2, (5, 7)).shape == (2, 5, 7, 4)
    x_t = jnp.ones((2, 5, 7, 6))
    _, state = m.step(x_t, m.init_state(2))
    assert state.shape == (2, 5, 7, 4) and state.dtype == jnp.complex64
    with pytest.raises(ValueError, match="state must broadcast"):
        m.step(x_t, m.init_state(2, (4, 7)))


def test_clip_eigs_is_on_by_default():
    m = ConvS5(4, state_size=8, rngs=nnx.Rngs(0))
    m.A.Lambda_re[...] = jnp.full(4, 0.3)
    assert bool(jnp.all(jnp.real(m.A.eigenvalues()) <= -1e-4))
    assert bool(jnp.all(jnp.abs(m.discretized()[0]) < 1))


@pytest.mark.parametrize("timescale", [1.0, 300 / 16])
def test_timescale_scales_the_step_range(timescale):
    """log Δ is uniform in [log(timescale·dt_min), log(timescale·dt_max)] (default: the paper's)."""
    m = ConvS5(2, state_size=512, dt_min=1e-3, dt_max=1e-1, timescale=timescale, rngs=nnx.Rngs(0))
    steps = np.asarray(m.A.steps())
    low, high = timescale * 1e-3, timescale * 1e-1
    assert steps.min() >= low * (1 - 1e-6) and steps.max() <= high * (1 + 1e-6)
    assert steps.min() < 1.2 * low and steps.max() > high / 1.2  # 256 draws fill the range
    assert abs(np.mean(np.log(steps)) - np.log(np.sqrt(low * high))) < 0.3


def test_timescale_is_validated():
    with pytest.raises(ValueError, match="timescale.*0"):
        ConvS5(2, state_size=4, timescale=0.0, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------------------
# VideoModel
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video():
    model = VideoModel(in_channels=2, d_model=8, n_layers=2, n_down=1, mixer_options={"state_size": 8},
                       rngs=nnx.Rngs(0))
    frames = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 8, 6, 2))
    return model, frames, nnx.jit(lambda m, x: m(x))(model, frames)


def test_video_teacher_forced_steps_equal_parallel(video):
    model, frames, y = video
    assert y.shape == frames.shape and y.dtype == jnp.float32
    step = nnx.jit(lambda m, f, s: m.step(f, s))
    state, preds = model.init_state(2), []
    for t in range(frames.shape[1]):
        pred, state = step(model, frames[:, t], state)
        preds.append(pred)
    assert relative_error(jnp.stack(preds, axis=1), y) <= 1e-5
    assert [s.shape for s in state] == [(2, 4, 3, 4)] * 2  # latent grid 8×6 / 2


def test_video_rollout(video):
    model, frames, y = video
    out = rollout(model, frames[:, :4], 3)
    assert out.shape == (2, 3, 8, 6, 2)
    assert relative_error(out[:, 0], y[:, 3]) <= 1e-5  # the first generated frame is teacher-forced
    assert bool(jnp.all(jnp.isfinite(out)))


def test_video_model_checks_its_inputs(video):
    model, frames, _ = video
    with pytest.raises(ValueError, match="divisible by 2\\*\\*n_down"):
        model(frames[:, :, :7])
    with pytest.raises(ValueError, match="in_channels=2"):
        model(frames[..., :1])
    with pytest.raises(ValueError, match="not a video mixer"):
        VideoModel(in_channels=1, mixer="s5", rngs=nnx.Rngs(0))


def blank_videos(batch=2, frames=3, size=16):
    """Videos of one 2×2 square on a blank (exactly zero) background, as the shape tasks give."""
    v = np.zeros((batch, frames, size, size, 1), np.float32)
    for t in range(frames):
        v[:, t, t:t + 2, t:t + 2] = 1.0
    return jnp.asarray(v)


@pytest.mark.parametrize("kind", ["video", "sequence"])
def test_first_gradient_is_moderate_on_blank_backgrounds(kind):
    """Blank pixels must not reach a LayerNorm as exactly-zero vectors (gain 1/sqrt(eps) per
    norm): with zero-initialized input biases this first gradient norm was 4e10 (video) and
    8e12 (sequence) here, 1e12 for configs/convs5.py; now it is O(1) (0.7 and 5.6)."""
    frames = blank_videos()
    options = {"state_size": 8}
    if kind == "video":
        model = VideoModel(in_channels=1, d_model=8, n_layers=2, n_down=1, mixer_options=options, rngs=nnx.Rngs(0))
        loss = lambda m: jnp.mean((m(frames)[:, :-1] - frames[:, 1:]) ** 2)  # noqa: E731
    else:
        model = SequenceModel("convs5", d_model=8, n_layers=2, output_dim=3, input_dim=1, pooling="mean",
                              mixer_options=options, rngs=nnx.Rngs(0))
        loss = lambda m: -jnp.mean(jax.nn.log_softmax(m(frames))[:, 0])  # noqa: E731
    grads = nnx.grad(loss)(model)
    norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))))
    assert np.isfinite(norm) and norm < 1e2, norm


# ----------------------------------------------------------------------------------------
# The official output paths, against hand-written per-frame references
# ----------------------------------------------------------------------------------------


def reference_group_norm(x, groups, scale, bias, eps=1e-6):
    """GroupNorm of each frame of x (..., H, W, C), written out."""
    *lead, H, W, C = x.shape
    g = x.reshape(*lead, H, W, groups, C // groups)
    mean = g.mean(axis=(-4, -3, -1), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(-4, -3, -1), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def reference_conv(x, kernel, bias=0.0):
    """'SAME' cross-correlation of every frame of x (B, T, H, W, Cin) with kernel (k, k, Cin, Cout), as loops."""
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p), (0, 0)])
    out = np.zeros(x.shape[:-1] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += np.einsum("bthwc,cd->bthwd", xp[:, :, i:i + x.shape[2], j:j + x.shape[3]], kernel[i, j])
    return out + bias


def gelu(x):
    return np.asarray(jax.nn.gelu(jnp.asarray(x)))


@pytest.mark.parametrize("output_path", ["standard", "resnet"])
def test_output_paths_equal_hand_written_reference(output_path):
    m = ConvS5(4, state_size=8, output_path=output_path, groups=2, rngs=nnx.Rngs(0))
    u = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 4, 3, 4))
    for norm in (m.output_norm, *(() if m.resnet is None else (m.resnet.norm1, m.resnet.norm2))):
        if norm is not None:  # non-trivial affine parameters
            norm = norm.norm
            norm.scale[...] = 1.0 + 0.1 * jax.random.normal(jax.random.PRNGKey(4), (4,))
            norm.bias[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(5), (4,))
    lambda_bar, b_bar, c_tilde = m.discretized()
    y_ssm, _ = apply_convssm(lambda_bar, b_bar, c_tilde, u)
    y_ssm, un = np.asarray(y_ssm, np.float64), np.asarray(u, np.float64)
    par = lambda p: np.asarray(p[...], np.float64)  # noqa: E731
    if output_path == "standard":
        assert m.resnet is None and m.D is not None
        pre = y_ssm + reference_conv(un, par(m.D))
        want = gelu(reference_group_norm(pre, 2, par(m.output_norm.norm.scale), par(m.output_norm.norm.bias)))
    else:
        r = m.resnet
        assert m.D is None and m.output_norm is None
        h = gelu(reference_group_norm(y_ssm, 2, par(r.norm1.norm.scale), par(r.norm1.norm.bias)))
        h = reference_conv(h, par(r.conv1.kernel), par(r.conv1.bias))
        h = gelu(reference_group_norm(h, 2, par(r.norm2.norm.scale), par(r.norm2.norm.bias)))
        h = reference_conv(h, par(r.conv2.kernel), par(r.conv2.bias))
        want = gelu(y_ssm + h)
    y = m(u)
    assert y.shape == u.shape and bool(jnp.all(jnp.isfinite(y)))
    assert relative_error(y, want) <= 1e-5
    assert relative_error(scan_steps(m, u)[0], y) <= 1e-5  # per-frame norms: step == parallel


def test_output_path_options_are_checked():
    with pytest.raises(ValueError, match="groups=3 must divide d_model=4"):
        ConvS5(4, state_size=8, output_path="standard", groups=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_d"):
        ConvS5(4, state_size=8, output_path="resnet", kernel_d=None, groups=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="output_path"):
        ConvS5(4, state_size=8, output_path="glu", rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------------------
# VideoModel options: bounded predictions, the official post-norm block
# ----------------------------------------------------------------------------------------


def reference_layer_norm(x, norm):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])


def test_post_norm_block_equals_hand_written_reference():
    model = VideoModel(in_channels=1, d_model=8, n_layers=1, n_down=1, norm_position="post",
                       mixer_options={"state_size": 8}, rngs=nnx.Rngs(0))
    block = model.blocks[0]
    for norm in (block.mixer_norm, block.mlp_norm):
        norm.scale[...] = 1.0 + 0.1 * jax.random.normal(jax.random.PRNGKey(6), (8,))
        norm.bias[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(7), (8,))
    z = jax.random.normal(jax.random.PRNGKey(8), (2, 5, 4, 4, 8))
    zn = np.asarray(z, np.float64)
    z1 = reference_layer_norm(zn + np.asarray(block.mixer(z), np.float64), block.mixer_norm)
    up, down = block.mlp.up, block.mlp.down
    hidden = gelu(z1 @ np.asarray(up.kernel[...]) + np.asarray(up.bias[...]))
    want = reference_layer_norm(z1 + hidden @ np.asarray(down.kernel[...]) + np.asarray(down.bias[...]),
                                block.mlp_norm)
    y = block(z)
    assert y.shape == z.shape and bool(jnp.all(jnp.isfinite(y)))
    assert relative_error(y, want) <= 1e-5
    assert model.final_norm is None  # the last block's output is already normalized


@pytest.mark.parametrize("output,low,high", [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)])
def test_bounded_predictions(output, low, high):
    model = VideoModel(in_channels=1, d_model=8, n_layers=1, n_down=1, norm_position="post", output=output,
                       mixer_options={"state_size": 8}, rngs=nnx.Rngs(0))
    model.head.kernel[...] = 30.0 * model.head.kernel[...]  # logits far outside the bounds
    frames = 5.0 * jax.random.normal(jax.random.PRNGKey(9), (2, 4, 8, 8, 1))
    y = nnx.jit(lambda m, x: m(x))(model, frames)
    assert float(y.min()) >= low and float(y.max()) <= high
    assert float(y.min()) < low + 0.2 and float(y.max()) > high - 0.2  # the bound is what limits them
    assert relative_error(rollout(model, frames[:, :2], 3)[:, 0], y[:, 1]) <= 1e-5  # step: same head
    logits = VideoModel(in_channels=1, d_model=8, n_layers=1, n_down=1, norm_position="post",
                        mixer_options={"state_size": 8}, rngs=nnx.Rngs(0))
    logits.head.kernel[...] = model.head.kernel[...]
    squash = jax.nn.sigmoid if output == "sigmoid" else jnp.tanh
    assert relative_error(squash(logits(frames)), y) <= 1e-5  # "linear" keeps the old unbounded head


def test_bounded_head_fits_the_video_tasks():
    """The sigmoid head's range covers the frames of the library's next-frame task ([0, 1])."""
    from seqmodels.tasks import build_task
    batch = build_task("bouncing_shapes", frames=4, size=8).batch("train", 0, 4, 0)
    assert batch["inputs"].min() >= 0.0 and batch["inputs"].max() <= 1.0
    assert batch["targets"].min() >= 0.0 and batch["targets"].max() <= 1.0

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring `Conv2DBackpropInput` in JAX
#
# `jax_conv_bpi` brings MindSpore's `ops.Conv2DBackpropInput` (a.k.a. `Conv2DTranspose`) to JAX.
# The op is the gradient of a 2-D convolution with respect to its input `x`:
#
# $$\mathrm{out} = \frac{\partial}{\partial x}\,\big\langle \mathrm{dout},\ \mathrm{conv2d}(\mathrm{pad}(x), w)\big\rangle,
# \qquad x.\mathrm{shape} = \texttt{input\_size}.$$
#
# Each `dout` pixel `(ho, wo)` is spread over the window of the padded input that produced it in the
# forward convolution, weighted by the kernel; the result is cropped to `input_size`. This notebook
# looks at that picture from several sides: MindSpore's documentation example, the pad modes, why
# `input_size` must be given, the checkerboard of strided upsampling, the two data layouts,
# gradients, transformations and speed.
#
# Pictures are only shown, never written, unless the environment variable `JCB_NOTEBOOK_FIGURES`
# names a folder (`make notebook-png` sets it to `docs/img`).

# %%
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax
from matplotlib.patches import Rectangle

import jax_conv_bpi as jcb

FIGURES = os.environ.get("JCB_NOTEBOOK_FIGURES")


def save(fig, name):
    """Write ``fig`` as ``<JCB_NOTEBOOK_FIGURES>/<name>.png`` when that variable is set."""
    if FIGURES:
        Path(FIGURES).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(FIGURES) / f"{name}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})


print("jax", jax.__version__, "| jax_conv_bpi", jcb.__version__, "|", jax.devices()[0].platform.upper())

# %% [markdown]
# ## 1. MindSpore's documentation example
#
# MindSpore documents the op with `dout = ones(10, 32, 30, 30)`, `weight = ones(32, 32, 3, 3)` and
# `input_size = (10, 32, 32, 32)`, in the default `valid` mode. The class takes MindSpore's constructor
# arguments; the functional form takes the same attributes as keywords. With all-ones inputs, an output
# pixel is `32` (the `dout` channels) times the number of 3x3 windows that cover it: 1 in a corner,
# 9 in the interior, hence `288`.

# %%
dout = jnp.ones((10, 32, 30, 30), jnp.float32)
weight = jnp.ones((32, 32, 3, 3), jnp.float32)
input_size = (10, 32, 32, 32)

op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
out = op(dout, weight, input_size)
print(out.shape, out.dtype)
print(np.asarray(out[0, 0, :4, :4]))

# Windows covering each row: 1, 2, 3, 3, ..., 3, 2, 1; a pixel's count is the product of its row and column counts.
cover = np.convolve(np.ones(30), np.ones(3))
np.testing.assert_array_equal(np.asarray(out[0, 0]), 32 * np.outer(cover, cover))

# The same numbers from JAX's own autodiff of a plain lax convolution.
_, conv_vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, weight, (1, 1), "VALID"), jnp.zeros(input_size))
np.testing.assert_allclose(out, conv_vjp(dout)[0], rtol=1e-6)

# %% [markdown]
# ## 2. Pad modes and `pad_list`: which input pixels receive which `dout` pixels
#
# In the forward convolution, `dout` pixel `(ho, wo)` reads the padded rows `ho*s ... ho*s + ek - 1`
# (`ek = (k-1)*d + 1`), i.e. input rows `ho*s - top ...`. The input gradient sends `dout[ho, wo]` back to
# exactly that window; the parts of a window that fall on padding are cut off. The padding per mode
# (docs/differences.md, "What it computes"):
#
# * `valid`: none, so the windows start at the top-left pixel;
# * `same`: `dout` has `ceil(S/s)` pixels and `need = max(0, (ceil(S/s)-1)*s + ek - S)` rows are added,
#   `need // 2` before and the rest after;
# * `pad`: `pad` as given, an int or `(top, bottom, left, right)`; a `pad_list` whose entries are all
#   `>= 0` replaces it (MindSpore's CPU behaviour; docs/differences.md, item 5).
#
# Below: an 8x8 input, a 3x3 kernel, stride 2. Grey hatched cells are padding; each input pixel shows how
# many `dout` pixels reach it (`ones` dout through a `ones` kernel, computed by the op itself); the red and
# blue squares are the windows of the first and the last `dout` pixel. The code checks that the op's
# output for a single non-zero `dout` pixel is exactly its window cropped to the input.

# %%
H = W = 8
K, STRIDE = 3, 2


def effective_padding(hw, k, s, pad_mode, pad=0, pad_list=None):
    """(top, bottom, left, right) padding, as docs/differences.md states it."""
    if pad_mode == "valid":
        return (0, 0, 0, 0)
    if pad_mode == "pad":
        if pad_list is not None and all(p >= 0 for p in pad_list):
            return tuple(pad_list)
        return (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    padding = []
    for size in hw:
        need = max(0, (-(-size // s) - 1) * s + k - size)
        padding += [need // 2, need - need // 2]
    return tuple(padding)


def window(ho, wo, padding, k=K, s=STRIDE):
    """Input rows and columns (ranges, possibly outside the input) read by dout pixel (ho, wo)."""
    top, left = ho * s - padding[0], wo * s - padding[2]
    return range(top, top + k), range(left, left + k)


def contributions(hw, dout_hw, k=K, s=STRIDE, **attrs):
    """How many dout pixels reach each input pixel: the op applied to ones."""
    d, w = jnp.ones((1, 1, *dout_hw), jnp.float32), jnp.ones((1, 1, k, k), jnp.float32)
    return np.asarray(jcb.conv2d_backprop_input(d, w, (1, 1, *hw), stride=s, **attrs))[0, 0]


def draw_grid(ax, counts, padding, windows=(), title="", vmax=None):
    """Input grid coloured by ``counts``, padding hatched, ``windows`` outlined."""
    h, w = counts.shape
    top, bottom, left, right = padding
    ax.imshow(counts, cmap="Greens", vmin=0, vmax=vmax or max(counts.max(), 1), extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    for y in range(-top, h + bottom):
        for x in range(-left, w + right):
            if not (0 <= y < h and 0 <= x < w):
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.85", edgecolor="0.6", hatch="//", lw=0.5))
            elif counts.size <= 400:
                ax.text(x, y, f"{counts[y, x]:g}", ha="center", va="center", fontsize=8)
    for (rows, cols), color in windows:
        ax.add_patch(
            Rectangle((cols[0] - 0.5, rows[0] - 0.5), len(cols), len(rows), fill=False, edgecolor=color, lw=2.5)
        )
    ax.set_xlim(-left - 0.5, w + right - 0.5)
    ax.set_ylim(h + bottom - 0.5, -top - 0.5)
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)


CASES = {
    "valid": dict(pad_mode="valid"),
    "same": dict(pad_mode="same"),
    "pad, pad=1": dict(pad_mode="pad", pad=1),
    "pad, pad=1, pad_list=(2, 1, 0, 1)": dict(pad_mode="pad", pad=1, pad_list=(2, 1, 0, 1)),
}

fig, axes = plt.subplots(1, len(CASES), figsize=(4.2 * len(CASES), 4.6))
for ax, (name, attrs) in zip(axes, CASES.items()):
    padding = effective_padding((H, W), K, STRIDE, **attrs)
    pad = padding if attrs["pad_mode"] == "pad" else 0
    dout_hw = jcb.conv2d_output_size((H, W), K, stride=STRIDE, pad_mode=attrs["pad_mode"], pad=pad)
    counts = contributions((H, W), dout_hw, **attrs)

    # Check the picture against the op: one non-zero dout pixel lights up exactly its cropped window,
    # and the counts are the number of windows covering each pixel.
    expected = np.zeros((H, W))
    for ho in range(dout_hw[0]):
        for wo in range(dout_hw[1]):
            rows, cols = window(ho, wo, padding)
            mask = np.zeros((H, W), bool)
            mask[max(rows[0], 0) : rows[-1] + 1, max(cols[0], 0) : cols[-1] + 1] = True
            one_hot = jnp.zeros((1, 1, *dout_hw), jnp.float32).at[0, 0, ho, wo].set(1.0)
            lit = np.asarray(
                jcb.conv2d_backprop_input(one_hot, jnp.ones((1, 1, K, K)), (1, 1, H, W), stride=STRIDE, **attrs)
            )
            np.testing.assert_array_equal(lit[0, 0] != 0, mask)
            expected += mask
    np.testing.assert_array_equal(counts, expected)

    last = (dout_hw[0] - 1, dout_hw[1] - 1)
    windows = [(window(0, 0, padding), "tab:red"), (window(*last, padding), "tab:blue")]
    draw_grid(ax, counts, padding, windows, f"{name}\npadding {padding}, dout {dout_hw[0]}x{dout_hw[1]}", vmax=4)
    print(f"{name:36s} padding {padding}  dout {dout_hw}")
fig.suptitle("8x8 input, 3x3 kernel, stride 2: windows of dout[0, 0] (red) and dout[-1, -1] (blue)", fontsize=11)
fig.tight_layout()
save(fig, "pad_modes")
plt.show()

# %% [markdown]
# In `valid` mode the last row and column are covered by no window: they come out as zeros. `same` mode pads
# one row *after* only (`need = 1`, the odd row goes bottom/right). `pad=1` pads evenly; with the `pad_list`
# the padding `(2, 1, 0, 1)` replaces `pad` and `dout` becomes 5x4.

# %% [markdown]
# ## 3. Why `input_size` is an argument: one `dout` size, several input sizes
#
# Under a stride, `floor((S + pads - ek) / s) + 1` maps several input sizes `S` to the same `dout` size, so
# the input size cannot be inferred from `dout`. `jcb.valid_input_sizes` lists them. For a 3x3 `dout`, a 3x3
# kernel and stride 2 in `valid` mode, both 7 and 8 work; with 8, the last row and column lie under no window
# and receive zeros (outlined in red). In `same` mode the padding itself depends on `input_size`, so the two
# valid sizes also shift where the windows fall. A size outside the range raises a `ValueError` that names
# the range (docs/differences.md, item 2).

# %%
AMBIGUOUS = {"valid": (3, 3), "same": (4, 4)}
fig, axes = plt.subplots(2, 2, figsize=(8.4, 8.6))
for row, (mode, dout_hw) in zip(axes, AMBIGUOUS.items()):
    heights, widths = jcb.valid_input_sizes(dout_hw, K, stride=STRIDE, pad_mode=mode)
    print(f"{mode}: dout {dout_hw} <- input heights {list(heights)}, widths {list(widths)}")
    assert list(heights) == [7, 8]
    for ax, size in zip(row, heights):
        padding = effective_padding((size, size), K, STRIDE, mode)
        counts = contributions((size, size), dout_hw, pad_mode=mode)
        windows = [(window(0, 0, padding), "tab:red"), (window(dout_hw[0] - 1, dout_hw[1] - 1, padding), "tab:blue")]
        draw_grid(
            ax,
            counts,
            padding,
            windows,
            f"{mode}: input {size}x{size}, dout {dout_hw[0]}x{dout_hw[1]}, padding {padding}",
            vmax=4,
        )
        zero_rows = [y for y in range(size) if not counts[y].any()]
        for y in zero_rows:
            ax.add_patch(Rectangle((-0.5, y - 0.5), size, 1, fill=False, edgecolor="red", lw=1.5, ls="--"))
            ax.add_patch(Rectangle((y - 0.5, -0.5), 1, size, fill=False, edgecolor="red", lw=1.5, ls="--"))
        if mode == "valid" and size == 8:
            assert zero_rows == [7] and not counts[:, 7].any()
fig.suptitle("Same dout, two valid input sizes (3x3 kernel, stride 2)", fontsize=11)
fig.tight_layout()
save(fig, "ambiguous_input_size")
plt.show()

try:
    jcb.conv2d_backprop_input(jnp.ones((1, 1, 3, 3)), jnp.ones((1, 1, 3, 3)), (1, 1, 9, 9), stride=2)
except ValueError as err:
    print("input_size (1, 1, 9, 9):", err)

# %% [markdown]
# ## 4. The checkerboard of stride-2 upsampling: kernel 3 vs kernel 4
#
# A transposed convolution is the usual learned 2x upsampling layer. With `ones` for `dout` and the weight,
# the output counts how many kernel taps land on each pixel. With stride 2 and kernel 4 (DCGAN's
# `k4 s2 p1`), every interior pixel gets exactly 2x2 = 4 taps. With kernel 3 (`k3 s2 p1`, CycleGAN's
# up-sampling), the overlap alternates between 1, 2 and 4: the kernel size is not a multiple of the stride,
# and the uneven overlap is the source of the well-known checkerboard artifacts.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.4))
for ax, k in zip(axes, (3, 4)):
    heights, _ = jcb.valid_input_sizes((8, 8), k, stride=2, pad_mode="pad", pad=1)
    size = 16
    assert size in heights
    counts = contributions((size, size), (8, 8), k=k, s=2, pad_mode="pad", pad=1)
    image = ax.imshow(counts, cmap="magma", vmin=0, vmax=4)
    interior = sorted({int(v) for v in counts[2:-2, 2:-2].ravel()})
    ax.set_title(f"kernel {k}, stride 2, pad 1: dout 8x8 -> {size}x{size}\ninterior values {interior}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if k == 4:
        assert set(counts[1:-1, 1:-1].ravel()) == {4.0}
    else:
        assert set(counts[2:-2, 2:-2].ravel()) == {1.0, 2.0, 4.0}
fig.colorbar(image, ax=axes, shrink=0.8, label="taps per output pixel")
fig.suptitle("ones dout through a ones kernel", fontsize=11)
save(fig, "checkerboard")
plt.show()

# %% [markdown]
# ## 5. NCHW and NHWC: the same numbers, transposed
#
# With `data_format="NHWC"`, `dout` and the output are `(N, H, W, C)`, `input_size` is given in NHWC order
# and the weight is `(C_out, KH, KW, C_in/group)` (MindSpore's NHWC kernel layout). MindSpore runs NHWC
# only on GPU; here it works everywhere (docs/differences.md, item 7).

# %%
key_d, key_w = jax.random.split(jax.random.key(0))
d_nchw = jax.random.normal(key_d, (2, 4, 4, 5), jnp.float32)
w_oihw = jax.random.normal(key_w, (4, 3, 3, 3), jnp.float32)
attrs = dict(stride=2, pad_mode="same")

x_nchw = jcb.conv2d_backprop_input(d_nchw, w_oihw, (2, 3, 8, 9), **attrs)
x_nhwc = jcb.conv2d_backprop_input(
    d_nchw.transpose(0, 2, 3, 1), w_oihw.transpose(0, 2, 3, 1), (2, 8, 9, 3), data_format="NHWC", **attrs
)
print("NCHW", x_nchw.shape, "| NHWC", x_nhwc.shape)
np.testing.assert_allclose(x_nhwc, x_nchw.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
print("max |NHWC - NCHW^T| =", float(jnp.max(jnp.abs(x_nhwc - x_nchw.transpose(0, 2, 3, 1)))))

# %% [markdown]
# ## 6. Gradients, checked numerically
#
# The op is bilinear in `(dout, weight)`, and its derivatives are the other members of the convolution
# family: the cotangent of `dout` is a forward `conv2d`, that of the weight a `conv2d_backprop_filter`
# (docs/design.md). `chex.assert_numerical_grads` compares forward- and reverse-mode derivatives up to
# second order with finite differences, in float64 on a strided, dilated, grouped, asymmetrically padded
# configuration.

# %%
with jax.enable_x64(True):
    key_d, key_w = jax.random.split(jax.random.key(1))
    d64 = jax.random.normal(key_d, (2, 4, 3, 3), jnp.float64)
    w64 = jax.random.normal(key_w, (4, 1, 2, 3), jnp.float64)
    config = dict(stride=(2, 1), dilation=(1, 2), pad_mode="pad", pad=(1, 0, 2, 1), group=2)

    def f(d, w):
        return jcb.conv2d_backprop_input(d, w, (2, 2, 6, 4), **config)

    chex.assert_numerical_grads(f, (d64, w64), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)

    # The cotangent of dout is the forward convolution: compare with MindSpore's Conv2D as a JAX op.
    ct = jax.random.normal(jax.random.key(2), (2, 2, 6, 4), jnp.float64)
    _, f_vjp = jax.vjp(f, d64, w64)
    np.testing.assert_allclose(f_vjp(ct)[0], jcb.conv2d(ct, w64, **config), rtol=1e-12)
print("gradient check passed (orders 1 and 2, forward and reverse mode)")

# %% [markdown]
# ## 7. `jit`, `vmap` and `grad` together
#
# Per-example gradients of a loss with respect to the weight: `grad` inside `vmap` inside `jit`. The
# jaxpr shows that every derivative stays inside the family of three primitives; the result matches the
# same computation written with JAX's autodiff of `lax.conv_general_dilated`.

# %%
kd, kw = jax.random.split(jax.random.key(3))
douts = jax.random.normal(kd, (5, 6, 8, 8), jnp.float32)  # 5 examples, each a (6, 8, 8) dout
w = jax.random.normal(kw, (6, 3, 4, 4), jnp.float32)
size = (1, 3, 16, 16)


def loss(w, d):
    x = jcb.conv2d_backprop_input(d[None], w, size, stride=2, pad_mode="pad", pad=1)
    return jnp.sum(jnp.tanh(x) ** 2)


def loss_lax(w, d):
    forward = functools.partial(lax.conv_general_dilated, rhs=w, window_strides=(2, 2), padding=((1, 1), (1, 1)))
    _, pullback = jax.vjp(lambda x: forward(x), jnp.zeros(size, d.dtype))
    return jnp.sum(jnp.tanh(pullback(d[None])[0]) ** 2)


per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))
grads = per_example(w, douts)
print("per-example weight gradients:", grads.shape)
np.testing.assert_allclose(
    grads, jax.jit(jax.vmap(jax.grad(loss_lax), in_axes=(None, 0)))(w, douts), rtol=2e-4, atol=2e-4
)

jaxpr = jax.make_jaxpr(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(w, douts)
conv_primitives = sorted({str(e.primitive) for e in jaxpr.eqns if "conv" in str(e.primitive)})
print("convolution primitives in the jaxpr:", conv_primitives)
assert "conv_general_dilated" not in conv_primitives

# %% [markdown]
# ## 8. How fast is it?
#
# A few layers of the benchmark suite (`shapes.json`: the forward convolution's `x = (N, C_in, H, W)`,
# weight `(C_out, C_in/group, KH, KW)`), with the batch cut down so the cell takes a few seconds. Each
# function is jitted, checked against the others, then timed (median of several runs). The baseline is
# `jax.vjp` of `lax.conv_general_dilated`; PyTorch's `F.conv_transpose2d` joins when PyTorch is installed.
# Timings depend on the machine and on its load; `make bench` runs the full suite.


# %%
def load_shapes():
    """The suite shipped with the package (``jax_conv_bpi/bench/shapes.json``)."""
    path = Path(jcb.__file__).parent / "bench" / "shapes.json"
    return {s["name"]: s for s in json.loads(path.read_text())}, path


SHAPES, source = load_shapes()
PICK = {"ms_doc_k3s1_valid": 4, "dcgan_g_k4s2p1_b32": 4, "dcgan_torgb_k4s2p1_b32": 4}  # name -> batch
print("shapes from", source)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def median_ms(fn, *args, budget_s=0.25, max_runs=25):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    while len(times) < 3 or (sum(times) < budget_s and len(times) < max_runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


results = {}
for name, batch in PICK.items():
    s = SHAPES[name]
    n, pad, stride, dil, g = batch, tuple(s["pad"]), tuple(s["stride"]), tuple(s["dilation"]), s["group"]
    x_shape = (n, s["C_in"], s["H"], s["W"])
    w_shape = (s["C_out"], s["C_in"] // g, s["KH"], s["KW"])
    ho, wo = jcb.conv2d_output_size(
        (s["H"], s["W"]), (s["KH"], s["KW"]), stride=stride, dilation=dil, pad_mode="pad", pad=pad
    )
    kd, kw = jax.random.split(jax.random.key(4))
    d = jax.random.normal(kd, (n, s["C_out"], ho, wo), jnp.float32)
    wt = jax.random.normal(kw, w_shape, jnp.float32)

    ours = jax.jit(
        functools.partial(
            jcb.conv2d_backprop_input, input_size=x_shape, stride=stride, pad_mode="pad", pad=pad, dilation=dil, group=g
        )
    )

    @jax.jit
    def baseline(d, wt, x_shape=x_shape, stride=stride, pad=pad, dil=dil, g=g):
        def forward(x):
            return lax.conv_general_dilated(x, wt, stride, (pad[:2], pad[2:]), rhs_dilation=dil, feature_group_count=g)

        return jax.vjp(forward, jnp.zeros(x_shape, d.dtype))[1](d)[0]

    reference = baseline(d, wt)
    np.testing.assert_allclose(ours(d, wt), reference, rtol=1e-4, atol=1e-3)
    timings = {
        "jax_conv_bpi": median_ms(ours, d, wt),
        "jax.vjp(lax.conv)": median_ms(baseline, d, wt),
    }
    # PyTorch pads symmetrically and gets the extra rows from output_padding.
    extra = s["H"] + pad[0] + pad[1] - ((ho - 1) * stride[0] + (s["KH"] - 1) * dil[0] + 1)
    if torch is not None and pad[0] == pad[1] == pad[2] == pad[3] and 0 <= extra < max(stride[0], dil[0]):
        td, tw = torch.from_numpy(np.array(d)), torch.from_numpy(np.array(wt))

        def torch_fn(a, b, stride=stride, pad=pad, dil=dil, g=g, extra=extra):
            with torch.no_grad():
                return F.conv_transpose2d(
                    a, b, stride=stride, padding=pad[0], output_padding=extra, dilation=dil, groups=g
                )

        np.testing.assert_allclose(torch_fn(td, tw).numpy(), reference, rtol=1e-4, atol=1e-3)
        timings["torch conv_transpose2d"] = median_ms(torch_fn, td, tw)
    results[f"{name}\nN={n}"] = timings
    print(f"{name} (N={n}): " + ", ".join(f"{k} {v:.2f} ms" for k, v in timings.items()))

# %%
impls = list(dict.fromkeys(k for t in results.values() for k in t))
fig, ax = plt.subplots(figsize=(8.5, 3.8))
width = 0.8 / len(impls)
for i, impl in enumerate(impls):
    values = [t.get(impl, np.nan) for t in results.values()]
    bars = ax.bar(np.arange(len(results)) + (i - (len(impls) - 1) / 2) * width, values, width, label=impl)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
ax.set_xticks(range(len(results)), list(results), fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("median time per call (ms, log scale)")
ax.set_title(
    f"Input gradient, float32, JAX jitted ({platform.machine()} {jax.devices()[0].platform.upper()}, {os.cpu_count()} cores)",
    fontsize=10,
)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Where to go next
#
# * docs/differences.md: every deliberate departure (error messages, case-insensitive
#   `pad_mode`, `pad_list` in the gradients, NHWC everywhere, dtypes, zero-size inputs).
# * docs/design.md: the layers of the package; the padding and output-size arithmetic drawn above is
#   derived in the docstring of `jax_conv_bpi/_src/base/arithmetic.py`, and how the three primitives'
#   transposes map into each other in that of `jax_conv_bpi/_src/op/primitives.py`.
# * docs/conv_transpose.md: the same operator for 1-D and 3-D (and 2-D) in lax's vocabulary, with groups,
#   PyTorch's `output_padding` rule and channels-last layouts.

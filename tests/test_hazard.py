"""Strided + dilated shapes on which XLA CPU's own autodiff aborts the process.

``jax.vjp`` of ``lax.conv_general_dilated`` w.r.t. its input lowers to an
lhs-dilated convolution; for some strided *and* dilated geometries (input
(1, 2, 4, 19), weight (1, 2, 2, 5), stride (2, 3), dilation (1, 3), pad 1)
XLA CPU's rewrite of that convolution kills the process with SIGABRT. Our CPU
lowering never uses lhs dilation. This runs those shapes through the op, its
input gradient and ``jax.grad`` w.r.t. both operands, all under ``jax.jit``, in
a child process (an abort there fails this test instead of killing pytest),
and compares the numbers with the float64 NumPy reference.

The same child runs 1-D and 3-D strided + dilated geometries through
``conv_transpose`` (dispatched CPU path) and ``jax.grad`` of it w.r.t. ``y``
and ``w``, under ``jax.jit``, and reports whether any of those programs holds
an lhs-dilated convolution. The 3-D ones are the 2-D abort with a third axis:
``jax.vjp`` of lax aborts XLA CPU on them (checked by hand: SIGABRT, exit 134).
No 1-D shape is known to abort (a random search of 400 strided + dilated 1-D
geometries found none); the 1-D ones are the abort's W axis alone and a
cropped ``output_padding >= stride`` variant.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .support import default_xla_env, dout_shape_2d, lhs_dilations, mindspore_geometry, reference, transpose_sizes

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (name, x shape NCHW, weight shape OIHW, attributes as the user passes them)
SHAPES = [
    # The shape that aborts XLA CPU through lax autodiff.
    ("known-abort", (1, 2, 4, 19), (1, 2, 2, 5), dict(stride=(2, 3), dilation=(1, 3), pad_mode="pad", pad=1)),
    # The same with enough channels that the CPU lowering picks its convolution-based paths
    # (few channels take a per-tap multiply-add instead).
    ("known-abort-wide", (1, 16, 4, 19), (16, 16, 2, 5), dict(stride=(2, 3), dilation=(1, 3), pad_mode="pad", pad=1)),
    # kernel == stride == 2 along H, dilated W.
    ("k2-s2-dilated-w", (2, 3, 8, 13), (4, 3, 2, 3), dict(stride=2, dilation=(1, 2))),
    # A big dilated kernel (extent 10) against a 1x1 dout, two groups.
    ("big-dilated-kernel-1x1-dout", (1, 4, 11, 12), (4, 2, 4, 4), dict(stride=(2, 3), dilation=3, group=2)),
    ("big-dilated-kernel-wide", (2, 16, 11, 12), (16, 8, 4, 4), dict(stride=(2, 3), dilation=3, group=2)),
    # Asymmetric padding, stride and dilation in both axes, depthwise x2.
    (
        "depthwise-pad-asym",
        (2, 3, 9, 7),
        (6, 1, 3, 3),
        dict(stride=(3, 2), dilation=(2, 3), pad_mode="pad", pad=(1, 2, 0, 1), group=3),
    ),
    # same mode: the padding depends on input_size (ambiguous under the stride).
    ("same-s3-d2", (1, 2, 10, 8), (2, 2, 3, 2), dict(stride=3, dilation=2, pad_mode="same")),
]

# (name, y shape, w shape, conv_transpose keywords), channels-first.
ND_SHAPES = [
    # The 2-D abort with a third axis (lax's vjp aborts on both).
    (
        "3d-known-abort",
        (1, 1, 3, 3, 3),
        (1, 2, 2, 2, 5),
        dict(strides=[2, 2, 3], padding=[[1, 1]] * 3, output_padding=[0, 0, 2], rhs_dilation=[1, 1, 3]),
    ),
    (
        "3d-known-abort-wide",
        (1, 16, 3, 3, 3),
        (16, 16, 2, 2, 5),
        dict(strides=[2, 2, 3], padding=[[1, 1]] * 3, output_padding=[0, 0, 2], rhs_dilation=[1, 1, 3]),
    ),
    (
        "3d-grouped-asym",
        (2, 4, 2, 3, 3),
        (4, 2, 2, 2, 3),
        dict(
            strides=[2, 1, 3],
            padding=[[1, 0], [0, 1], [1, 1]],
            output_padding=[1, 0, 2],
            rhs_dilation=[1, 2, 3],
            feature_group_count=2,
        ),
    ),
    (
        "1d-abort-w-axis",
        (1, 1, 3),
        (1, 2, 5),
        dict(strides=[3], padding=[[1, 1]], output_padding=[2], rhs_dilation=[3]),
    ),
    (
        "1d-wide-cropped",
        (2, 16, 5),
        (16, 16, 3),
        dict(strides=[2], padding=[[1, 0]], output_padding=[2], rhs_dilation=[3]),
    ),
    (
        "1d-depthwise",
        (1, 6, 4),
        (6, 1, 4),
        dict(strides=[3], padding=[[2, 1]], output_padding=[1], rhs_dilation=[2], feature_group_count=6),
    ),
]

CHILD = r"""
import json, sys
import numpy as np
import jax, jax.numpy as jnp
import jax_conv_bpi as jcb
from tests.support import lhs_dilated_convolutions, lhs_dilations  # the checkout is on the child's path

shapes = json.loads(sys.argv[1])
data = np.load(sys.argv[2])
out = {}
for name, y_shape, w_shape, kw in json.loads(sys.argv[4]):
    y, w, cot = (jnp.asarray(data[f"{name}_{k}"]) for k in ("y", "weight", "cot"))
    op = jax.jit(lambda y, w: jcb.conv_transpose(y, w, **kw))
    grads = jax.jit(jax.grad(lambda y, w: jnp.sum(jcb.conv_transpose(y, w, **kw) * cot), argnums=(0, 1)))
    hlo = op.lower(y, w).as_text() + grads.lower(y, w).as_text()
    out[f"{name}_lhs_dilated_convolutions"] = np.asarray(lhs_dilated_convolutions(hlo))
    out[f"{name}_convolution_count"] = np.asarray(len(lhs_dilations(hlo)))
    out[f"{name}_forward"] = np.asarray(op(y, w))
    out[f"{name}_grad_y"], out[f"{name}_grad_weight"] = (np.asarray(g) for g in grads(y, w))
for name, x_shape, w_shape, kw in shapes:
    for key in ("stride", "dilation", "pad"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    x_shape = tuple(x_shape)
    dout, w, cot = (jnp.asarray(data[f"{name}_{k}"]) for k in ("dout", "weight", "cot"))
    x = jnp.zeros(x_shape, jnp.float32)

    op = jax.jit(lambda d, w: jcb.conv2d_backprop_input(d, w, x_shape, **kw))
    input_grad = jax.jit(lambda d, w: jax.vjp(lambda a: jcb.conv2d(a, w, **kw), x)[1](d)[0])
    loss = lambda d, w: jnp.sum(jcb.conv2d_backprop_input(d, w, x_shape, **kw) * cot)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))

    out[f"{name}_forward"] = np.asarray(op(dout, w))
    out[f"{name}_conv2d_input_grad"] = np.asarray(input_grad(dout, w))
    out[f"{name}_grad_dout"], out[f"{name}_grad_weight"] = (np.asarray(g) for g in grads(dout, w))
np.savez(sys.argv[3], **out)
print("ok", len(out))
"""


def _nd_sizes(y_shape, w_shape, kw):
    """Result spatial size (PyTorch's rule) and the forward padding pairs of one N-D shape."""
    return transpose_sizes(
        y_shape[2:], w_shape[2:], kw["strides"], kw["rhs_dilation"], kw["padding"], kw["output_padding"]
    )


def test_lax_input_gradient_of_the_nd_shapes_is_lhs_dilated():
    """What the child checks for is there in lax's own input gradient of the N-D shapes (lowered, never compiled)."""
    for name, y_shape, w_shape, kw in ND_SHAPES:
        x_spatial, pairs = _nd_sizes(y_shape, w_shape, kw)
        group = kw.get("feature_group_count", 1)
        x = jnp.zeros((y_shape[0], group * w_shape[1], *x_spatial), jnp.float32)
        w = jnp.zeros(w_shape, jnp.float32)

        def lax_input_grad(x, w, y, kw=kw, pairs=pairs, group=group):
            conv = lambda a: lax.conv_general_dilated(  # noqa: E731
                a, w, kw["strides"], pairs, rhs_dilation=kw["rhs_dilation"], feature_group_count=group
            )
            return jax.vjp(conv, x)[1](y)[0]

        hlo = jax.jit(lax_input_grad).lower(x, w, jnp.zeros(y_shape, jnp.float32)).as_text()
        assert lhs_dilations(hlo) == [tuple(kw["strides"])], (name, lhs_dilations(hlo))


def test_hazard_shapes_in_a_subprocess(tmp_path):
    rng = np.random.default_rng(2024)
    arrays, expected = {}, {}
    for name, x_shape, w_shape, kw in SHAPES:
        geom = mindspore_geometry(kw, x_shape, w_shape)
        stride, dilation, padding, _ = geom
        assert max(stride) > 1 and max(dilation) > 1  # every shape here is strided + dilated
        y_shape = dout_shape_2d(x_shape, w_shape, stride, dilation, padding)
        assert min(y_shape) >= 1
        dout, w = (rng.standard_normal(s).astype(np.float32) for s in (y_shape, w_shape))
        cot = rng.standard_normal(x_shape).astype(np.float32)
        arrays.update({f"{name}_dout": dout, f"{name}_weight": w, f"{name}_cot": cot})
        fwd = reference.backprop_input(dout, w, x_shape, *geom)
        expected[f"{name}_forward"] = fwd
        expected[f"{name}_conv2d_input_grad"] = fwd  # conv2d's input gradient is the op itself
        # loss = <op(dout, w), cot>: d/d dout = conv2d(cot, w), d/dw = backprop_filter(dout, cot).
        expected[f"{name}_grad_dout"] = reference.conv2d(cot, w, *geom)
        expected[f"{name}_grad_weight"] = reference.backprop_filter(dout, cot, w.shape, *geom)
    for name, y_shape, w_shape, kw in ND_SHAPES:
        stride, dilation, (x_spatial, pairs) = kw["strides"], kw["rhs_dilation"], _nd_sizes(y_shape, w_shape, kw)
        assert max(stride) > 1 and max(dilation) > 1  # every shape here is strided + dilated
        group = kw.get("feature_group_count", 1)
        x_shape = (y_shape[0], group * w_shape[1], *x_spatial)
        y, w, cot = (rng.standard_normal(s).astype(np.float32) for s in (y_shape, w_shape, x_shape))
        arrays.update({f"{name}_y": y, f"{name}_weight": w, f"{name}_cot": cot})
        geom = (stride, dilation, pairs, group)
        expected[f"{name}_forward"] = reference.conv_transpose_nd(y, w, x_spatial, *geom)
        # loss = <conv_transpose(y, w), cot>: d/dy = conv(cot, w), d/dw = backprop_filter(y, cot).
        expected[f"{name}_grad_y"] = reference.conv_nd(cot, w, *geom)
        expected[f"{name}_grad_weight"] = reference.backprop_filter_nd(y, cot, w_shape, *geom)
        expected[f"{name}_lhs_dilated_convolutions"] = np.zeros(())
    np.savez(tmp_path / "inputs.npz", **arrays)

    env = default_xla_env()  # the user's compilation: the one that aborts through lhs dilation
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # The hazard is XLA's: the pure-XLA formulations are the ones under test (the native kernel, which
    # would take the ungrouped float32 forward convolutions here, has no lhs dilation: test_native.py).
    env["JCB_NATIVE"] = "0"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps(SHAPES),
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "out.npz"),
            json.dumps(ND_SHAPES),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode} (-6 is SIGABRT):\n{proc.stderr[-3000:]}"

    got = np.load(tmp_path / "out.npz")
    # The programs of the wide shapes hold convolutions (so "no lhs dilation" was read off real ones).
    assert all(int(got[f"{name}_convolution_count"]) >= 1 for name, *_ in ND_SHAPES if "wide" in name)
    assert sorted(k for k in got.files if not k.endswith("_convolution_count")) == sorted(expected)
    for key, ref in expected.items():
        actual = got[key].astype(np.float64)
        assert actual.shape == ref.shape, (key, actual.shape, ref.shape)
        atol = 1e-5 * max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(actual, ref, rtol=1e-5, atol=atol, err_msg=key)

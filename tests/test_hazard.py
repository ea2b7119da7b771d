"""Strided + dilated shapes on which XLA CPU's own autodiff aborts the process.

``jax.vjp`` of ``lax.conv_general_dilated`` w.r.t. its input lowers to an
lhs-dilated convolution; for some strided *and* dilated geometries (input
(1, 2, 4, 19), weight (1, 2, 2, 5), stride (2, 3), dilation (1, 3), pad 1)
XLA CPU's rewrite of that convolution kills the process with SIGABRT. Our CPU
lowering never uses lhs dilation. This runs those shapes through the op, its
input gradient and ``jax.grad`` w.r.t. both operands, all under ``jax.jit``, in
a child process (an abort there fails this test instead of killing pytest),
and compares the numbers with the float64 NumPy reference.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import reference

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

CHILD = r"""
import json, sys
import numpy as np
import jax, jax.numpy as jnp
import jax_conv_bpi as jcb

shapes = json.loads(sys.argv[1])
data = np.load(sys.argv[2])
out = {}
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


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(x_shape, w_shape, kw):
    """stride, dilation, (top, bottom, left, right) padding and group, from the spec's formulas."""
    stride, dilation = _pair(kw.get("stride", 1)), _pair(kw.get("dilation", 1))
    mode = kw.get("pad_mode", "valid")
    if mode == "valid":
        padding = (0, 0, 0, 0)
    elif mode == "pad":
        pad = kw["pad"]
        padding = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    else:
        padding = reference.same_padding(x_shape[2:], w_shape[2:], stride, dilation)
    return stride, dilation, padding, kw.get("group", 1)


def _dout_shape(x_shape, w_shape, geom):
    stride, dilation, p, _ = geom
    hw = [
        reference.output_size(x_shape[2 + a], w_shape[2 + a], stride[a], dilation[a], *p[2 * a : 2 * a + 2])
        for a in range(2)
    ]
    return (x_shape[0], w_shape[0], *hw)


def test_hazard_shapes_in_a_subprocess(tmp_path):
    rng = np.random.default_rng(2024)
    arrays, expected = {}, {}
    for name, x_shape, w_shape, kw in SHAPES:
        geom = _geometry(x_shape, w_shape, kw)
        stride, dilation, _, _ = geom
        assert max(stride) > 1 and max(dilation) > 1  # every shape here is strided + dilated
        y_shape = _dout_shape(x_shape, w_shape, geom)
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
    np.savez(tmp_path / "inputs.npz", **arrays)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(SHAPES), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode} (-6 is SIGABRT):\n{proc.stderr[-3000:]}"

    got = np.load(tmp_path / "out.npz")
    assert sorted(got.files) == sorted(expected)
    for key, ref in expected.items():
        actual = got[key].astype(np.float64)
        assert actual.shape == ref.shape, (key, actual.shape, ref.shape)
        atol = 1e-5 * max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(actual, ref, rtol=1e-5, atol=atol, err_msg=key)

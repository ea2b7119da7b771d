"""``jax.export`` of functions using the op: every platform lowers, and the CPU artifact round-trips.

The op has two lowerings: a default one (GPU/TPU: the lhs-dilated convolution
XLA maps to backward-data kernels) and a CPU one that never uses lhs
dilation. A multi-platform export therefore carries both, behind a switch on
the platform index; these tests check both branches are there and that the
CPU branch is the one that runs here.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jax_conv_bpi as jcb

ALL_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# The platform the round trips run on: the default backend ("cpu" here, "cuda" on an NVIDIA GPU).
HERE = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())

CASES = [
    # (name, dout shape, weight shape, input_size, attributes): both strided, so the two lowerings differ.
    ("s23-ambiguous-nchw", (1, 3, 3, 3), (3, 2, 3, 2), (1, 2, 8, 10), dict(stride=(2, 3))),
    (
        "s2-d2-g2-pad-nhwc",
        (2, 4, 3, 4),
        (4, 2, 2, 1),
        (2, 7, 6, 2),
        dict(stride=2, dilation=2, pad_mode="pad", pad=1, group=2, data_format="NHWC"),
    ),
]


def _case(case):
    name, dout_shape, w_shape, input_size, attrs = case
    rng = np.random.default_rng(0)
    dout = rng.standard_normal(dout_shape).astype(np.float32)
    weight = rng.standard_normal(w_shape).astype(np.float32)
    c = rng.standard_normal(input_size).astype(np.float32)

    def f(d, w):
        return jcb.conv2d_backprop_input(d, w, input_size, **attrs)

    def loss(d, w):
        return jnp.sum(jnp.sin(f(d, w)) * c)

    stride = attrs["stride"] if isinstance(attrs["stride"], tuple) else (attrs["stride"],) * 2
    return f, jax.grad(loss, argnums=(0, 1)), (dout, weight), stride, c


def _lhs_dilations(module_text):
    """lhs_dilate of every stablehlo.convolution ((1, 1) when the printer omits the default)."""
    out = []
    for line in module_text.splitlines():
        if "stablehlo.convolution" in line:
            m = re.search(r"lhs_dilate = \[(\d+), (\d+)\]", line)
            out.append((int(m[1]), int(m[2])) if m else (1, 1))
    return out


def _specs(args):
    return [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    return _case(request.param)


def _close(got, want):
    """Equal to float32 rounding: an exported program is pure XLA, the jitted one may use the native kernels."""
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max(initial=0.0)))


def test_export_every_platform(case):
    """The op and its gradient lower for CPU, CUDA, ROCm and TPU; the module switches on the platform."""
    f, grad, args, stride, _ = case
    for fn in (f, grad):
        exp = export.export(jax.jit(fn), platforms=ALL_PLATFORMS)(*_specs(args))
        assert exp.platforms == ALL_PLATFORMS
        text = exp.mlir_module()
        assert "_platform_index" in text and "stablehlo.case" in text
        lhs = _lhs_dilations(text)
        # default branch (GPU/TPU): the lhs-dilated form is present ...
        assert stride in lhs
        # ... and the CPU branch, which never dilates the lhs, is the one that runs here: the round trip
        # changes nothing, and it agrees with the jitted op (which may take the native kernels: rounding).
        got = export.deserialize(exp.serialize()).call(*args)
        jax.tree.map(np.testing.assert_array_equal, got, exp.call(*args))
        jax.tree.map(_close, got, jax.jit(fn)(*args))


def test_export_single_platforms(case):
    """A CUDA-only export is the lhs-dilated form without a switch; a CPU-only one never dilates the lhs."""
    f, grad, args, stride, _ = case
    cuda = export.export(jax.jit(f), platforms=("cuda",))(*_specs(args)).mlir_module()
    assert "stablehlo.case" not in cuda and stride in _lhs_dilations(cuda)
    tpu = export.export(jax.jit(grad), platforms=("tpu",))(*_specs(args)).mlir_module()
    assert "stablehlo.case" not in tpu and stride in _lhs_dilations(tpu)
    for fn in (f, grad):
        cpu = export.export(jax.jit(fn), platforms=("cpu",))(*_specs(args)).mlir_module()
        assert "stablehlo.case" not in cpu
        assert all(d == (1, 1) for d in _lhs_dilations(cpu))


def test_cpu_export_round_trip(case):
    """Serialized, deserialized and called: identical values to the export before the round trip, and the
    direct call's to float32 rounding, for the op and its gradient.

    Exported for the default backend (CPU here; CUDA on a GPU machine, where the artifact must run there).
    """
    f, grad, args, _, _ = case
    for fn in (f, grad):
        exp = export.export(jax.jit(fn), platforms=(HERE,))(*_specs(args))
        blob = exp.serialize()
        assert isinstance(blob, (bytes, bytearray))
        restored = export.deserialize(blob)
        assert restored.in_avals == exp.in_avals and restored.out_avals == exp.out_avals
        got = restored.call(*args)
        jax.tree.map(np.testing.assert_array_equal, got, exp.call(*args))
        jax.tree.map(_close, got, jax.jit(fn)(*args))  # the jitted op may take the native kernels


def test_exported_function_is_differentiable(case):
    """An export serialized with vjp_order=1 differentiates like the op itself."""
    f, grad, args, _, c = case
    exp = export.export(jax.jit(f), platforms=(HERE,))(*_specs(args))
    restored = export.deserialize(exp.serialize(vjp_order=1))
    got = jax.grad(lambda d, w: jnp.sum(jnp.sin(restored.call(d, w)) * c), argnums=(0, 1))(*args)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, grad(*args))


# -- conv_transpose with the keywords of Flax, Equinox, PyTorch and TensorFlow users ---------------------------


def _conv_transpose_keywords():
    """Unbatched channels-last 2-D, Flax's kernel convention, circular 'SAME' of an output size, groups, a bias."""
    rng = np.random.default_rng(1)
    y = rng.standard_normal((3, 4, 4)).astype(np.float32)  # (H, W, C): no batch axis
    w = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)  # HWIO, I = y's channels / groups
    b = rng.standard_normal((4,)).astype(np.float32)
    c = rng.standard_normal((5, 11, 4)).astype(np.float32)

    def f(y, w, b):
        return jcb.conv_transpose(
            y,
            w,
            (2, 3),
            "SAME",
            output_size=(5, 11),
            feature_group_count=2,
            transpose_kernel=False,
            padding_mode="circular",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            bias=b,
        )

    def loss(y, w, b):
        return jnp.sum(jnp.sin(f(y, w, b)) * c)

    return f, jax.grad(loss, argnums=(0, 1, 2)), (y, w, b), c


def test_export_of_the_new_keywords():
    """Both lowerings are in a multi-platform export; the CPU one never dilates the lhs; the artifact round-trips,
    agrees with the jitted call, and an export with vjp_order=1 differentiates like the op."""
    f, grad, args, c = _conv_transpose_keywords()
    for fn in (f, grad):
        exp = export.export(jax.jit(fn), platforms=ALL_PLATFORMS)(*_specs(args))
        text = exp.mlir_module()
        assert "_platform_index" in text and "stablehlo.case" in text
        assert (2, 3) in _lhs_dilations(text)  # the default (GPU/TPU) branch
        cpu = export.export(jax.jit(fn), platforms=("cpu",))(*_specs(args)).mlir_module()
        assert all(d == (1, 1) for d in _lhs_dilations(cpu))
        got = export.deserialize(exp.serialize()).call(*args)
        jax.tree.map(np.testing.assert_array_equal, got, exp.call(*args))
        jax.tree.map(_close, got, jax.jit(fn)(*args))
    restored = export.deserialize(export.export(jax.jit(f), platforms=(HERE,))(*_specs(args)).serialize(vjp_order=1))
    got = jax.grad(lambda *a: jnp.sum(jnp.sin(restored.call(*a)) * c), argnums=(0, 1, 2))(*args)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, grad(*args))

"""Portable lax formulations of the three convolutions (GPU, TPU, and the reference forms).

Each function takes channels-first arrays (``(N, C, *spatial)``, weights
``(C_out, C_in/g, *kernel)``) and a ``ConvGeometry`` of any rank (1-3 spatial
dimensions) and returns the result in ``geom.out_dtype`` (default: the
operands' dtype). Half precision (float16, bfloat16) accumulates in float32
and rounds once at the end; every convolution and matmul runs at
``geom.precision`` (the MindSpore shells ask for HIGHEST: no TF32 on GPUs).

These are the forms XLA maps to cuDNN / TPU convolution kernels: the input
gradient as a stride-1 correlation of the lhs-dilated ``dout`` (a
backward-data convolution), the weight gradient as a convolution whose batch
is the input channels (a backward-filter convolution). The CPU lowering picks
other forms per geometry (``dispatch``); XLA CPU aborts on some strided +
dilated lhs-dilated convolutions, so ``backprop_input_default`` is not used
there.

The helpers (``conv``, ``split_negative``, ``crop``, ``zero_result`` ...) are
shared by every formulation module.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry


def channels_first_dn(n: int, lhs: str = "NC", rhs: str = "OI", out: str = "NC") -> lax.ConvDimensionNumbers:
    """Dimension numbers with the spatial axes last, in order; ``lhs``/``rhs``/``out`` name the first two axes.

    ``"NC"`` / ``"OI"`` is the plain layout; ``"CN"`` / ``"IO"`` swaps the first two.
    """
    spatial = tuple(range(2, 2 + n))
    lhs_spec = ((0, 1) if lhs == "NC" else (1, 0)) + spatial
    rhs_spec = ((0, 1) if rhs == "OI" else (1, 0)) + spatial
    out_spec = ((0, 1) if out == "NC" else (1, 0)) + spatial
    return lax.ConvDimensionNumbers(lhs_spec, rhs_spec, out_spec)


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: float32 for the half types, else the dtype itself."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def out_dtype(geom: ConvGeometry, operand) -> jnp.dtype:
    return jnp.dtype(geom.out_dtype) if geom.out_dtype is not None else jnp.dtype(operand.dtype)


def conv(
    lhs,
    rhs,
    geom: ConvGeometry,
    *,
    strides=None,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    groups=1,
    dn=None,
    batch_groups=1,
):
    """``lax.conv_general_dilated`` at the geometry's precision, accumulating as above (no cast back)."""
    n = lhs.ndim - 2
    ones = (1,) * n
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=ones if strides is None else tuple(strides),
        padding=[tuple(p) for p in padding],
        lhs_dilation=ones if lhs_dilation is None else tuple(lhs_dilation),
        rhs_dilation=ones if rhs_dilation is None else tuple(rhs_dilation),
        dimension_numbers=channels_first_dn(n) if dn is None else dn,
        feature_group_count=groups,
        batch_group_count=batch_groups,
        precision=geom.precision,
        preferred_element_type=acc_dtype(lhs.dtype),
    )


def einsum(spec: str, a, b, geom: ConvGeometry):
    """``jnp.einsum`` at the geometry's precision, accumulating as ``conv``."""
    return jnp.einsum(spec, a, b, precision=geom.precision, preferred_element_type=acc_dtype(a.dtype))


def zero_result(geom: ConvGeometry) -> bool:
    """No batch or no ``dout`` pixel: every result of the family is zeros."""
    return 0 in (geom.y_shape[0], *geom.y_shape[2:])


def zeros(shape, geom: ConvGeometry, operand):
    return jnp.zeros(shape, out_dtype(geom, operand))


def split_negative(pads):
    """Padding pairs -> (non-negative padding, crop pairs) so XLA sees pads >= 0."""
    pos = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
    return pos, crops


def crop(x, crops):
    """Remove ``(lo, hi)`` rows from each spatial axis (the axes after the first two)."""
    if not any(c for pair in crops for c in pair):
        return x
    idx = [slice(None), slice(None)] + [slice(lo, x.shape[2 + a] - hi) for a, (lo, hi) in enumerate(crops)]
    return x[tuple(idx)]


def window(x, start, size):
    """``x[..., start_a : start_a + size_a, ...]`` on every spatial axis, zero-filled past the end."""
    cfg = [(0, 0, 0), (0, 0, 0)]
    for a, (st, sz) in enumerate(zip(start, size)):
        cfg.append((-st, st + sz - x.shape[2 + a], 0))
    if all(c == (0, 0, 0) for c in cfg):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def flip_transpose_weight(w, group: int):
    """(C_out, C_in/g, *k) -> spatially flipped (C_in, C_out/g, *k)."""
    c_out, c_in_g, *k = w.shape
    w = jnp.flip(w, tuple(range(2, w.ndim))).reshape(group, c_out // group, c_in_g, *k)
    return grouped_transpose_5(w)


def grouped_transpose(v, group: int):
    """(C_out, C_in/g, *k) -> (C_in, C_out/g, *k), unflipped: the weight of a conv of ``dout``."""
    c_out, c_in_g, *k = v.shape
    return grouped_transpose_5(v.reshape(group, c_out // group, c_in_g, *k))


def grouped_transpose_5(v):
    """(g, C_out/g, C_in/g, *k) -> (C_in, C_out/g, *k)."""
    g, og, cig, *k = v.shape
    return v.transpose(0, 2, 1, *range(3, v.ndim)).reshape(g * cig, og, *k)


def conv2d_default(x, w, *, geom: ConvGeometry):
    """The forward convolution: a strided, dilated, grouped cross-correlation."""
    if 0 in geom.y_shape:
        return zeros(geom.y_shape, geom, x)
    y = conv(x, w, geom, strides=geom.stride, padding=geom.padding, rhs_dilation=geom.dilation, groups=geom.group)
    return y.astype(out_dtype(geom, x))


def backprop_input_default(dout, w, *, geom: ConvGeometry):
    """Input gradient as one stride-1 correlation of the lhs-dilated ``dout``.

    Padding from equations (4)-(5) of ``arithmetic``; negative parts become crops.
    """
    if zero_result(geom):
        return zeros(geom.x_shape, geom, dout)
    pads = [arithmetic.lhs_dilated_padding(*geom.axis(a)[:5], geom.padding[a][0]) for a in range(geom.ndim)]
    pos, crops = split_negative(pads)
    out = conv(
        dout,
        flip_transpose_weight(w, geom.group),
        geom,
        padding=pos,
        lhs_dilation=geom.stride,
        rhs_dilation=geom.dilation,
        groups=geom.group,
    )
    return crop(out, crops).astype(out_dtype(geom, dout))


def filter_window_padding(geom: ConvGeometry):
    """Padding of ``x`` for the weight gradient: only rows some window reads remain (see ``arithmetic``)."""
    pads = []
    for a in range(geom.ndim):
        size, out, _, s, _, (lo, _) = geom.axis(a)
        pads.append((lo, (out - 1) * s + geom.extent[a] - lo - size))
    return pads


def backprop_filter_default(dout, x, *, geom: ConvGeometry):
    """Weight gradient: correlate the (cropped) padded input with ``dout``.

    One convolution whose batch dimension is the input channels and whose
    feature dimension is the batch, with ``batch_group_count`` splitting the
    groups (the form XLA maps to backward-filter kernels). Its output's
    feature dim (C_out) comes first and its batch (C_in/g) second: the result
    is ``(C_out, C_in/g, *kernel)`` directly.
    """
    if zero_result(geom):
        return zeros(geom.w_shape, geom, dout)
    pos, crops = split_negative(filter_window_padding(geom))
    xp = crop(x, [(0, hi) for _, hi in crops])
    out = conv(
        xp,
        dout,
        geom,
        strides=geom.dilation,
        padding=pos,
        rhs_dilation=geom.stride,
        dn=channels_first_dn(geom.ndim, "CN", "IO", "CN"),
        batch_groups=geom.group,
    )
    return out.astype(out_dtype(geom, dout))


DEFAULT = {
    "conv": conv2d_default,
    "backprop_input": backprop_input_default,
    "backprop_filter": backprop_filter_default,
}
"""The portable lowering of each primitive, by role."""

"""CPU formulations of the forward convolution and the weight gradient, for 1-3 spatial dims.

The custom backward needs both (the cotangent of ``dout`` is the forward
convolution, the cotangent of the weight the weight gradient). Depthwise and
small groups get per-tap fused multiply-adds instead of XLA CPU's slow
grouped convolution; the ungrouped weight gradient gets one matmul per tap;
with few input channels, the weight gradient is one matmul of im2col patches
per block of output rows; stride-1 forward convolutions avoid XLA CPU's slower
convolution backend. ``conv_native`` and ``backprop_filter_native`` hand
float32 forward convolutions and weight gradients to the optional native
kernels (``native.kernels``) where the dispatcher and the program allow it.
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
from jax import lax

from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import portable as L
from jax_conv_bpi._src.lowering import xla_cpu
from jax_conv_bpi._src.native import kernels

__all__ = ["BACKPROP_FILTER_PATHS", "CONV_PATHS"]


def _tap(xp, idx, geom: ConvGeometry, out):
    """Tap ``idx`` of the padded input ``xp``: (N, C_in, *out), row ``q*s + i*d`` on each axis."""
    start = (0, 0, *(i * d for i, d in zip(idx, geom.dilation)))
    limit = (*xp.shape[:2], *(i * d + (q - 1) * s + 1 for i, d, q, s in zip(idx, geom.dilation, out, geom.stride)))
    return lax.slice(xp, start, limit, (1, 1, *geom.stride))


def tap_slices(x, geom: ConvGeometry):
    """Padded input sliced per tap: ``tap(idx)`` is (N, C_in, *out), row ``q*s + i*d`` on each axis."""
    xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in geom.padding])
    return lambda idx: _tap(xp, idx, geom, geom.y_shape[2:])


def _kernel_taps(geom: ConvGeometry):
    return itertools.product(*(range(k) for k in geom.kernel))


def _grouped_taps(x, geom: ConvGeometry):
    """``(idx, rows)`` per kernel tap: ``rows`` is (N, g, 1, C_in/g, *out), in the accumulation dtype."""
    n, _, *o = geom.y_shape
    c_in_g = geom.w_shape[1]
    tap = tap_slices(x.astype(L.acc_dtype(x.dtype)), geom)
    for idx in _kernel_taps(geom):
        yield idx, tap(idx).reshape(n, geom.group, 1, c_in_g, *o)


def conv_direct(x, w, *, geom: ConvGeometry):
    """Forward convolution as a per-tap fused multiply-add (depthwise / small groups)."""
    if 0 in geom.y_shape:
        return L.zeros(geom.y_shape, geom, x)
    nd = geom.ndim
    c_out = geom.y_shape[1]
    g, c_in_g = geom.group, geom.w_shape[1]
    w5 = w.astype(L.acc_dtype(x.dtype)).reshape(g, c_out // g, c_in_g, *geom.kernel)
    total = None
    for idx, xs in _grouped_taps(x, geom):
        t = xs * w5[(slice(None),) * 3 + idx][(None, ...) + (None,) * nd]
        t = xla_cpu.small_sum(t, 3)
        total = t if total is None else total + t
    assert total is not None  # the kernel has at least one tap (its sizes are >= 1)
    return total.reshape(geom.y_shape).astype(L.out_dtype(geom, x))


def backprop_filter_direct(dout, x, *, geom: ConvGeometry):
    """Weight gradient as one fused multiply-reduce per tap (depthwise / small groups)."""
    if L.zero_result(geom):
        return L.zeros(geom.w_shape, geom, dout)
    n, c_out, *o = geom.y_shape
    d = dout.astype(L.acc_dtype(dout.dtype)).reshape(n, geom.group, c_out // geom.group, 1, *o)
    reduce_axes = (0, *range(4, 4 + geom.ndim))
    taps = [(xs * d).sum(axis=reduce_axes) for _, xs in _grouped_taps(x, geom)]  # each (g, og, c_in_g)
    return jnp.stack(taps, axis=-1).reshape(geom.w_shape).astype(L.out_dtype(geom, dout))


def conv_routed(x, w, *, geom: ConvGeometry):
    """Forward convolution through ``xla_cpu.conv``: stride 1 off YNNPACK (1-D / 2-D), 3-D depth-folded."""
    if 0 in geom.y_shape or (geom.ndim < 3 and set(geom.stride) != {1}):
        return L.conv2d_default(x, w, geom=geom)
    pos, crops = L.split_negative(geom.padding)
    y = xla_cpu.conv(
        L.crop(x, crops),
        w,
        geom,
        padding=pos,
        strides=geom.stride,
        rhs_dilation=geom.dilation,
        groups=geom.group,
        off_ynn=True,
    )
    return y.astype(L.out_dtype(geom, x))


def _filter_per_tap(dout, x, geom: ConvGeometry, *, per_sample: bool):
    """One matmul per tap of ``dout`` and the tap's strided input slice; with ``per_sample``, one per sample, summed."""
    if L.zero_result(geom):
        return L.zeros(geom.w_shape, geom, dout)
    if geom.group != 1:
        return L.backprop_filter_default(dout, x, geom=geom)
    sp = "hwd"[: geom.ndim]
    spec = f"no{sp},nc{sp}->" + ("noc" if per_sample else "oc")
    tap = tap_slices(x, geom)
    taps = [L.einsum(spec, dout, tap(idx), geom) for idx in _kernel_taps(geom)]
    if per_sample:
        taps = [t.sum(axis=0) for t in taps]
    return jnp.stack(taps, axis=-1).reshape(geom.w_shape).astype(L.out_dtype(geom, dout))


def backprop_filter_gemm(dout, x, *, geom: ConvGeometry):
    """Weight gradient as one matmul per tap: ``dout`` times that tap's strided input slice.

    Each tap contracts batch and pixels: ``(C_out, N*pixels) x (N*pixels, C_in)``.
    Ungrouped only (grouped geometries fall back to the default form).
    """
    return _filter_per_tap(dout, x, geom, per_sample=False)


def backprop_filter_gemm_batched(dout, x, *, geom: ConvGeometry):
    """``gemm`` split over the batch: per tap, one matmul per sample, then a sum over the batch.

    Per tap ``(N, C_out, pixels) x (N, C_in, pixels) -> (N, C_out, C_in)``, summed
    over ``N``. Both operands are contracted over their last axes in place (no
    transposed copy of the input slice), and the batch axis splits the long
    ``N*pixels`` reduction into ``N`` matmuls that run in parallel. It pays where
    each sample's matmul is large and its ``C_out x C_in`` partial small next to
    the inputs (``select_filter_path``). Ungrouped only.
    """
    return _filter_per_tap(dout, x, geom, per_sample=True)


IM2COL_CHUNK_BYTES = 1 << 18
"""``im2col``'s patches per block of output rows, at most this many bytes (one row when a row is larger)."""


def backprop_filter_im2col(dout, x, *, geom: ConvGeometry, chunk_bytes: int = IM2COL_CHUNK_BYTES):
    """Weight gradient as one matmul of im2col patches per block of output rows, summed.

    For a block of ``R`` rows of the first spatial axis, the patches are every
    tap's strided input slice stacked, ``(N, C_in, taps, R, *rest)``, and one
    matmul ``(C_out, N*R*rest) x (N*R*rest, C_in*taps)`` gives the block's share
    of the result. Where ``C_in`` is small that replaces ``gemm``'s one thin
    matmul per tap, each reading all of ``dout``, with one wide matmul that reads
    ``dout`` once. The blocks are a ``fori_loop`` over rows (each at most
    ``chunk_bytes`` of patches), so the patches never exceed a block, and the
    batch axis is never split: a batch-sharded operand stays sharded. Rows past
    the end are zero ``dout`` rows over padded input, so every block has ``R``
    rows. Ungrouped only (grouped geometries fall back to the default form).
    """
    if L.zero_result(geom):
        return L.zeros(geom.w_shape, geom, dout)
    if geom.group != 1:
        return L.backprop_filter_default(dout, x, geom=geom)
    n, c_out, *o = geom.y_shape
    c_in, taps = geom.w_shape[1], math.prod(geom.kernel)
    s0, d0, k0 = geom.stride[0], geom.dilation[0], geom.kernel[0]
    row_bytes = n * c_in * taps * math.prod(o[1:]) * jnp.dtype(x.dtype).itemsize
    rows = max(1, min(o[0], chunk_bytes // row_bytes))
    blocks = -(-o[0] // rows)
    span = (rows - 1) * s0 + d0 * (k0 - 1) + 1  # input rows one block of output rows reads
    need = (blocks * rows - 1) * s0 + d0 * (k0 - 1) + 1
    (lo, hi), *rest = geom.padding
    extra = max(0, need - (x.shape[2] + lo + hi))
    zero = [(0, 0, 0)] * 2
    xp = lax.pad(x, jnp.zeros((), x.dtype), zero + [(lo, hi + extra, 0)] + [(a, b, 0) for a, b in rest])
    dp = lax.pad(dout, jnp.zeros((), dout.dtype), zero + [(0, blocks * rows - o[0], 0)] + [(0, 0, 0)] * len(rest))
    q = (rows, *o[1:])
    sp = "hwd"[: geom.ndim]

    def block(xb, db):
        patches = jnp.stack([_tap(xb, idx, geom, q) for idx in _kernel_taps(geom)], axis=2)
        return L.einsum(f"no{sp},nct{sp}->oct", db, patches, geom)

    if blocks == 1:
        total = block(xp, dp)
    else:

        def body(b, total):
            xb = lax.dynamic_slice_in_dim(xp, b * rows * s0, span, axis=2)
            db = lax.dynamic_slice_in_dim(dp, b * rows, rows, axis=2)
            return total + block(xb, db)

        total = lax.fori_loop(0, blocks, body, jnp.zeros((c_out, c_in, taps), L.acc_dtype(x.dtype)))
    return total.reshape(geom.w_shape).astype(L.out_dtype(geom, dout))


def backprop_filter_native(dout, x, *, geom: ConvGeometry):
    """Weight gradient by the native kernels (``native.kernels``), single-device float32 only
    (``dispatch.wants_native``, ``kernels.usable``).

    Ungrouped: im2col patches per block of whole samples (or output lines of
    one sample) of at most ``kernels.BLOCK_BYTES``, one OpenBLAS sgemm each.
    Grouped (few channels per group): one dot product per channel pair, tap
    and plane. Not in ``BACKPROP_FILTER_PATHS``: that lists the pure-XLA
    formulations, which work everywhere.
    """
    if L.zero_result(geom):
        return L.zeros(geom.w_shape, geom, dout)
    if geom.group == 1:
        return kernels.conv_weight_grad(dout, x, geom=geom).astype(L.out_dtype(geom, dout))
    return kernels.grouped_weight_grad(dout, x, geom=geom).astype(L.out_dtype(geom, dout))


def conv_native(x, w, *, geom: ConvGeometry):
    """Forward convolution by the native kernels (``native.kernels``), single-device float32 only
    (``dispatch.wants_native``, ``kernels.usable``): ungrouped, im2col patches per block of pixels and
    one sgemm each; grouped (few channels per group), one axpy per channel pair, tap and output line.
    Not in ``CONV_PATHS``, which lists the pure-XLA forms.
    """
    if L.zero_result(geom):
        return L.zeros(geom.y_shape, geom, x)
    if geom.group == 1:
        return kernels.conv_forward(x, w, geom=geom).astype(L.out_dtype(geom, x))
    return kernels.grouped_forward(x, w, geom=geom).astype(L.out_dtype(geom, x))


CONV_PATHS = {"default": L.conv2d_default, "routed": conv_routed, "direct": conv_direct}
BACKPROP_FILTER_PATHS = {
    "default": L.backprop_filter_default,
    "gemm": backprop_filter_gemm,
    "gemm_batched": backprop_filter_gemm_batched,
    "im2col": backprop_filter_im2col,
    "direct": backprop_filter_direct,
}

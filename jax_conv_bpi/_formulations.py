"""Lax formulations of the three convolutions, per platform.

Each function takes NCHW / OIHW arrays and a ``ConvGeometry`` and returns the
result in the inputs' dtype. Half precision (float16, bfloat16) is accumulated
in float32 and rounded once at the end; float32 asks for full precision (no
TF32 on GPUs).

``*_default`` functions are the portable forms XLA maps to cuDNN / TPU
convolution kernels; the CPU lowering picks a faster form per geometry in
``cpu_backprop_input`` (see ``docs/performance.md``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _padding
from ._args import ConvGeometry

_DN = ("NCHW", "OIHW", "NCHW")


def _acc_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def _precision(dtype):
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def conv(lhs, rhs, *, strides, padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1), groups=1, dn=_DN, batch_groups=1):
    """``lax.conv_general_dilated`` with the accumulation rules above (no cast back)."""
    acc = _acc_dtype(lhs.dtype)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dn,
        feature_group_count=groups,
        batch_group_count=batch_groups,
        precision=_precision(lhs.dtype),
        preferred_element_type=acc,
    )


def _split_negative(pads):
    """Padding pairs -> (non-negative padding, crop slices) so XLA sees pads >= 0."""
    pos = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
    return pos, crops


def _crop(x, crops, axes=(2, 3)):
    if not any(c for pair in crops for c in pair):
        return x
    idx = [slice(None)] * x.ndim
    for ax, (lo, hi) in zip(axes, crops):
        idx[ax] = slice(lo, x.shape[ax] - hi)
    return x[tuple(idx)]


def flip_transpose_weight(w, group: int):
    """(C_out, C_in/g, KH, KW) -> spatially flipped (C_in, C_out/g, KH, KW)."""
    c_out, c_in_g, kh, kw = w.shape
    w = jnp.flip(w, (2, 3)).reshape(group, c_out // group, c_in_g, kh, kw)
    return w.transpose(0, 2, 1, 3, 4).reshape(group * c_in_g, c_out // group, kh, kw)


def conv2d_default(x, w, *, geom: ConvGeometry):
    """MindSpore ``Conv2D``: a strided, dilated, grouped cross-correlation."""
    pt, pb, pl, pr = geom.padding
    y = conv(x, w, strides=geom.stride, padding=((pt, pb), (pl, pr)), rhs_dilation=geom.dilation, groups=geom.group)
    return y.astype(x.dtype)


def backprop_input_default(dout, w, *, geom: ConvGeometry):
    """Input gradient as one stride-1 correlation of the lhs-dilated ``dout``.

    Padding from equations (4)-(5) of ``_padding``; negative parts become crops.
    """
    n, c_in, h, wd = geom.x_shape
    if 0 in (n, geom.y_shape[2], geom.y_shape[3]):
        return jnp.zeros(geom.x_shape, dout.dtype)
    pads = [
        _padding.lhs_dilated_padding(
            geom.x_shape[2 + a],
            geom.y_shape[2 + a],
            geom.kernel[a],
            geom.stride[a],
            geom.dilation[a],
            geom.padding[2 * a],
        )
        for a in range(2)
    ]
    pos, crops = _split_negative(pads)
    out = conv(
        dout,
        flip_transpose_weight(w, geom.group),
        strides=(1, 1),
        padding=pos,
        lhs_dilation=geom.stride,
        rhs_dilation=geom.dilation,
        groups=geom.group,
    )
    return _crop(out, crops).astype(dout.dtype)


def backprop_filter_default(dout, x, *, geom: ConvGeometry):
    """Weight gradient: correlate the (cropped) padded input with ``dout``.

    Written as one convolution whose batch dimension is the input channels and
    whose feature dimension is the batch, with ``batch_group_count`` splitting
    the groups (the form XLA maps to backward-filter kernels).
    """
    if 0 in (geom.x_shape[0], geom.y_shape[2], geom.y_shape[3]):
        return jnp.zeros(geom.w_shape, dout.dtype)
    g = geom.group
    pt, pb, pl, pr = geom.padding
    ext = [(geom.y_shape[2 + a] - 1) * geom.stride[a] + geom.extent[a] for a in range(2)]
    # Crop so that exactly the rows read by some window remain (see _padding).
    hi = [ext[0] - pt - geom.x_shape[2], ext[1] - pl - geom.x_shape[3]]
    pos, crops = _split_negative([(pt, hi[0]), (pl, hi[1])])
    xp = _crop(x, [(0, crops[0][1]), (0, crops[1][1])])
    out = conv(
        xp,
        dout,
        strides=geom.dilation,
        padding=pos,
        rhs_dilation=geom.stride,
        # x's channels are the batch, its batch the contracted feature; the
        # output's feature dim (C_out) comes first, its batch (C_in/g) second:
        # the result is OIHW directly.
        dn=("CNHW", "IOHW", "CNHW"),
        batch_groups=g,
    )
    return out.astype(dout.dtype)


def _window(x, start, size):
    """``x[..., start_h : start_h + H, start_w : start_w + W]`` with zero fill past the end."""
    extra = [max(0, st + sz - x.shape[2 + a]) for a, (st, sz) in enumerate(zip(start, size))]
    if any(extra):
        x = jnp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    return x[:, :, start[0] : start[0] + size[0], start[1] : start[1] + size[1]]


def phase_taps(k: int, s: int, d: int) -> tuple[int, list[list[int]]]:
    """Sub-pixel decomposition of one axis.

    Tap ``i`` lands on padded row ``o * s + i * d``; with ``i * d = a * s + rho``
    (``0 <= rho < s``) it feeds phase ``rho`` of the output, shifted by ``a``
    rows. Returns ``A`` (taps per phase, zero-filled) and ``table[rho][A-1-a]``
    = ``i`` (flipped along ``a``; ``k`` marks "no tap", a zero).
    """
    taps = ((k - 1) * d) // s + 1
    table = [[k] * taps for _ in range(s)]
    for i in range(k):
        a, rho = divmod(i * d, s)
        table[rho][taps - 1 - a] = i
    return taps, table


def backprop_input_subpixel(dout, w, *, geom: ConvGeometry):
    """Input gradient as one stride-1 convolution plus a pixel interleave.

    Output phase ``(rho_h, rho_w)`` of the full transposed convolution is a
    plain (true) convolution of ``dout`` with the taps of that phase
    (``phase_taps``). All phases are one convolution with ``C_in * sh * sw``
    output channels; a reshape interleaves them and a window cuts rows
    ``[pt, pt + H)`` (zero-filled below the last covered row). No lhs
    dilation, no window reversal: nothing XLA CPU's operand-swap rewrite can
    break.
    """
    n, c_in, h, wd = geom.x_shape
    c_out, c_in_g, kh, kw = geom.w_shape
    _, _, ho, wo = geom.y_shape
    if 0 in (n, ho, wo):
        return jnp.zeros(geom.x_shape, dout.dtype)
    g = geom.group
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    ah, th = phase_taps(kh, sh, dh)
    aw, tw = phase_taps(kw, sw, dw)
    wext = jnp.pad(w, ((0, 0), (0, 0), (0, 1), (0, 1)))  # tap index k -> 0
    ih = np.asarray(th)[:, :, None, None]
    iw = np.asarray(tw)[None, None, :, :]
    v = wext[:, :, ih, iw]  # (C_out, C_in/g, sh, ah, sw, aw)
    v = v.reshape(g, c_out // g, c_in_g, sh, ah, sw, aw).transpose(0, 2, 3, 5, 1, 4, 6)
    v = v.reshape(c_in * sh * sw, c_out // g, ah, aw)
    out = conv(dout, v, strides=(1, 1), padding=((ah - 1, ah - 1), (aw - 1, aw - 1)), groups=g)
    qh, qw = ho + ah - 1, wo + aw - 1
    out = out.reshape(n, c_in, sh, sw, qh, qw).transpose(0, 1, 4, 2, 5, 3).reshape(n, c_in, qh * sh, qw * sw)
    return _window(out, (geom.padding[0], geom.padding[2]), (h, wd)).astype(dout.dtype)


def cpu_backprop_input(dout, w, *, geom: ConvGeometry):
    """CPU choice: no lhs dilation ever (see ``backprop_input_subpixel``)."""
    if geom.stride == (1, 1):
        return backprop_input_default(dout, w, geom=geom)
    return backprop_input_subpixel(dout, w, geom=geom)

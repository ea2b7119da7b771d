"""Independent float64 NumPy references, written from the spec's definition.

``out[n, c, y, x] = sum dout[n, o, ho, wo] * weight[o, c mod (C_in/g), i, j]`` over
``ho*sh + i*dh == y + pt`` and ``wo*sw + j*dw == x + pl``, ``o`` in the group of ``c``:
a scatter-add of every ``dout`` pixel through the kernel into the padded input, then a crop.
No JAX, no convolution library: loops over the kernel taps with NumPy slicing.
All arrays NCHW / OIHW; padding is (top, bottom, left, right).
"""

from __future__ import annotations

import itertools

import numpy as np


def same_padding(size_hw, kernel_hw, stride, dilation) -> tuple[int, int, int, int]:
    """MindSpore's ``same`` padding (top, bottom, left, right), spec section 4."""
    out = []
    for size, k, s, d in zip(size_hw, kernel_hw, stride, dilation):
        need = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        out += [need // 2, need - need // 2]
    return tuple(out)


def output_size(size, k, s, d, lo, hi) -> int:
    """The forward convolution's output length on one axis, spec section 6 (floor division)."""
    return (size + lo + hi - (k - 1) * d - 1) // s + 1


def _padded_extent(size, out, k, s, d, lo, hi):
    return max(size + lo + hi, (out - 1) * s + (k - 1) * d + 1 if out > 0 else 0)


def backprop_input(dout, weight, input_size, stride, dilation, padding, group):
    """Transposed convolution (MindSpore Conv2DBackpropInput) in float64."""
    dout = np.asarray(dout, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c_in, h, w = input_size
    _, c_out, ho, wo = dout.shape
    _, c_in_g, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    hp = _padded_extent(h, ho, kh, sh, dh, pt, pb)
    wp = _padded_extent(w, wo, kw, sw, dw, pl, pr)
    buf = np.zeros((n, c_in, hp, wp))
    cog = c_out // group
    for gi in range(group):
        d_g = dout[:, gi * cog : (gi + 1) * cog]  # (n, cog, ho, wo)
        w_g = weight[gi * cog : (gi + 1) * cog]  # (cog, c_in_g, kh, kw)
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nohw,oc->nchw", d_g, w_g[:, :, i, j])
                buf[
                    :,
                    gi * c_in_g : (gi + 1) * c_in_g,
                    i * dh : i * dh + (ho - 1) * sh + 1 : sh,
                    j * dw : j * dw + (wo - 1) * sw + 1 : sw,
                ] += contrib
    return buf[:, :, pt : pt + h, pl : pl + w]


def conv2d(x, weight, stride, dilation, padding, group):
    """Forward cross-correlation (MindSpore Conv2D) in float64."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, c_out, max(ho, 0), max(wo, 0)))
    cog = c_out // group
    for gi in range(group):
        x_g = xp[:, gi * c_in_g : (gi + 1) * c_in_g]
        w_g = weight[gi * cog : (gi + 1) * cog]
        for i in range(kh):
            for j in range(kw):
                patch = x_g[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
                out[:, gi * cog : (gi + 1) * cog] += np.einsum("nchw,oc->nohw", patch, w_g[:, :, i, j])
    return out


def backprop_filter(dout, x, weight_shape, stride, dilation, padding, group):
    """Weight gradient (MindSpore Conv2DBackpropFilter) in float64."""
    dout = np.asarray(dout, np.float64)
    x = np.asarray(x, np.float64)
    c_out, c_in_g, kh, kw = weight_shape
    _, _, ho, wo = dout.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = np.zeros(weight_shape)
    cog = c_out // group
    for gi in range(group):
        x_g = xp[:, gi * c_in_g : (gi + 1) * c_in_g]
        d_g = dout[:, gi * cog : (gi + 1) * cog]
        for i in range(kh):
            for j in range(kw):
                patch = x_g[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
                out[gi * cog : (gi + 1) * cog, :, i, j] = np.einsum("nchw,nohw->oc", patch, d_g)
    return out


# -- N spatial dimensions (1-3): channels-first arrays, padding as (lo, hi) pairs --


def _taps(kernel):
    return itertools.product(*(range(k) for k in kernel))


def _window(idx, out, stride, dilation):
    return tuple(slice(i * d, i * d + (o - 1) * s + 1, s) for i, o, s, d in zip(idx, out, stride, dilation))


def conv_nd(x, weight, stride, dilation, padding, group):
    """Forward cross-correlation in float64, any number of spatial dims; ``padding`` pairs may be negative (crops)."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c_in = x.shape[:2]
    c_out, c_in_g, *kernel = weight.shape
    xp = _pad_or_crop(x, padding)
    out_sp = [(xp.shape[2 + a] - (k - 1) * d - 1) // s + 1 for a, (k, s, d) in enumerate(zip(kernel, stride, dilation))]
    out = np.zeros((n, c_out, *(max(o, 0) for o in out_sp)))
    if min(out_sp) <= 0 or n == 0:
        return out
    cog = c_out // group
    for gi in range(group):
        x_g = xp[:, gi * c_in_g : (gi + 1) * c_in_g]
        w_g = weight[gi * cog : (gi + 1) * cog]
        for idx in _taps(kernel):
            patch = x_g[(slice(None), slice(None)) + _window(idx, out_sp, stride, dilation)]
            out[:, gi * cog : (gi + 1) * cog] += np.einsum(
                "nc...,oc->no...", patch, w_g[(slice(None), slice(None)) + idx]
            )
    return out


def _pad_or_crop(x, padding):
    pos = [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
    x = np.pad(x, pos)
    idx = [slice(None), slice(None)] + [
        slice(max(-lo, 0), x.shape[2 + a] - max(-hi, 0)) for a, (lo, hi) in enumerate(padding)
    ]
    return x[tuple(idx)]


def conv_transpose_nd(y, weight, x_spatial, stride, dilation, padding, group):
    """The input gradient (transposed convolution) in float64, any number of spatial dims.

    ``out[n, c, p] = sum y[n, o, q] * weight[o, c mod (C_in/g), i]`` over ``q*s + i*d == p + lo``
    on every axis, ``o`` in the group of ``c``: a scatter-add into the padded input, then a crop.
    Windows whose rows lie past the input (``hi`` < 0 or the cropped windows of an
    ``output_padding`` >= stride) scatter into a buffer large enough and are cut away.
    """
    y = np.asarray(y, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c_out, *out_sp = y.shape
    _, c_in_g, *kernel = weight.shape
    c_in = c_in_g * group
    extent = [
        max(lo + size + max(hi, 0), (o - 1) * s + (k - 1) * d + 1)
        for size, o, k, s, d, (lo, hi) in zip(x_spatial, out_sp, kernel, stride, dilation, padding)
    ]
    buf = np.zeros((n, c_in, *extent))
    cog = c_out // group
    if n and min(out_sp) > 0:
        for gi in range(group):
            y_g = y[:, gi * cog : (gi + 1) * cog]
            w_g = weight[gi * cog : (gi + 1) * cog]
            for idx in _taps(kernel):
                contrib = np.einsum("no...,oc->nc...", y_g, w_g[(slice(None), slice(None)) + idx])
                buf[(slice(None), slice(gi * c_in_g, (gi + 1) * c_in_g)) + _window(idx, out_sp, stride, dilation)] += (
                    contrib
                )
    # A crop at the start (lo < 0): the first -lo input positions lie before the buffer, and get zeros.
    front = [max(-lo, 0) for lo, _ in padding]
    buf = np.pad(buf, [(0, 0), (0, 0)] + [(f, 0) for f in front])
    crop = tuple(slice(lo + f, lo + f + size) for size, f, (lo, _) in zip(x_spatial, front, padding))
    return buf[(slice(None), slice(None)) + crop]


def backprop_filter_nd(y, x, weight_shape, stride, dilation, padding, group):
    """The weight gradient in float64, any number of spatial dims."""
    y = np.asarray(y, np.float64)
    x = np.asarray(x, np.float64)
    c_out, c_in_g, *kernel = weight_shape
    out_sp = y.shape[2:]
    xp = _pad_or_crop(x, padding)
    need = [(o - 1) * s + (k - 1) * d + 1 for o, k, s, d in zip(out_sp, kernel, stride, dilation)]
    if any(xp.shape[2 + a] < need[a] for a in range(len(need))):
        xp = np.pad(xp, [(0, 0), (0, 0)] + [(0, max(0, need[a] - xp.shape[2 + a])) for a in range(len(need))])
    out = np.zeros(weight_shape)
    if y.shape[0] == 0 or min(out_sp) == 0:
        return out
    cog = c_out // group
    for gi in range(group):
        x_g = xp[:, gi * c_in_g : (gi + 1) * c_in_g]
        y_g = y[:, gi * cog : (gi + 1) * cog]
        for idx in _taps(kernel):
            patch = x_g[(slice(None), slice(None)) + _window(idx, out_sp, stride, dilation)]
            axes = tuple(range(2, patch.ndim))
            out[(slice(gi * cog, (gi + 1) * cog), slice(None)) + idx] = np.tensordot(
                y_g, patch, ((0, *axes), (0, *axes))
            )
    return out

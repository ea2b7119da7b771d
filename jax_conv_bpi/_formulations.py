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

import functools

import jax
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


def conv_off_ynn(lhs, rhs, *, padding, rhs_dilation=(1, 1), groups=1):
    """A stride-1 ``conv`` that XLA CPU does not hand to its YNNPACK convolution.

    jaxlib 0.10.2's CPU compiler gives a convolution to YNNPACK only when every
    padding is at most ``(extent - 1) // 2`` (up to "same" padding); on the
    suite's stride-1 shapes that backend ran 1.2-1.7x slower than XLA's other
    one (``docs/performance.md``). Raising the top padding one step past that
    bound and cropping the extra rows keeps the result and costs a few rows
    of work. A compiler that routes differently just computes those rows.
    """
    (top, bottom), cols = padding
    extent = (rhs.shape[2] - 1) * rhs_dilation[0] + 1
    extra = max(0, (extent - 1) // 2 + 1 - top) if extent > 1 else 0
    out = conv(
        lhs, rhs, strides=(1, 1), padding=((top + extra, bottom), cols), rhs_dilation=rhs_dilation, groups=groups
    )
    return out[:, :, extra:] if extra else out


def _zero_result(geom: ConvGeometry) -> bool:
    """No batch or no ``dout`` pixel: every result of the family is zeros."""
    n, _, ho, wo = geom.y_shape
    return 0 in (n, ho, wo)


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
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    pads = [_padding.lhs_dilated_padding(*geom.axis(a)) for a in range(2)]
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
    if _zero_result(geom):
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
    for rho, phase in enumerate(_phase_split(k, s, d)):
        for i, a in phase:
            table[rho][taps - 1 - a] = i
    return taps, table


def _phase_split(k: int, s: int, d: int) -> list[list[tuple[int, int]]]:
    """Per phase ``rho``, its taps ``(i, a)`` with ``i * d = a * s + rho``, in increasing ``i``."""
    phases: list[list[tuple[int, int]]] = [[] for _ in range(s)]
    for i in range(k):
        a, rho = divmod(i * d, s)
        phases[rho].append((i, a))
    return phases


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
    if _zero_result(geom):
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


# -- CPU paths of the input gradient -----------------------------------------
#
# Row ``o`` of ``dout`` and tap ``i`` of the kernel land on row ``r = o*s + i*d``
# of the padded transposed output, i.e. on input row ``y = r - pt``. Splitting
# ``r = q*s + rho`` gives ``s`` phases; tap ``i`` with ``i*d = a*s + rho`` feeds
# phase ``rho`` at ``q = o + a``. Each phase is a plain (true) convolution of
# ``dout`` with its own taps, and the output is the interleave of the phases.
# The paths below differ only in how they compute the phases.


def _axis_plan(size: int, out: int, k: int, s: int, d: int, lo: int):
    """One axis: phase rows ``[q0, q1)`` and, per phase, its taps ``(i, a)``.

    ``[q0 * s, q1 * s)`` covers padded rows ``[lo, lo + size)``; the interleave
    is cropped to them afterwards.
    """
    return lo // s, -(-(size + lo) // s), _phase_split(k, s, d)


def _plans(geom: ConvGeometry):
    return [_axis_plan(*geom.axis(a)) for a in range(2)]


def _shift(x, axis: int, start: int, length: int):
    """``x[start : start + length]`` along ``axis`` with zero fill outside (``start`` may be < 0)."""
    n = x.shape[axis]
    if start == 0 and length == n:
        return x
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (-start, start + length - n, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _interleave(phases, geom: ConvGeometry, plans):
    """``phases[rho_h][rho_w]`` (N, C, L, M) -> the cropped (N, C, H, W) input gradient."""
    (q0h, q1h, _), (q0w, q1w, _) = plans
    sh, sw = geom.stride
    n, c, h, w = geom.x_shape
    ln, m = q1h - q0h, q1w - q0w
    if sh * sw == 1:
        out = phases[0][0]
    else:
        out = jnp.stack([jnp.stack(row, axis=-1) for row in phases], axis=3)  # (N, C, L, sh, M, sw)
        out = out.reshape(n, c, ln * sh, m * sw)
    top, left = geom.padding[0] - q0h * sh, geom.padding[2] - q0w * sw
    return out[:, :, top : top + h, left : left + w]


def _overlap_add(phase_taps, geom: ConvGeometry, acc):
    """Phases as sums of shifted per-tap terms.

    ``phase_taps(taps_h, taps_w)`` returns a function ``tap(i, j)`` giving the
    (N, C_in, Ho, Wo) term of tap ``(i, j)`` of that phase (so a caller can
    compute one phase's terms at a time).
    """
    plans = _plans(geom)
    (q0h, q1h, _), (q0w, q1w, _) = plans
    ln, m = q1h - q0h, q1w - q0w

    def phase(taps_h, taps_w):
        tap = phase_taps(taps_h, taps_w)
        total = None
        for i, a in taps_h:
            for j, b in taps_w:
                term = _shift(_shift(tap(i, j), 2, q0h - a, ln), 3, q0w - b, m)
                total = term if total is None else total + term
        return total

    return _interleave(_phase_grid(geom, plans, acc, phase), geom, plans)


def _phase_grid(geom: ConvGeometry, plans, acc, phase):
    """The ``sh x sw`` phases: ``phase(taps_h, taps_w)``, or zeros for a phase with no tap."""
    (q0h, q1h, th), (q0w, q1w, tw) = plans
    zeros = jnp.zeros((*geom.x_shape[:2], q1h - q0h, q1w - q0w), acc)
    return [[phase(taps_h, taps_w) if taps_h and taps_w else zeros for taps_w in tw] for taps_h in th]


def _gemm_operands(dout, w, geom: ConvGeometry):
    g = geom.group
    n, c_out, ho, wo = geom.y_shape
    _, c_in_g, kh, kw = geom.w_shape
    return dout.reshape(n, g, c_out // g, ho, wo), w.reshape(g, c_out // g, c_in_g, kh, kw)


def backprop_input_gemm(dout, w, *, geom: ConvGeometry):
    """One matmul for every tap of the kernel (``C_out`` contracted), then an overlap-add.

    The matmul's result holds one (N, C_in, Ho, Wo) plane per tap, i.e. about
    ``KH*KW / (sh*sw)`` times the input gradient's size; each phase is the
    sum of its taps' shifted planes. For a kernel equal to the stride (U-Net
    ``k2s2``, 1x1 kernels at stride 1) every phase is one unshifted tap: one
    matmul plus a transpose.
    Meant for few taps per phase (the overlap-add reads every plane once).
    """
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    acc = _acc_dtype(dout.dtype)
    n, c_out, ho, wo = geom.y_shape
    c_in = geom.x_shape[1]
    kh, kw = geom.kernel
    if geom.kernel == geom.stride and geom.dilation == (1, 1) and geom.group == 1:
        # Tap (i, j) is phase (i, j), unshifted: one (C_in*KH*KW, N*pixels)
        # matmul contracting the weight's leading axis, both operands in place
        # (no copy for N = 1; faster than the einsum below or a
        # pixels-by-channels product here), then one transpose.
        z = lax.dot_general(
            w.reshape(c_out, c_in * kh * kw),
            dout.reshape(n, c_out, ho * wo),
            (((0,), (1,)), ((), ())),
            precision=_precision(dout.dtype),
            preferred_element_type=acc,
        )
        full = z.reshape(c_in, kh, kw, n, ho, wo).transpose(3, 0, 4, 1, 5, 2).reshape(n, c_in, ho * kh, wo * kw)
        return _window(full, (geom.padding[0], geom.padding[2]), geom.x_shape[2:]).astype(dout.dtype)
    d5, w5 = _gemm_operands(dout, w, geom)
    z = jnp.einsum("ngohw,gocij->ngcijhw", d5, w5, precision=_precision(dout.dtype), preferred_element_type=acc)
    z = z.reshape(n, c_in, kh, kw, ho, wo)
    return _overlap_add(lambda taps_h, taps_w: lambda i, j: z[:, :, i, j], geom, acc).astype(dout.dtype)


def backprop_input_phase_gemm(dout, w, *, geom: ConvGeometry):
    """Per phase, one matmul for that phase's taps, then its overlap-add.

    Like ``gemm`` but with one matmul per phase, so only one phase's per-tap
    planes are live at a time (the many-tap ``k7s2`` stem with few input
    channels).
    """
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    acc = _acc_dtype(dout.dtype)
    n, _, ho, wo = geom.y_shape
    d5, w5 = _gemm_operands(dout, w, geom)

    def phase_taps(taps_h, taps_w):
        ih = [i for i, _ in taps_h]
        iw = [j for j, _ in taps_w]
        wp = w5[:, :, :, ih][:, :, :, :, iw]
        z = jnp.einsum("ngohw,gocij->ngcijhw", d5, wp, precision=_precision(dout.dtype), preferred_element_type=acc)
        z = z.reshape(n, geom.x_shape[1], len(ih), len(iw), ho, wo)
        pos_h = {i: p for p, i in enumerate(ih)}
        pos_w = {j: p for p, j in enumerate(iw)}
        return lambda i, j: z[:, :, pos_h[i], pos_w[j]]

    return _overlap_add(phase_taps, geom, acc).astype(dout.dtype)


def backprop_input_direct(dout, w, *, geom: ConvGeometry):
    """Per-tap fused multiply-add, no convolution and no matmul.

    Every tap is ``dout`` times a per-channel weight, summed over the few
    output channels of its group, shifted into its phase. XLA fuses each
    phase into one loop: the form for depthwise and small groups, where XLA
    CPU's grouped convolution (``feature_group_count``) is very slow.
    """
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    acc = _acc_dtype(dout.dtype)
    g = geom.group
    n, c_out, ho, wo = geom.y_shape
    _, c_in_g, kh, kw = geom.w_shape
    og = c_out // g
    d6 = dout.astype(acc).reshape(n, g, og, 1, ho, wo)
    w5 = w.astype(acc).reshape(g, og, c_in_g, kh, kw)

    def tap(i, j):
        t = d6 * w5[:, :, :, i, j][None, :, :, :, None, None]
        t = t[:, :, 0] if og == 1 else t.sum(axis=2)
        return t.reshape(n, g * c_in_g, ho, wo)

    return _overlap_add(lambda taps_h, taps_w: tap, geom, acc).astype(dout.dtype)


def _grouped_transpose(v, group: int):
    """(C_out, C_in/g, a, b) -> (C_in, C_out/g, a, b), the weight of a conv of ``dout``."""
    c_out, c_in_g = v.shape[:2]
    v = v.reshape(group, c_out // group, c_in_g, *v.shape[2:]).transpose(0, 2, 1, 3, 4)
    return v.reshape(group * c_in_g, c_out // group, *v.shape[3:])


def backprop_input_phase_conv(dout, w, *, geom: ConvGeometry):
    """One stride-1 convolution per non-empty phase, each with only its own taps.

    No wasted taps when the kernel is not a multiple of the stride (``k3s2``,
    ``k7s2``), no work at all for empty phases (1x1 kernel under a stride).
    A phase's taps are evenly spaced (``d / gcd(d, s)`` apart), so each phase
    is an ordinary dilated correlation with a reversed tap order.
    """
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    acc = _acc_dtype(dout.dtype)
    plans = _plans(geom)
    (q0h, q1h, _), (q0w, q1w, _) = plans
    ln, m = q1h - q0h, q1w - q0w
    ho, wo = geom.y_shape[2:]

    def axis_conv(taps, q0, length, out):
        # taps sorted by a; correlation over reversed order with spacing e.
        idx = [i for i, _ in reversed(taps)]
        a_min, a_max = taps[0][1], taps[-1][1]
        e = taps[1][1] - taps[0][1] if len(taps) > 1 else 1
        lo = a_max - q0
        hi = length + (a_max - a_min) - lo - out
        return idx, e, (lo, hi)

    def phase(taps_h, taps_w):
        ih, eh, ph = axis_conv(taps_h, q0h, ln, ho)
        iw, ew, pw = axis_conv(taps_w, q0w, m, wo)
        v = _grouped_transpose(w[:, :, ih][:, :, :, iw], geom.group)
        pos, crops = _split_negative([ph, pw])
        return conv(_crop(dout, crops), v, strides=(1, 1), padding=pos, rhs_dilation=(eh, ew), groups=geom.group)

    return _interleave(_phase_grid(geom, plans, acc, phase), geom, plans).astype(dout.dtype)


def backprop_input_flipped_conv(dout, w, *, geom: ConvGeometry):
    """Stride 1 only: the flipped correlation of ``backprop_input_default`` (no lhs dilation).

    Through ``conv_off_ynn``, so XLA CPU uses its faster convolution backend.
    """
    if geom.stride != (1, 1):
        raise ValueError(f"the flipped_conv path needs stride (1, 1), got {geom.stride}")
    if _zero_result(geom):
        return jnp.zeros(geom.x_shape, dout.dtype)
    pads = [
        _padding.lhs_dilated_padding(
            geom.x_shape[2 + a], geom.y_shape[2 + a], geom.kernel[a], 1, geom.dilation[a], geom.padding[2 * a]
        )
        for a in range(2)
    ]
    pos, crops = _split_negative(pads)
    out = conv_off_ynn(
        dout, flip_transpose_weight(w, geom.group), padding=pos, rhs_dilation=geom.dilation, groups=geom.group
    )
    return _crop(out, crops).astype(dout.dtype)


PATHS = {
    "lhs_dilated": backprop_input_default,
    "flipped_conv": backprop_input_flipped_conv,
    "subpixel": backprop_input_subpixel,
    "phase_conv": backprop_input_phase_conv,
    "gemm": backprop_input_gemm,
    "phase_gemm": backprop_input_phase_gemm,
    "direct": backprop_input_direct,
}
"""Every input-gradient formulation by name; each takes ``(dout, w, *, geom)``.

``lhs_dilated`` is the GPU/TPU form; on CPU it is safe only without dilation
under a stride (see the module notes). ``flipped_conv`` needs stride 1. The
others accept every geometry.
"""

# Dispatcher thresholds (see docs/performance.md for the measurements).
DIRECT_MAX_CHANNEL_PRODUCT = 16  # (C_in/g) * (C_out/g) at or below this: per-tap multiply-add
SMALL_C_IN = 8  # fewer input channels than this: the sub-pixel conv's output is too thin
GEMM_MAX_EXPANSION = 4  # gemm's per-tap planes at most this many times the result
GEMM_MIN_CONTRACTION = 256  # C_out/g below this: phase_conv beat gemm (k3s2, 128 channels)


def _phase_stats(geom: ConvGeometry):
    """(taps of the largest phase per axis, taps zero-filled by the one-conv sub-pixel form)."""
    counts = []
    for a in range(2):
        _, _, taps = _axis_plan(
            geom.x_shape[2 + a],
            geom.y_shape[2 + a],
            geom.kernel[a],
            geom.stride[a],
            geom.dilation[a],
            geom.padding[2 * a],
        )
        counts.append([len(t) for t in taps])
    most = (max(counts[0]), max(counts[1]))
    used = sum(counts[0]) * sum(counts[1])
    return most, most[0] * most[1] * len(counts[0]) * len(counts[1]) - used


def select_cpu_path(geom: ConvGeometry) -> str:
    """The CPU input-gradient path for one geometry (a name in ``PATHS``), chosen at trace time.

    1. Few channels per group (depthwise, channel multipliers, small groups):
       ``direct``.
    2. Stride 1: ``gemm`` for a 1x1 kernel (one matmul), else ``flipped_conv``.
    3. Every phase has at most one tap (kernel equal to the stride, 1x1
       kernels): ``gemm`` (one matmul plus an interleave).
    4. The one-conv sub-pixel form wastes no tap (kernel a multiple of the
       stride): ``subpixel``, or ``gemm`` when ``C_in`` is small.
    5. Otherwise (kernel not a multiple of the stride): ``phase_gemm`` when
       ``C_in`` is small; ``subpixel`` when ``gemm``'s per-tap planes would be
       more than ``GEMM_MAX_EXPANSION`` times the result; else ``gemm`` when
       its matmul contracts at least ``GEMM_MIN_CONTRACTION`` channels, and
       ``phase_conv`` when it contracts fewer.
    """
    c_out, c_in_g, kh, kw = geom.w_shape
    if c_in_g * (c_out // geom.group) <= DIRECT_MAX_CHANNEL_PRODUCT:
        return "direct"
    if geom.stride == (1, 1):
        return "gemm" if (kh, kw) == (1, 1) else "flipped_conv"
    most, wasted = _phase_stats(geom)
    if most == (1, 1):
        return "gemm"
    small_c_in = geom.x_shape[1] < SMALL_C_IN
    if wasted == 0:
        return "gemm" if small_c_in else "subpixel"
    if small_c_in:
        return "phase_gemm"
    ho, wo = geom.y_shape[2:]
    h, w = geom.x_shape[2:]
    if kh * kw * ho * wo > GEMM_MAX_EXPANSION * h * w:
        return "subpixel"
    return "gemm" if c_out // geom.group >= GEMM_MIN_CONTRACTION else "phase_conv"


def cpu_backprop_input(dout, w, *, geom: ConvGeometry):
    """CPU lowering of the input gradient: ``PATHS[select_cpu_path(geom)]``.

    No path the dispatcher picks uses lhs dilation (XLA CPU aborts on some
    strided + dilated lhs-dilated convolutions).
    """
    return PATHS[select_cpu_path(geom)](dout, w, geom=geom)


# -- CPU paths of the forward convolution and the weight gradient -------------
#
# Used by the custom backward (the cotangent of ``dout`` is ``conv2d``, the
# cotangent of the weight ``backprop_filter``). Only depthwise / small groups
# get a CPU form of their own: the same per-tap fused multiply-add as
# ``backprop_input_direct``, instead of XLA CPU's slow grouped convolution.


def _tap_slices(x, geom: ConvGeometry):
    """Padded input sliced per tap: ``tap(i, j)`` is (N, C_in, Ho, Wo), row ``q*s + i*d``."""
    pt, pb, pl, pr = geom.padding
    xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), (pt, pb, 0), (pl, pr, 0)])
    n, c = x.shape[:2]
    ho, wo = geom.y_shape[2:]
    (sh, sw), (dh, dw) = geom.stride, geom.dilation

    def tap(i, j):
        start = (0, 0, i * dh, j * dw)
        limit = (n, c, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1)
        return lax.slice(xp, start, limit, (1, 1, sh, sw))

    return tap


def _grouped_taps(x, geom: ConvGeometry):
    """``(i, j, rows)`` per kernel tap: ``tap(i, j)`` as (N, g, 1, C_in/g, Ho, Wo), in the accumulation dtype."""
    n, _, ho, wo = geom.y_shape
    _, c_in_g, kh, kw = geom.w_shape
    tap = _tap_slices(x.astype(_acc_dtype(x.dtype)), geom)
    for i in range(kh):
        for j in range(kw):
            yield i, j, tap(i, j).reshape(n, geom.group, 1, c_in_g, ho, wo)


def conv2d_direct(x, w, *, geom: ConvGeometry):
    """Forward convolution as a per-tap fused multiply-add (depthwise / small groups)."""
    if _zero_result(geom):
        return jnp.zeros(geom.y_shape, x.dtype)
    c_out = geom.y_shape[1]
    g, c_in_g = geom.group, geom.w_shape[1]
    w5 = w.astype(_acc_dtype(x.dtype)).reshape(g, c_out // g, c_in_g, *geom.kernel)
    total = None
    for i, j, xs in _grouped_taps(x, geom):
        t = xs * w5[:, :, :, i, j][None, :, :, :, None, None]
        t = t[:, :, :, 0] if c_in_g == 1 else t.sum(axis=3)
        total = t if total is None else total + t
    return total.reshape(geom.y_shape).astype(x.dtype)


def backprop_filter_direct(dout, x, *, geom: ConvGeometry):
    """Weight gradient as one fused multiply-reduce per tap (depthwise / small groups)."""
    n, c_out, ho, wo = geom.y_shape
    if _zero_result(geom):
        return jnp.zeros(geom.w_shape, dout.dtype)
    d6 = dout.astype(_acc_dtype(dout.dtype)).reshape(n, geom.group, c_out // geom.group, 1, ho, wo)
    taps = [(xs * d6).sum(axis=(0, 4, 5)) for _, _, xs in _grouped_taps(x, geom)]  # each (g, og, c_in_g)
    return jnp.stack(taps, axis=-1).reshape(geom.w_shape).astype(dout.dtype)


def conv2d_off_ynn(x, w, *, geom: ConvGeometry):
    """Forward convolution; stride 1 goes through ``conv_off_ynn`` (XLA CPU's faster backend)."""
    if geom.stride != (1, 1) or 0 in geom.y_shape:
        return conv2d_default(x, w, geom=geom)
    pt, pb, pl, pr = geom.padding
    pos, crops = _split_negative([(pt, pb), (pl, pr)])
    y = conv_off_ynn(_crop(x, crops), w, padding=pos, rhs_dilation=geom.dilation, groups=geom.group)
    return y.astype(x.dtype)


def backprop_filter_gemm(dout, x, *, geom: ConvGeometry):
    """Weight gradient as one matmul per tap: ``dout`` times that tap's strided input slice.

    Each tap contracts batch and pixels: ``(C_out, N*Ho*Wo) x (N*Ho*Wo, C_in)``.
    Ungrouped only. On the suite it ran 1.1-4.7x faster than XLA CPU's
    backward-filter convolution up to 49 taps, slower at 256 (FCN ``k16``).
    """
    if _zero_result(geom):
        return jnp.zeros(geom.w_shape, dout.dtype)
    if geom.group != 1:
        return backprop_filter_default(dout, x, geom=geom)
    acc = _acc_dtype(dout.dtype)
    kh, kw = geom.kernel
    tap = _tap_slices(x, geom)
    prec = _precision(dout.dtype)
    taps = [
        jnp.einsum("nohw,nchw->oc", dout, tap(i, j), precision=prec, preferred_element_type=acc)
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps, axis=-1).reshape(geom.w_shape).astype(dout.dtype)


CONV2D_PATHS = {"default": conv2d_default, "off_ynn": conv2d_off_ynn, "direct": conv2d_direct}
BACKPROP_FILTER_PATHS = {
    "default": backprop_filter_default,
    "gemm": backprop_filter_gemm,
    "direct": backprop_filter_direct,
}
FILTER_GEMM_MAX_TAPS = 64  # backprop_filter: per-tap matmuls up to this many taps (ungrouped)


def select_cpu_path_dense(geom: ConvGeometry) -> str:
    """CPU path of ``conv2d`` and ``backprop_filter``: ``direct`` for few channels per group."""
    c_out, c_in_g = geom.w_shape[:2]
    return "direct" if c_in_g * (c_out // geom.group) <= DIRECT_MAX_CHANNEL_PRODUCT else "default"


def cpu_conv2d(x, w, *, geom: ConvGeometry):
    """CPU lowering of ``conv2d``: ``direct`` for few channels per group, else ``off_ynn``."""
    name = select_cpu_path_dense(geom)
    return CONV2D_PATHS["off_ynn" if name == "default" else name](x, w, geom=geom)


def select_cpu_filter_path(geom: ConvGeometry) -> str:
    """CPU path of ``backprop_filter``: ``direct`` for few channels per group, ``gemm``
    ungrouped with at most ``FILTER_GEMM_MAX_TAPS`` taps, else ``default``."""
    name = select_cpu_path_dense(geom)
    if name == "default" and geom.group == 1 and geom.kernel[0] * geom.kernel[1] <= FILTER_GEMM_MAX_TAPS:
        return "gemm"
    return name


def cpu_backprop_filter(dout, x, *, geom: ConvGeometry):
    """CPU lowering of ``backprop_filter``: ``BACKPROP_FILTER_PATHS[select_cpu_filter_path(geom)]``."""
    return BACKPROP_FILTER_PATHS[select_cpu_filter_path(geom)](dout, x, geom=geom)


# -- XLA CPU compiler options ---------------------------------------------------

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA CPU's default YNNPACK fusion types (jaxlib 0.10.2: individual dots and
# individual convolutions; the optimized HLO of the suite's programs is
# identical) minus INDIVIDUAL_CONVOLUTION: the per-compilation equivalent of
# ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``.
# Convolutions go to XLA's other CPU convolution backend; dots keep YNNPACK
# (turning it off for dots slows the matmul paths, and adding ELTWISE, not a
# default, made the depthwise path 3x slower).
_NO_YNN_CONVOLUTION = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


@functools.cache
def _ynn_option_supported() -> bool:
    """Whether this jaxlib's CPU compiler accepts the option (one tiny compile, cached)."""
    try:
        cpu = jax.devices("cpu")[0]
        with jax.default_device(cpu):
            jitted = jax.jit(lambda x: x + 1, compiler_options={YNN_FUSION_OPTION: _NO_YNN_CONVOLUTION})
            jitted.lower(np.float32(0)).compile()
    except Exception:  # an unknown option, an unknown value, no CPU backend
        return False
    return True


def cpu_compiler_options() -> dict[str, str]:
    """XLA CPU compiler options that send convolutions to XLA's non-YNNPACK backend.

    For ``jax.jit(f, compiler_options=cpu_compiler_options())``: it applies to
    that one compilation only (no global flag) and to EVERY convolution in
    ``f``, not only this library's. Returns ``{}`` when the installed jaxlib
    does not know the option. Only for CPU compilations.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> step = jax.jit(
      ...     lambda d, w: jcb.conv2d_backprop_input(d, w, (1, 2, 5, 5)),
      ...     compiler_options=jcb.cpu_compiler_options(),
      ... )
      >>> step(jnp.ones((1, 3, 3, 3)), jnp.ones((3, 2, 3, 3))).shape
      (1, 2, 5, 5)
    """
    return {YNN_FUSION_OPTION: _NO_YNN_CONVOLUTION} if _ynn_option_supported() else {}

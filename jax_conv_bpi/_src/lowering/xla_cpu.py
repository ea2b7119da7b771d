"""Workarounds for XLA CPU in jaxlib 0.10.x (convolution routing, one miscompiled reduce), in one place.

Nothing else in the package knows about YNNPACK. The routing workarounds
are performance-only (results are identical without them); a jaxlib that routes
convolutions differently can drop them by making ``conv_off_ynn`` a plain
``conv`` and ``ynn_convolution_off`` return ``{}`` (``small_sum``, below, is
for correctness: a plain ``sum`` once jaxlib compiles the reduce correctly).

* jaxlib 0.10.2's CPU compiler hands a stride-1 convolution to YNNPACK only
  when every padding is at most ``(extent - 1) // 2`` (up to "same" padding);
  on the benchmark's stride-1 shapes that backend ran 1.2-1.7x slower than
  XLA's other one (``docs/performance.md``). ``conv_off_ynn`` raises the first
  spatial axis's low padding one step past that bound and crops the extra
  rows: the same result for a few rows of extra work. (A strided convolution
  goes to YNNPACK whatever its padding; only ``ynn_convolution_off`` moves it.)
* ``ynn_convolution_off()`` (public as ``cpu_compiler_options()``) is the per-compilation option that sends every
  convolution of a user's own ``jax.jit`` to the other backend; eager calls
  of the primitives compile with it on CPU.
* XLA CPU runs a 3-D convolution 3-5x slower than the same arithmetic as one
  2-D convolution (measured on the benchmark's 3-D U-Net and V-Net shapes,
  ``docs/performance.md``). ``conv`` therefore folds the depth taps into the
  channels and the output depth into the batch: a 3-D convolution is a 2-D
  one over ``KD`` depth-shifted copies of the input. Exact (the same sums,
  another order); costs ``KD`` strided copies of the input.

``conv`` is the one convolution every CPU formulation calls.

One workaround is for correctness: ``small_sum`` adds the few channels of a
group (the ``direct`` forms) with unrolled adds instead of a reduce. Under
jaxlib 0.10's default options XLA CPU miscompiled that reduce inside larger
programs (``jax.jacfwd`` over both operands of a grouped 3-D ``conv_transpose``
returned zeros for 8% of the input gradient; ``jax.hessian`` of another one
died with SIGSEGV in a YNNPACK reduce fusion; ``tests/test_transforms_nd.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import portable

__all__ = ["conv", "conv_off_ynn", "small_sum", "ynn_convolution_off"]


def small_sum(t, axis: int):
    """``t.sum(axis)`` as unrolled adds, for an axis of a few elements (see the module docstring)."""
    return functools.reduce(lax.add, [lax.index_in_dim(t, j, axis, keepdims=False) for j in range(t.shape[axis])])


def conv_off_ynn(lhs, rhs, geom: ConvGeometry, *, padding, rhs_dilation=None, groups=1):
    """A stride-1 ``portable.conv`` that XLA CPU does not hand to its YNNPACK convolution."""
    padding = [tuple(p) for p in padding]
    dil = (1,) * (lhs.ndim - 2) if rhs_dilation is None else tuple(rhs_dilation)
    extent = (rhs.shape[2] - 1) * dil[0] + 1
    top = padding[0][0]
    extra = max(0, (extent - 1) // 2 + 1 - top) if extent > 1 else 0
    padding[0] = (top + extra, padding[0][1])
    out = portable.conv(lhs, rhs, geom, padding=padding, rhs_dilation=dil, groups=groups)
    return out[:, :, extra:] if extra else out


def conv(lhs, rhs, geom: ConvGeometry, *, padding, strides=None, rhs_dilation=None, groups=1, off_ynn=False):
    """A CPU formulation's convolution (channels-first, no lhs dilation), routed for XLA CPU's speed.

    3-D: depth folded into a 2-D convolution (``conv_depth_folded``). Then, or
    in 1-D and 2-D: ``conv_off_ynn`` when ``off_ynn`` and every stride of the
    2-D convolution is 1, else the plain ``portable.conv``.
    """
    nd = lhs.ndim - 2
    strides = (1,) * nd if strides is None else tuple(strides)
    rhs_dilation = (1,) * nd if rhs_dilation is None else tuple(rhs_dilation)
    if nd == 3:
        return conv_depth_folded(
            lhs, rhs, geom, padding=padding, strides=strides, rhs_dilation=rhs_dilation, groups=groups, off_ynn=off_ynn
        )
    if off_ynn and set(strides) == {1}:
        return conv_off_ynn(lhs, rhs, geom, padding=padding, rhs_dilation=rhs_dilation, groups=groups)
    return portable.conv(lhs, rhs, geom, strides=strides, padding=padding, rhs_dilation=rhs_dilation, groups=groups)


def conv_depth_folded(lhs, rhs, geom: ConvGeometry, *, padding, strides, rhs_dilation, groups=1, off_ynn=False):
    """A 3-D convolution as one 2-D convolution.

    With depth padding ``(lo, hi)``, stride ``sd``, dilation ``dd`` and ``KD``
    depth taps, output depth ``t`` of channel ``o`` is
    ``sum_kd conv2d(x_pad[:, :, t*sd + kd*dd], w[o, :, kd])``. Stacking the
    ``KD`` depth-shifted, depth-strided copies of ``x`` along the channels
    (channel ``c * KD + kd``, so each group's channels stay contiguous) and
    reshaping ``w`` to ``(O, I * KD, KH, KW)`` makes the sum over ``kd`` part of
    the 2-D convolution's channel contraction; the output depths ride in the
    batch. With ``off_ynn`` that 2-D convolution is ``conv_off_ynn`` where its
    strides are 1 (the depth stride is folded away).
    """
    n, c, _, h, w = lhs.shape
    o, i, kd = rhs.shape[:3]
    lo, hi = padding[0]
    lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), ((0, 0, 0), (0, 0, 0), (lo, hi, 0), (0, 0, 0), (0, 0, 0)))
    sd, dd = strides[0], rhs_dilation[0]
    depth = (lhs.shape[2] - (kd - 1) * dd - 1) // sd + 1
    if depth <= 0 or 0 in lhs.shape or 0 in rhs.shape:
        return portable.conv(
            lhs, rhs, geom, strides=strides, padding=[(0, 0), *padding[1:]], rhs_dilation=rhs_dilation, groups=groups
        )
    taps = [lax.slice_in_dim(lhs, t * dd, t * dd + (depth - 1) * sd + 1, sd, axis=2) for t in range(kd)]
    folded = jnp.stack(taps, axis=2).transpose(0, 3, 1, 2, 4, 5).reshape(n * depth, c * kd, h, w)
    rhs2 = rhs.reshape(o, i * kd, *rhs.shape[3:])
    if off_ynn and set(strides[1:]) == {1}:
        out = conv_off_ynn(folded, rhs2, geom, padding=padding[1:], rhs_dilation=rhs_dilation[1:], groups=groups)
    else:
        out = portable.conv(
            folded,
            rhs2,
            geom,
            strides=strides[1:],
            padding=padding[1:],
            rhs_dilation=rhs_dilation[1:],
            groups=groups,
        )
    return out.reshape(n, depth, o, *out.shape[2:]).transpose(0, 2, 1, 3, 4)


YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA CPU's default YNNPACK fusion types (jaxlib 0.10.2: individual dots and
# individual convolutions) minus INDIVIDUAL_CONVOLUTION: the per-compilation
# equivalent of ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``.
# Dots keep YNNPACK (turning it off for dots slows the matmul paths).
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


def ynn_convolution_off() -> dict[str, str]:
    """The per-compilation option that keeps convolutions off YNNPACK (``{}`` where this jaxlib lacks it).

    What the public ``cpu_compiler_options()`` returns while this workaround lives.
    """
    return {YNN_FUSION_OPTION: _NO_YNN_CONVOLUTION} if _ynn_option_supported() else {}

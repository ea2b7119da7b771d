"""Workarounds for XLA CPU's convolution routing in jaxlib 0.10.x, in one place.

Nothing else in the package knows about YNNPACK. Both workarounds are
performance-only (results are identical without them); a jaxlib that routes
convolutions differently can drop this module by making ``conv_off_ynn`` a
plain ``conv`` and ``cpu_compiler_options`` return ``{}``.

* jaxlib 0.10.2's CPU compiler hands a convolution to YNNPACK only when every
  padding is at most ``(extent - 1) // 2`` (up to "same" padding); on the
  benchmark's stride-1 shapes that backend ran 1.2-1.7x slower than XLA's
  other one (``docs/performance.md``). ``conv_off_ynn`` raises the first
  spatial axis's low padding one step past that bound and crops the extra
  rows: the same result for a few rows of extra work.
* ``cpu_compiler_options()`` is the per-compilation option that sends every
  convolution of a user's own ``jax.jit`` to the other backend; eager calls
  of the primitives compile with it on CPU.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from . import _lowering
from ._geometry import ConvGeometry

__all__ = ["conv_off_ynn", "cpu_compiler_options"]


def conv_off_ynn(lhs, rhs, geom: ConvGeometry, *, padding, rhs_dilation=None, groups=1):
    """A stride-1 ``_lowering.conv`` that XLA CPU does not hand to its YNNPACK convolution."""
    padding = [tuple(p) for p in padding]
    dil = (1,) * (lhs.ndim - 2) if rhs_dilation is None else tuple(rhs_dilation)
    extent = (rhs.shape[2] - 1) * dil[0] + 1
    top = padding[0][0]
    extra = max(0, (extent - 1) // 2 + 1 - top) if extent > 1 else 0
    padding[0] = (top + extra, padding[0][1])
    out = _lowering.conv(lhs, rhs, geom, padding=padding, rhs_dilation=dil, groups=groups)
    return out[:, :, extra:] if extra else out


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

"""Which geometries the native kernels compute directly, in pure Python: the dispatcher's view of them.

The kernels decide for themselves when they run (``DirectFits`` and
``DirectGradFits`` in the plugin's ``native/src/direct_avx512.cc``); the CPU
dispatcher must know the same answer at trace time without loading the library.
These functions restate the kernels' rules on the geometry, and the native
tests check that both give the same answer (``kernels.direct`` asks the
loaded library).

Both direct kernels need a CPU with AVX-512, stride 1 and more than one tap.
The forward convolution also needs output lines that fill at least 3/4 of
their 16-float vectors and at most ``2**18`` weights; the weight gradient at
least 16 input channels and at most ``2**20`` weights (the measurements
behind each bound are beside the rules in the C++ source).
"""

from __future__ import annotations

import functools
import math
import pathlib

from jax_conv_bpi._src.base.geometry import ConvGeometry

__all__ = ["KERNELS", "direct", "has_avx512"]

KERNELS = ("forward", "weight_grad")
"""The native kernels with a direct form: the forward convolution and the weight gradient."""

VECTOR = 16  # floats per AVX-512 vector
FORWARD_MAX_WEIGHTS = 1 << 18
WEIGHT_GRAD_MAX_WEIGHTS = 1 << 20


@functools.cache
def has_avx512() -> bool:
    """The CPU has AVX-512F, read from Linux's ``/proc/cpuinfo`` (False where that cannot be read)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512f" in line.split() for line in text.splitlines())


def direct(geom: ConvGeometry, kernel: str) -> bool:
    """Whether ``kernel`` (one of ``KERNELS``) computes ``geom`` directly, without im2col patches."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    weights = math.prod(geom.w_shape)
    if not (has_avx512() and set(geom.stride) == {1} and math.prod(geom.kernel) > 1):
        return False
    if kernel == "forward":
        width = geom.y_shape[-1]
        vectors = -(-width // VECTOR)
        return 4 * width >= 3 * vectors * VECTOR and weights <= FORWARD_MAX_WEIGHTS
    return geom.w_shape[1] >= VECTOR and weights <= WEIGHT_GRAD_MAX_WEIGHTS

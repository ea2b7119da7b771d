"""Which geometries the native kernels compute directly, in pure Python: the dispatcher's view of them.

The kernels decide for themselves when they run (``DirectFits`` and
``DirectGradFits`` in the plugin's ``native/src/direct_avx512.cc``); the CPU
dispatcher must know the same answer at trace time without loading the library.
These functions restate the kernels' rules on the geometry, and the native
tests check that both give the same answer (``kernels.direct`` asks the
loaded library).

Both direct kernels need the kernels to run AVX-512 (``isa()``: the CPU's
best instruction set, or the one ``JCB_NATIVE_ISA`` asks for), stride 1 and
more than one tap.
The forward convolution also needs output lines that fill at least 3/4 of
their 16-float vectors and at most ``2**18`` weights; the weight gradient at
least 16 input channels and at most ``2**20`` weights (the measurements
behind each bound are beside the rules in the C++ source).
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from typing import NamedTuple

from jax_conv_bpi._src.base.geometry import ConvGeometry

__all__ = ["ISAS", "ISA_VARIABLE", "KERNELS", "IsaChoice", "cpu_isa", "direct", "has_avx512", "isa"]

KERNELS = ("forward", "weight_grad")
"""The native kernels with a direct form: the forward convolution and the weight gradient."""

VECTOR = 16  # floats per AVX-512 vector
FORWARD_MAX_WEIGHTS = 1 << 18
WEIGHT_GRAD_MAX_WEIGHTS = 1 << 20


ISAS = ("avx512", "avx2", "generic")
"""The instruction sets the kernels are compiled for, best first (``native/src/isa.h``)."""
ISA_VARIABLE = "JCB_NATIVE_ISA"
"""The environment variable that forces one of ``ISAS`` (read once, when first asked), for tests and benchmarks."""


@functools.cache
def cpu_isa() -> str:
    """The best of ``ISAS`` this CPU runs, from Linux's ``/proc/cpuinfo`` flags ("generic" where that cannot be read).

    As the library decides (``CpuIsa`` in ``native/src/isa.cc``): "avx512"
    with AVX-512F, "avx2" with AVX2 and FMA, else "generic".
    """
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return "generic"
    flags = next((set(line.split()) for line in text.splitlines() if line.startswith("flags")), set())
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "generic"


class IsaChoice(NamedTuple):
    """The instruction set the kernels run with (``isa``), how it was chosen (``why``) and a refused request."""

    isa: str
    why: str
    refused: str | None = None


@functools.cache
def isa() -> IsaChoice:
    """The instruction set the kernels run with: ``JCB_NATIVE_ISA`` where set and this CPU runs it, else ``cpu_isa()``.

    A value that is not one of ``ISAS``, or one beyond this CPU, is refused
    (``refused`` says why) and the CPU's best runs, as in the library
    (``jcb_native_set_isa``), which ``kernels.load`` asks the same.
    """
    cpu = cpu_isa()
    detected = "the CPU's best, by CPU detection"
    requested = os.environ.get(ISA_VARIABLE, "")
    if not requested:
        return IsaChoice(cpu, detected)
    if requested not in ISAS:
        return IsaChoice(cpu, detected, f"{ISA_VARIABLE}={requested!r} is not one of {', '.join(ISAS)}")
    if ISAS.index(requested) < ISAS.index(cpu):
        return IsaChoice(cpu, detected, f"{ISA_VARIABLE}={requested} refused: this CPU runs at most {cpu}")
    return IsaChoice(requested, f"forced by {ISA_VARIABLE}={requested} (the CPU runs up to {cpu})")


def has_avx512() -> bool:
    """The kernels run AVX-512: the CPU has AVX-512F and ``JCB_NATIVE_ISA`` does not ask for less (``isa()``)."""
    return isa().isa == "avx512"


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

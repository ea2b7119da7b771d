"""Which CPU formulation each primitive uses, per geometry, decided at trace time.

The thresholds were measured on the benchmark suite (``docs/performance.md``);
the rules read the geometry only, so one compiled program has one path. A
forced path (``conv_transpose(..., cpu_path=...)``) overrides the rule for
the input gradient.
"""

from __future__ import annotations

import functools
import math

from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import cpu_dense, cpu_input_grad
from jax_conv_bpi._src.native import kernels, rules

__all__ = [
    "CPU_PATHS",
    "NATIVE_PATHS",
    "SELECT_PATH",
    "check_forced_path",
    "cpu_lowering",
    "cpu_lowering_native",
    "refusal",
    "select_cpu_path",
    "select_filter_path",
    "select_forward_path",
    "serving_paths",
    "wants_native",
]

CPU_PATHS = tuple(sorted(cpu_input_grad.PATHS))
"""Names of the input-gradient formulations ``conv_transpose(..., cpu_path=...)`` accepts."""

DIRECT_MAX_CHANNEL_PRODUCT = 16  # (C_in/g) * (C_out/g) at or below this: per-tap multiply-add
DIRECT_MAX_TAPS = 64  # ... with at most this many kernel taps (its program, and compile time, grow per tap)
SMALL_C_IN = 8  # fewer input channels than this: the sub-pixel conv's output is too thin; im2col weight gradient
GEMM_MAX_EXPANSION = 4  # gemm's per-tap planes at most this many times the result
GEMM_MIN_CONTRACTION = 256  # C_out/g below this: phase_conv beat gemm (k3s2, 128 channels)
FILTER_GEMM_MAX_TAPS = 64  # backprop_filter: per-tap matmuls up to this many taps (ungrouped)
# backprop_filter's gemm split over the batch: at least this many samples, channels on both sides,
# and a per-sample C_out x C_in partial at most 1/FILTER_BATCHED_MAX_PARTIAL of its operands
FILTER_BATCHED_MIN_N = 8
FILTER_BATCHED_MIN_CHANNELS = 16
FILTER_BATCHED_MAX_PARTIAL = 16
NATIVE_MAX_RESULT = 1 << 20  # backprop_filter's native kernel: results of at most this many elements
PHASE_GEMM_MAX_PHASES = 64  # strided 3-D: phase_gemm up to this many phases with taps (stride 4 per axis)
DENSE_MAX_WASTE = 64  # lhs_dilated and subpixel: at most this many multiply-adds per useful one (not by a zero)
FALLBACK = ("phase_conv", "subpixel", "gemm")  # in this order, where a rule's choice is refused (gemm serves all)
NATIVE_SUBPIXEL_MAX_WASTE = 0.25  # native_subpixel: at most this fraction of its convolution's taps zeros


def _few_channels(geom: ConvGeometry) -> bool:
    """The ``direct`` forms apply: few channels per group and not too many taps.

    The taps bound keeps compile time low: a stride-1 ``direct`` program is
    one multiply-add per tap (measured ~10 ms of compile per tap: a 8x8x8
    kernel took 7 s, ``flipped_conv`` 0.1 s).
    """
    c_out, c_in_g = geom.w_shape[:2]
    channels = c_in_g * (c_out // geom.group) <= DIRECT_MAX_CHANNEL_PRODUCT
    return channels and math.prod(geom.kernel) <= DIRECT_MAX_TAPS


def phase_stats(geom: ConvGeometry) -> tuple[tuple[int, ...], int]:
    """(taps of the largest phase per axis, taps zero-filled by the one-conv sub-pixel form)."""
    most, used, dense = [], 1, 1
    for a in range(geom.ndim):
        _, _, k, s, d, _ = geom.axis(a)
        counts = [len(t) for t in cpu_input_grad.phase_split(k, s, d).values()]
        most.append(max(counts))
        used *= sum(counts)
        dense *= max(counts) * s
    return tuple(most), dense - used


phase_count = cpu_input_grad.phase_count


def dense_waste(name: str, geom: ConvGeometry) -> float:
    """Multiply-adds of ``name``'s one convolution per multiply-add not by a zero (1.0 for the other paths).

    ``lhs_dilated`` correlates the kernel with ``dout`` dilated by the
    stride: all but one of every ``prod(stride)`` of its input rows are zeros.
    ``subpixel`` convolves with every phase's ``A`` tap slots per axis, ``s * A``
    for the ``k`` taps there are (zeros where a phase has fewer).
    """
    if name == "lhs_dilated":
        return float(math.prod(geom.stride))
    if name == "subpixel":
        slots = math.prod(cpu_input_grad.phase_table(*geom.axis(a)[2:5])[0] * geom.stride[a] for a in range(geom.ndim))
        return slots / math.prod(geom.kernel)
    return 1.0


def _axes(geom: ConvGeometry) -> str:
    return f"kernel {geom.kernel}, stride {geom.stride}, dilation {geom.dilation}"


def refusal(name: str, geom: ConvGeometry) -> str | None:
    """Why input-gradient path ``name`` (in ``CPU_PATHS``) does not serve ``geom`` (cheaply); ``None`` where it does.

    ``flipped_conv`` needs stride 1; ``lhs_dilated`` is refused where a
    stride meets a dilation (XLA CPU may abort the process there) or where
    more than ``DENSE_MAX_WASTE`` of its multiply-adds per useful one are by
    zeros, as is ``subpixel``; ``phase_conv`` where its convolutions, one per
    phase with taps, exceed ``cpu_input_grad.UNROLLED_MAX_TERMS`` (its program
    and compile time grow with the phases). ``gemm``, ``phase_gemm`` and
    ``direct`` serve every geometry: beyond that bound they compute all taps
    or phases in one op (``cpu_input_grad.col2im``).
    """
    strided, dilated = set(geom.stride) != {1}, set(geom.dilation) != {1}
    if name == "flipped_conv" and strided:
        return f"it needs stride 1 on every axis, got stride {geom.stride}"
    if name == "lhs_dilated" and strided and dilated:
        return (
            f"XLA CPU may abort the process on strided + dilated lhs-dilated convolutions (stride {geom.stride}, "
            f"dilation {geom.dilation})"
        )
    if name == "phase_conv" and not cpu_input_grad.unrolled(name, geom):
        return (
            f"it emits one convolution per phase with taps, {phase_count(geom)} phases for {_axes(geom)} "
            f"({cpu_input_grad.unrolled_terms(name, geom)} terms), more than the limit of "
            f"{cpu_input_grad.UNROLLED_MAX_TERMS} terms (its program and compile time grow with the phases)"
        )
    waste = dense_waste(name, geom)
    if waste > DENSE_MAX_WASTE:
        return (
            f"its convolution does {waste:g} multiply-adds per useful one (the others multiply zeros) for "
            f"{_axes(geom)}, more than the limit of {DENSE_MAX_WASTE}"
        )
    return None


def serving_paths(geom: ConvGeometry) -> tuple[str, ...]:
    """The names in ``CPU_PATHS`` that serve ``geom`` (``refusal`` is ``None``); ``gemm`` always does."""
    return tuple(name for name in CPU_PATHS if refusal(name, geom) is None)


def check_forced_path(geom: ConvGeometry) -> None:
    """A ``ValueError`` naming the path, the reason, the limit and the paths that would serve, where ``geom``
    forces an input-gradient path (``cpu_path``) that is unknown or does not serve it (``refusal``)."""
    name = geom.cpu_path
    if name is None:
        return
    if name not in CPU_PATHS:
        raise ValueError(f"cpu_path must be None or one of {CPU_PATHS}, got {name!r}")
    why = refusal(name, geom)
    if why is not None:
        raise ValueError(
            f"cpu_path={name!r} does not serve this convolution: {why}; the paths that serve it: "
            f"{serving_paths(geom)}, or cpu_path=None for the dispatcher's choice"
        )


def select_cpu_path(geom: ConvGeometry, native: bool = False) -> str:
    """The CPU input-gradient path for one geometry (a name in ``CPU_PATHS``, or a native one).

    1. Few channels per group (depthwise, channel multipliers, small groups)
       and at most ``DIRECT_MAX_TAPS`` taps: ``direct``.
    2. Stride 1: with ``native``, where ``_native_pays``, the native kernel's
       forward convolution of the flipped correlation (a 1x1 kernel: one sgemm
       per block on ``dout`` in place); else ``gemm`` for a 1x1 kernel (one
       matmul), ``flipped_conv`` otherwise.
       Strided, with ``native``: ``native_subpixel`` where it pays (below).
       Strided 3-D with at most ``PHASE_GEMM_MAX_PHASES`` phases with taps:
       ``phase_gemm`` (one matmul per phase; on the 3-D suite it beat
       ``gemm``'s one big matmul and high-rank interleave 1.2-2.9x and
       ``phase_conv`` 1.2x). More phases take the rules below (a 16x16x16
       kernel under stride 16 emitted 4,096 matmuls and overlap-adds, minutes
       of compile and then a crash, before ``phase_gemm`` batched its phases
       beyond ``cpu_input_grad.UNROLLED_MAX_TERMS``).
    3. Every phase has at most one tap (kernel equal to the stride, kernel 1
       under a stride): ``gemm`` (one matmul plus an interleave).
    4. The one-conv sub-pixel form wastes no tap (kernel a multiple of the
       stride): ``subpixel``, or ``gemm`` when ``C_in`` is small.
    5. Otherwise: ``phase_gemm`` when ``C_in`` is small; ``subpixel`` when
       ``gemm``'s per-tap planes would be more than ``GEMM_MAX_EXPANSION``
       times the result; else ``gemm`` when its matmul contracts at least
       ``GEMM_MIN_CONTRACTION`` channels, ``phase_conv`` when fewer.

    The rules apply in this order in every rank (1-D as 2-D of height 1);
    the rank enters one rule's condition (the 3-D ``phase_gemm``, measured).
    A choice ``refusal`` refuses (``phase_conv`` with more phases than its
    program bound, ``subpixel`` with more than ``DENSE_MAX_WASTE`` times its
    useful multiply-adds) is replaced by the first path of ``FALLBACK`` that
    serves the geometry; no choice's program grows with the strides
    (``cpu_input_grad.unrolled_terms``). A forced ``cpu_path`` that does not
    serve the geometry raises a ``ValueError`` (``check_forced_path``).

    Strided, with ``native``, where ``_native_subpixel_pays``: ``subpixel``
    with its stride-1 convolution by the native kernel, which computes it
    directly (``native.rules.direct``), whatever ``C_in``, with at most
    ``NATIVE_SUBPIXEL_MAX_WASTE`` of its taps zeros (the op alone, ms, the
    rules below -> it): resnet50_stem (23% zeros) 83.6 -> 23.3, Conv-TasNet
    17.8 -> 2.6, HiFi-GAN up4 11.2 -> 8.4; resnet50_l2 (44% zeros) lost, 21.2
    -> 34.4. Through the kernel's im2col patches (not direct) it lost too
    (input gradient alone): HiFi-GAN up1 10.7 -> 17.1, stylegan2_up 9.7 ->
    20.1, unet3d_deconv 10.3 -> 25.2, dcgan_g 9.7 -> 11.7 (HiFi-GAN up2 25.3
    -> 20.2 the one exception).
    """
    if geom.cpu_path is not None:
        check_forced_path(geom)
        return geom.cpu_path
    path = _input_grad_rule(geom, native)
    if path in NATIVE_PATHS or refusal(path, geom) is None:
        return path
    return next(name for name in FALLBACK if refusal(name, geom) is None)


def _input_grad_rule(geom: ConvGeometry, native: bool) -> str:
    """``select_cpu_path``'s rules 1-5, before a refused choice is replaced (``FALLBACK``)."""
    c_out = geom.w_shape[0]
    if _few_channels(geom):
        return "direct"
    if set(geom.stride) == {1}:
        if native and _native_pays(geom):
            return "native"
        return "gemm" if set(geom.kernel) == {1} else "flipped_conv"
    if native and _native_subpixel_pays(geom):
        return "native_subpixel"
    most, wasted = phase_stats(geom)
    if geom.ndim == 3 and phase_count(geom) <= PHASE_GEMM_MAX_PHASES:
        return "phase_gemm"
    if set(most) == {1}:
        return "gemm"
    small_c_in = geom.x_shape[1] < SMALL_C_IN
    if wasted == 0:
        return "gemm" if small_c_in else "subpixel"
    if small_c_in:
        return "phase_gemm"
    if math.prod(geom.kernel) * math.prod(geom.y_shape[2:]) > GEMM_MAX_EXPANSION * math.prod(geom.x_shape[2:]):
        return "subpixel"
    return "gemm" if c_out // geom.group >= GEMM_MIN_CONTRACTION else "phase_conv"


def _native_subpixel_pays(geom: ConvGeometry) -> bool:
    """``native_subpixel`` pays: ungrouped, at most ``NATIVE_SUBPIXEL_MAX_WASTE`` of its convolution's
    taps zeros, and that convolution one the native forward computes directly (``native.rules.direct``)."""
    if geom.group != 1:
        return False
    sub = cpu_input_grad.subpixel_geometry(geom)
    dense = math.prod(sub.kernel) * math.prod(geom.stride)
    return phase_stats(geom)[1] <= NATIVE_SUBPIXEL_MAX_WASTE * dense and rules.direct(sub, "forward")


def select_forward_path(geom: ConvGeometry, native: bool = False) -> str:
    """CPU path of the forward convolution: with ``native`` (the native kernels are loaded and fit the
    program), ``native`` for ungrouped ones (``_native_pays``) and few channels per group (the grouped
    kernel: MobileNetV2's depthwise forward 29 -> 12 ms, and a loss over it 62 -> 13 ms, where XLA
    fused ``direct``'s multiply-adds into the loss's reduction); else ``direct`` for few channels per
    group with at most ``cpu_input_grad.UNROLLED_MAX_TERMS`` taps times input channels per group (it
    unrolls them: 64 taps of 16 channels took 4 s to compile), ``routed`` (``xla_cpu.conv``) otherwise."""
    if native and (_native_pays(geom) or _few_channels(geom)):
        return "native"
    direct = _few_channels(geom) and _forward_direct_terms(geom) <= cpu_input_grad.UNROLLED_MAX_TERMS
    return "direct" if direct else "routed"


def _forward_direct_terms(geom: ConvGeometry) -> int:
    """``cpu_dense.conv_direct``'s unrolled multiply-adds: one per tap and input channel of a group."""
    return math.prod(geom.kernel) * geom.w_shape[1]


def _filter_batched(geom: ConvGeometry) -> bool:
    """``gemm_batched`` pays: many samples, each a large matmul with a small ``C_out x C_in`` partial.

    Measured (weight gradient alone, ``gemm`` -> ``gemm_batched``, ms): resnet50_l1
    274 -> 174, HiFi-GAN up4 (as 2-D of height 1) 52 -> 37, ms_doc 8.6 -> 7.1; where the partials
    are large it loses (resnet50_l3, 1x1 with 1024 channels: 31 -> 110; HiFi-GAN
    up1: 19 -> 256), and with 3 input channels too (dcgan_torgb 13.4 -> 15.0).
    """
    n, c_out, *o = geom.y_shape
    c_in, pixels = geom.w_shape[1], math.prod(o)
    return (
        n >= FILTER_BATCHED_MIN_N
        and min(c_out, c_in) >= FILTER_BATCHED_MIN_CHANNELS
        and FILTER_BATCHED_MAX_PARTIAL * c_out * c_in <= pixels * (c_out + c_in)
    )


def _native_pays(geom: ConvGeometry) -> bool:
    """The native kernel's forward convolution pays: ungrouped.

    Measured (forward alone, ms, pure XLA -> native, 2 cores, medians of 5,
    interleaved runs; docs/performance.md): resnet50_stem 68 -> 36, unet_up 38 ->
    23, resnet50_l3 30 -> 20, Conv-TasNet 28 -> 11, and no shape of the suites
    slower beyond the noise (deeplabv3 24.4 -> 23.2, unet3d_conv 14.0 -> 13.9).
    """
    return geom.group == 1


def _filter_native(geom: ConvGeometry) -> bool:
    """The native kernels' weight gradient pays: ungrouped with a result (``C_out * C_in * taps``) of at
    most ``NATIVE_MAX_RESULT`` elements, or grouped with few channels per group (``_few_channels``: the
    grouped kernel's per-plane dot products).

    Measured (weight gradient alone, ms, pure XLA -> native, 2 cores, medians
    of 5, interleaved runs; docs/performance.md): resnet50_l1 164 -> 46,
    resnet50_stem 110 -> 33, unet3d_conv 86 -> 16, dcgan_g 27 -> 12. XLA's own
    dot stays for large results over short contractions, which it runs near the
    machine's matmul speed and the kernel's per-worker partial results do not:
    deeplabv3 (2.4M elements, 1089 pixels) 25 -> 31, HiFi-GAN up1 (2.1M, 512)
    12 -> 17. MobileNetV2's depthwise weight gradient: ``direct`` 69 -> 11.
    """
    if geom.group == 1:
        return math.prod(geom.w_shape) <= NATIVE_MAX_RESULT
    return _few_channels(geom)


def select_filter_path(geom: ConvGeometry, native: bool = False) -> str:
    """CPU path of the weight gradient: with ``native`` (the native kernels are loaded and fit the
    program: ``primitives``), ``native`` where ``_filter_native`` says it pays; then ``direct`` for few
    channels per group; ``default`` in 1-D;
    ungrouped with at most ``FILTER_GEMM_MAX_TAPS`` taps, ``im2col`` for fewer than ``SMALL_C_IN``
    input channels, ``gemm_batched`` where it pays (``_filter_batched``), else ``gemm``; otherwise
    ``default``.

    ``im2col`` against ``gemm`` (weight gradient alone, ms, four runs, 256 KiB blocks):
    resnet50_stem (3 input channels) 262-279 -> 66-92, dcgan_torgb (3) 13-20 -> 9.2-9.6.
    With more channels it was no steady gain (resnet50_l2, unet3d_conv: within the
    noise) and lost on batch-1 2-D layers (stylegan2_up 24 -> 38-53, deeplabv3 35-43 -> 80-105).
    """
    if native and _filter_native(geom):
        return "native"
    if _few_channels(geom):
        return "direct"
    if geom.ndim == 1:  # XLA's own 1-D form, not lifted to 2-D (see cpu_lowering)
        return "default"
    if geom.group == 1 and math.prod(geom.kernel) <= FILTER_GEMM_MAX_TAPS:
        if geom.w_shape[1] < SMALL_C_IN:
            return "im2col"
        return "gemm_batched" if _filter_batched(geom) else "gemm"
    return "default"


def cpu_backprop_input(dout, w, *, geom: ConvGeometry):
    return cpu_input_grad.PATHS[select_cpu_path(geom)](dout, w, geom=geom)


def cpu_conv(x, w, *, geom: ConvGeometry):
    return cpu_dense.CONV_PATHS[select_forward_path(geom)](x, w, geom=geom)


def cpu_backprop_filter(dout, x, *, geom: ConvGeometry):
    return cpu_dense.BACKPROP_FILTER_PATHS[select_filter_path(geom)](dout, x, geom=geom)


def _one_d_as_two_d(lowering):
    """Run a 1-D geometry through the 2-D formulations, as height 1.

    XLA CPU's convolution kernels are 2-D; this makes a 1-D problem exactly the
    program of the same problem in 2-D with height 1 (the reshapes are free), so
    1-D is never slower than 2-D. Every path selection reads the same numbers
    from the lifted geometry (a unit axis has one tap, stride 1, no padding),
    except ``select_filter_path``'s 1-D rule, which ``_backprop_filter_any_rank``
    applies before lifting.
    """

    @functools.wraps(lowering)
    def lowered(a, b, *, geom: ConvGeometry):
        if geom.ndim != 1:
            return lowering(a, b, geom=geom)
        return lowering(a[:, :, None], b[:, :, None], geom=geom.with_unit_axis())[:, :, 0]

    return lowered


def _conv_any_rank(x, w, *, geom: ConvGeometry, native: bool = False):
    """The forward convolution: the native kernel's (rank-generic) where chosen, else 1-D lifted to 2-D."""
    if select_forward_path(geom, native=native) == "native":
        return cpu_dense.conv_native(x, w, geom=geom)
    return _one_d_as_two_d(cpu_conv)(x, w, geom=geom)


def _backprop_input_any_rank(dout, w, *, geom: ConvGeometry, native: bool = False):
    """The input gradient: the native kernel's (rank-generic) where chosen, else 1-D lifted to 2-D."""
    path = select_cpu_path(geom, native=native)
    if path == "native":
        return cpu_input_grad.backprop_input_native(dout, w, geom=geom)
    if path == "native_subpixel":
        return cpu_input_grad.backprop_input_subpixel_native(dout, w, geom=geom)
    return _one_d_as_two_d(cpu_backprop_input)(dout, w, geom=geom)


def _backprop_filter_any_rank(dout, x, *, geom: ConvGeometry, native: bool = False):
    """The weight gradient, 1-D lifted to 2-D like the others except on the ``default`` and ``native`` paths.

    There XLA's own 1-D backward-filter convolution beat the lifted 2-D
    formulations on the 1-D suite (weight gradient alone, ms, lifted -> 1-D):
    HiFi-GAN up2 55.6 -> 40.6, up4 46.3 -> 30.3, Conv-TasNet 21.9 -> 17.9 (up1
    19.1 -> 20.8, within the noise). ``native`` is rank-generic and blocks the
    1-D axis itself.
    """
    path = select_filter_path(geom, native=native)
    if path == "native":
        return cpu_dense.backprop_filter_native(dout, x, geom=geom)
    if geom.ndim == 1 and path == "default":
        return cpu_dense.BACKPROP_FILTER_PATHS[path](dout, x, geom=geom)
    return _one_d_as_two_d(cpu_backprop_filter)(dout, x, geom=geom)


NATIVE_PATHS = ("native", "native_subpixel")
"""The paths through the native kernels (``native.kernels``), by the names the selections return."""

SELECT_PATH = {"conv": select_forward_path, "backprop_input": select_cpu_path, "backprop_filter": select_filter_path}
"""Each primitive's CPU path selection, by role (each takes ``(geom, native=False)``)."""


def wants_native(role: str, geom: ConvGeometry, dtypes) -> bool:
    """The CPU lowering of ``role`` would take the native kernel's path, were it loaded (float32 only)."""
    float32 = all(str(d) == "float32" for d in dtypes) and geom.out_dtype in (None, "float32")
    return float32 and SELECT_PATH[role](geom, native=True) in NATIVE_PATHS


cpu_lowering = {
    "conv": _conv_any_rank,
    "backprop_input": _backprop_input_any_rank,
    "backprop_filter": _backprop_filter_any_rank,
}
"""The CPU lowering of each primitive, by role. None of them uses lhs dilation."""

cpu_lowering_native = {role: functools.partial(fn, native=True) for role, fn in cpu_lowering.items()}
"""The CPU lowerings that may call the native kernel (``native.kernels``), where ``wants_native`` and it is usable."""


def cpu_paths(geometry: ConvGeometry, dtype: str = "float32") -> dict[str, str]:
    """The CPU formulation each primitive takes for ``geometry`` in a single-device ``jax.jit`` program.

    Args:
      geometry: the convolution, as the primitives take it (``jax_conv_bpi.ConvGeometry``).
      dtype: the operands' dtype name; the native kernels take float32 only.

    Returns:
      ``{"conv": ..., "backprop_input": ..., "backprop_filter": ...}``: the
      forward convolution's, the input gradient's and the weight gradient's
      formulation, by the names the benchmark and ``docs/performance.md`` use
      (``"native"`` and ``"native_subpixel"`` run the native kernels, where they
      are installed and usable: ``native_status()``). ``cpu_path`` in the
      geometry forces the input gradient's.

    Raises:
      ValueError: the geometry forces a ``cpu_path`` that does not serve it
        (as ``conv_transpose`` does): the message says why, the limit, and
        which paths would.

    Example:
      >>> import jax_conv_bpi as jcb
      >>> g = jcb.ConvGeometry(x_shape=(1, 16, 8, 8), w_shape=(16, 16, 2, 2), y_shape=(1, 16, 4, 4),
      ...                      stride=(2, 2), dilation=(1, 1), padding=((0, 0), (0, 0)), cpu_path="gemm")
      >>> jcb.cpu_paths(g)["backprop_input"]
      'gemm'
    """
    loaded = kernels.load()[0]
    return {
        role: select(geometry, native=loaded and wants_native(role, geometry, [dtype, dtype]))
        for role, select in SELECT_PATH.items()
    }

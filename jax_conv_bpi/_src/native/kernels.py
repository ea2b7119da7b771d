"""The optional native CPU kernels (the ``[native]`` extra): discover, load, register, gate.

The kernels are a plugin of their own, the ``jax_conv_bpi_native`` distribution
in the checkout's ``native/`` folder (C++ in ``native/src/``, built by CMake
through scikit-build-core against the XLA FFI headers of the jaxlib present at
install time: ``pip install ./native``). This module finds it by import, checks
that it fits (built for this process's jaxlib, the C interface version it
expects), looks up OpenBLAS's sgemm in the ``scipy-openblas32`` wheel, and
registers the library's XLA FFI handlers; no compiler ever runs here.

They compute the forward convolution and the weight gradient of an ungrouped
float32 convolution, as im2col patches per block of pixels and OpenBLAS sgemms,
where XLA CPU's convolutions and dot run well below the machine's matmul speed
(docs/performance.md); at stride 1 on CPUs with AVX-512 both compute most
layers directly instead, register-blocked vector FMAs without patches
(``direct`` says where). The stride-1 input gradient is the forward kernel's
flipped correlation, and strided ones may use it for the sub-pixel form's
convolution (``dispatch``). Two more compute the forward and the weight
gradient of grouped convolutions with few channels per group (depthwise) plane
by plane, without BLAS. One worker per usable core (the calling thread and
tasks on XLA's intra-op thread pool) takes blocks in turn, each with a
single-threaded sgemm, so one worker's im2col fill overlaps the others' sgemms.

Where the plugin is not installed, or ``JCB_NATIVE=0`` is set, or the JAX has
no ``jax.ffi``, every formulation stays pure XLA and ``native_status()`` says
why. Where it is installed but cannot be used (built for another jaxlib, a
library that does not load or has another C interface, no ``scipy-openblas32``)
the same holds, and the process is also warned once (``RuntimeWarning``).
``usable(ctx)`` also keeps the kernels out of programs they do not fit:
lowerings for ``jax.export`` (a custom call is not a stable export) and
programs over more than one device (XLA's partitioner cannot split a custom
call).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import mlir

from jax_conv_bpi._src.native import rules

__all__ = [
    "ABI",
    "FORWARD_TARGET",
    "GROUPED_FORWARD_TARGET",
    "GROUPED_TARGET",
    "PLUGIN",
    "TARGET",
    "conv_forward",
    "conv_weight_grad",
    "direct",
    "grouped_forward",
    "grouped_weight_grad",
    "load",
    "native_status",
    "usable",
]

TARGET = "jcb_conv_weight_grad"
FORWARD_TARGET = "jcb_conv_forward"
GROUPED_TARGET = "jcb_conv_grouped_weight_grad"
GROUPED_FORWARD_TARGET = "jcb_conv_grouped_forward"
PLUGIN = "jax_conv_bpi_native"
"""The plugin's import name (the distribution built from the checkout's ``native/``)."""
ABI = 2
"""The version of the plugin's C interface this module calls (``JCB_NATIVE_ABI`` in ``native/CMakeLists.txt``)."""
INSTALL_HINT = "from a checkout of jax_conv_bpi: pip install ./native"


def _openblas_sgemm():
    """The address of ``cblas_sgemm`` in the scipy-openblas32 wheel's library, set to one thread.

    The kernel runs its own workers (``_threads``), each calling a
    single-threaded sgemm. ``OPENBLAS_NUM_THREADS=1`` while the library loads
    keeps OpenBLAS from starting a thread pool of its own; NumPy and SciPy
    load their own copies of OpenBLAS, which this leaves alone.
    """
    import scipy_openblas32

    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        lib = ctypes.CDLL(str(Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"))
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    lib.scipy_openblas_set_num_threads(1)
    return ctypes.cast(lib.scipy_cblas_sgemm, ctypes.c_void_p), lib


def _threads() -> int:
    """The kernel's workers: the cores this process may run on, at most ``MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def _jaxlib_version() -> str:
    import jaxlib.version

    return jaxlib.version.__version__


def _import_plugin() -> ModuleType | None:
    """The plugin's package, or None where it is not installed."""
    try:
        return importlib.import_module(PLUGIN)
    except ModuleNotFoundError as e:
        if e.name != PLUGIN:  # installed, but something it imports is missing: unusable, not absent
            raise ImportError(f"{PLUGIN} does not import: {e}") from e
        return None


def _open(plugin: ModuleType) -> ctypes.CDLL:
    """The plugin's library, loaded and checked against what this module expects; RuntimeError where it does not fit."""
    recorded, running = getattr(plugin, "JAXLIB_VERSION", None), _jaxlib_version()
    if recorded != running:
        raise RuntimeError(
            f"{PLUGIN} was built for jaxlib {recorded}, this process runs jaxlib {running}: "
            f"reinstall it against this jaxlib ({INSTALL_HINT})"
        )
    if getattr(plugin, "ABI", None) != ABI:
        raise RuntimeError(
            f"{PLUGIN} has C interface version {getattr(plugin, 'ABI', None)}, this jax_conv_bpi calls version {ABI}: "
            f"reinstall it from the same checkout ({INSTALL_HINT})"
        )
    try:
        lib = ctypes.CDLL(str(plugin.LIBRARY))
        lib.jcb_native_abi.restype = ctypes.c_int
        lib.jcb_native_jaxlib.restype = ctypes.c_char_p
        lib.jcb_native_isa.restype = ctypes.c_char_p
        lib.jcb_native_cpu_isa.restype = ctypes.c_char_p
        lib.jcb_native_set_isa.argtypes = [ctypes.c_char_p]
        lib.jcb_native_set_isa.restype = ctypes.c_int
        abi, jaxlib_built = lib.jcb_native_abi(), lib.jcb_native_jaxlib().decode()
    except (OSError, AttributeError) as e:
        raise RuntimeError(f"{PLUGIN}'s library {plugin.LIBRARY} does not load: {e}") from e
    if abi != ABI or jaxlib_built != recorded:
        raise RuntimeError(
            f"{plugin.LIBRARY} (C interface {abi}, jaxlib {jaxlib_built}) is not the library {PLUGIN} recorded "
            f"(C interface {plugin.ABI}, jaxlib {recorded}): reinstall it ({INSTALL_HINT})"
        )
    return lib


_loaded: dict = {}  # after a successful load(): "lib" (the plugin's library), "blas", "plugin", "isa", "isa_why"


def _choose_isa(lib) -> tuple[str, str]:
    """Set the library to the instruction set ``rules.isa()`` chose (the dispatcher's choice too): ``(it, why)``.

    A ``JCB_NATIVE_ISA`` request that ``rules.isa()`` refused (a name it does
    not know, or an instruction set this CPU lacks) leaves the CPU's best and
    warns once (``RuntimeWarning``); the reason is also in ``native_status()``.
    A library that detects another CPU than ``rules`` cannot be used (the
    dispatcher would pick kernels it does not run).
    """
    choice = rules.isa()
    cpu = lib.jcb_native_cpu_isa().decode()
    if cpu != rules.cpu_isa() or lib.jcb_native_set_isa(choice.isa.encode()) != 0:
        raise RuntimeError(f"the library detects a CPU running {cpu}, /proc/cpuinfo one running {rules.cpu_isa()}")
    if choice.refused:
        warnings.warn(f"jax_conv_bpi: {choice.refused}; the native kernels run {cpu}", RuntimeWarning, stacklevel=3)
        return choice.isa, f"{choice.refused}, so {choice.why}"
    return choice.isa, choice.why


@functools.cache
def load() -> tuple[bool, str]:
    """Find, check and register the plugin's kernels (once): ``(True, library path)`` or ``(False, why not)``.

    A plugin that is installed but cannot be used also warns, once per process (``RuntimeWarning``).
    """
    if os.environ.get("JCB_NATIVE", "1") == "0":
        return False, "disabled by JCB_NATIVE=0"
    if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "ffi_call"):
        return False, f"jax {jax.__version__} has no jax.ffi"
    try:
        plugin = _import_plugin()
        if plugin is None:
            return False, f"the {PLUGIN} plugin is not installed ({INSTALL_HINT})"
        lib = _open(plugin)
        isa, isa_why = _choose_isa(lib)
        try:
            sgemm, blas = _openblas_sgemm()
        except (ImportError, OSError, AttributeError) as e:
            raise RuntimeError(
                f"no OpenBLAS from the scipy-openblas32 wheel (pip install scipy-openblas32): {e}"
            ) from e
    except (ImportError, RuntimeError) as e:
        why = f"{PLUGIN} is installed but cannot be used: {e}"
        warnings.warn(f"jax_conv_bpi: {why}; every CPU formulation stays pure XLA", RuntimeWarning, stacklevel=2)
        return False, why
    lib.jcb_native_set_sgemm.argtypes = [ctypes.c_void_p]
    lib.jcb_native_set_sgemm(sgemm)
    _loaded.update(lib=lib, blas=blas, plugin=plugin, isa=isa, isa_why=isa_why)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JcbConvWeightGrad), platform="cpu")
    jax.ffi.register_ffi_target(FORWARD_TARGET, jax.ffi.pycapsule(lib.JcbConvForward), platform="cpu")
    jax.ffi.register_ffi_target(GROUPED_TARGET, jax.ffi.pycapsule(lib.JcbConvGroupedWeightGrad), platform="cpu")
    jax.ffi.register_ffi_target(GROUPED_FORWARD_TARGET, jax.ffi.pycapsule(lib.JcbConvGroupedForward), platform="cpu")
    return True, str(plugin.LIBRARY)


_ISA = {
    "avx512": "AVX-512 (the direct stride-1 kernels and the grouped kernels' AVX-512 code)",
    "avx2": "AVX2 (im2col + OpenBLAS at stride 1 too, the grouped kernels' AVX2 code)",
    "generic": "no SIMD target (im2col + OpenBLAS at stride 1 too, the grouped kernels' generic code)",
}


def native_status() -> str:
    """Load the optional native CPU kernels (once); say where they are and how they were built, or why they are off.

    The kernels (the ``jax_conv_bpi_native`` plugin, compiled when it is
    installed: ``pip install ./native`` from a checkout) compute the forward
    convolution, the stride-1 input gradient and the weight gradient of
    ungrouped float32 convolutions on one CPU device with OpenBLAS (at stride 1
    on AVX-512 CPUs mostly without it, directly), some strided input
    gradients' sub-pixel convolution, and the forward and weight gradient of
    depthwise-like grouped ones. Where they are off (the plugin not installed,
    or built for another jaxlib, no ``scipy-openblas32``, ``JCB_NATIVE=0``),
    every CPU formulation is pure XLA and the results are the same to float32
    rounding.

    Returns:
      One line: ``"native kernel: <library path> (<its build>; runs <the instruction set>, <how it was
      chosen>)"`` or ``"native kernel off: <why>"``. The instruction set is the CPU's best, or the one
      ``JCB_NATIVE_ISA`` (``avx512``, ``avx2`` or ``generic``) asks for where the CPU runs it; a request
      it cannot honour is refused, and said so here.

    Example:
      >>> import jax_conv_bpi as jcb
      >>> jcb.native_status().startswith(("native kernel: ", "native kernel off: "))
      True
    """
    ok, what = load()
    if not ok:
        return f"native kernel off: {what}"
    plugin, isa = _loaded["plugin"], _loaded["isa"]
    build = f"{PLUGIN} {plugin.__version__} for jaxlib {plugin.JAXLIB_VERSION}, {plugin.COMPILER} {plugin.FLAGS}"
    return f"native kernel: {what} ({build}; runs {_ISA.get(isa, isa)}, {_loaded['isa_why']})"


def usable(ctx) -> bool:
    """The kernels may go into this lowering: they loaded, one device, and not for ``jax.export``."""
    module = getattr(ctx, "module_context", None)
    axis = getattr(module, "axis_context", None)
    params = getattr(module, "lowering_parameters", None)
    # One device: a ShardingContext (not SPMD manual axes, not pmap's replicas) of one device.
    if not isinstance(axis, mlir.ShardingContext) or axis.num_devices != 1:
        return False
    if params is None or getattr(params, "for_export", True):
        return False
    return load()[0]


BLOCK_BYTES = 1 << 20
"""The kernel's scratch per worker: im2col patches (and packed ``dout`` rows) of at most this many bytes.

Small enough to stay in a core's L2 cache between the fill and the sgemm:
measured here (2 workers, medians of 7, ms), 8 MiB -> 1 MiB took ms_doc 1.96 ->
1.41, dcgan_g 15.3 -> 12.3, resnet50_l1 44.6 -> 40.0, unet3d_conv 17.0 -> 13.8;
256 KiB was slower again (resnet50_l1 50.8: short sgemms).
"""
MAX_THREADS = 16
"""At most this many workers per call (each holds ``BLOCK_BYTES`` of patches and a partial result)."""


def _as_3d(geom, shape) -> tuple[int, ...]:
    """An array shape of ``geom``'s rank with 3 spatial axes: leading unit axes for lower ranks."""
    return (*shape[:2], *(1,) * (3 - geom.ndim), *shape[2:])


def _geometry_attrs(geom) -> dict[str, np.ndarray]:
    """The kernels' stride, dilation and ``lo`` padding with 3 spatial axes (kernel 1, stride 1, no padding in front)."""
    lead = 3 - geom.ndim
    ints = functools.partial(np.array, dtype=np.int64)
    return {
        "stride": ints((*(1,) * lead, *geom.stride)),
        "dilation": ints((*(1,) * lead, *geom.dilation)),
        "lo": ints((*(0,) * lead, *(lo for lo, _ in geom.padding))),
    }


def _call(target, a, b, out_shape, *, geom, threads: int | None, **attrs):
    """``target`` on ``a`` and ``b`` (channels-first, ``geom``'s rank) with 3 spatial axes (``_as_3d``: free reshapes)."""
    out = jax.ShapeDtypeStruct(_as_3d(geom, out_shape), jnp.float32)
    result = jax.ffi.ffi_call(target, out)(
        a.reshape(_as_3d(geom, a.shape)).astype(jnp.float32),
        b.reshape(_as_3d(geom, b.shape)).astype(jnp.float32),
        **_geometry_attrs(geom),
        threads=np.int64(_threads() if threads is None else threads),
        **{k: np.int64(v) for k, v in attrs.items()},
    )
    return result.reshape(out_shape)


def direct(geom, kernel: str) -> bool:
    """Whether ``kernel`` (``"forward"``: ``conv_forward``; ``"weight_grad"``: ``conv_weight_grad``) computes
    ``geom`` directly, without im2col patches (``DirectFits`` / ``DirectGradFits`` in the kernel).

    Both need stride 1, more than one tap and the kernels running AVX-512 (``rules.isa``); the forward
    also output lines filling at least 3/4 of their 16-float vectors and at
    most 2**18 weights, the weight gradient at least 16 input channels and at
    most 2**20 weights. False where the kernels are off.
    """
    if kernel not in ("forward", "weight_grad"):
        raise ValueError(f"kernel must be 'forward' or 'weight_grad', got {kernel!r}")
    if not load()[0]:
        return False
    shapes = [_as_3d(geom, shape) for shape in (geom.x_shape, geom.y_shape, geom.w_shape)]
    dims = [np.ascontiguousarray(v, np.int64) for v in (*shapes, *_geometry_attrs(geom).values())]
    pointer = ctypes.POINTER(ctypes.c_int64)
    which = 0 if kernel == "forward" else 1
    return bool(_loaded["lib"].jcb_native_direct(which, *(v.ctypes.data_as(pointer) for v in dims)))


def conv_weight_grad(dout, x, *, geom, block_bytes: int = BLOCK_BYTES, threads: int | None = None):
    """The weight gradient of ``geom`` (ungrouped, float32) through the native kernel (``load()`` must have succeeded).

    ``block_bytes`` bounds its scratch per worker (one output line of one sample
    when that is larger); ``threads`` caps its workers (default ``_threads()``:
    the usable cores).
    """
    return _call(TARGET, dout, x, geom.w_shape, geom=geom, threads=threads, block=max(1, block_bytes // 4))


def conv_forward(x, w, *, geom, block_bytes: int = BLOCK_BYTES, threads: int | None = None):
    """The forward convolution of ``geom`` (ungrouped, float32) through the native kernel, as ``conv_weight_grad``."""
    return _call(FORWARD_TARGET, x, w, geom.y_shape, geom=geom, threads=threads, block=max(1, block_bytes // 4))


def grouped_weight_grad(dout, x, *, geom, threads: int | None = None):
    """The weight gradient of a grouped ``geom`` (float32; few channels per group) through the native kernel."""
    return _call(GROUPED_TARGET, dout, x, geom.w_shape, geom=geom, threads=threads, groups=geom.group)


def grouped_forward(x, w, *, geom, threads: int | None = None):
    """The forward convolution of a grouped ``geom`` (float32; few channels per group) through the native kernel."""
    return _call(GROUPED_FORWARD_TARGET, x, w, geom.y_shape, geom=geom, threads=threads, groups=geom.group)

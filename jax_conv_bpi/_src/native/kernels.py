"""The optional native CPU kernels (the ``[native]`` extra): build, load, register, gate.

Kernels in ``csrc/conv.cc``: the forward convolution and the weight gradient
of an ungrouped float32 convolution, as im2col patches per block of pixels and
OpenBLAS sgemms (the ``scipy-openblas32`` wheel), where XLA CPU's convolutions
and dot run well below the machine's matmul speed (docs/performance.md); at
stride 1 on CPUs with AVX-512 both compute most layers directly instead,
register-blocked vector FMAs without patches (``direct`` says where). The
stride-1 input gradient is the forward kernel's flipped correlation, and
strided ones may use it for the sub-pixel form's convolution
(``dispatch``). Two more compute the forward and the weight gradient of
grouped convolutions with few channels per group (depthwise) plane by plane,
without BLAS. One worker per usable core (the calling thread and tasks on
XLA's intra-op thread pool) takes blocks in turn, each with a single-threaded
sgemm, so one worker's im2col fill overlaps the others' sgemms. The library is compiled once per machine, jaxlib
and source with the machine's C++ compiler (``$CXX``, else ``c++``/``g++``),
into ``$JCB_NATIVE_CACHE`` (default ``~/.cache/jax_conv_bpi``), the first time
a program could use it; that takes 5-10 seconds. ``jax_conv_bpi.native_status()``
builds it ahead of time and says where it is, or why it cannot be used.

Where it cannot be built or loaded (no compiler, no ``scipy-openblas32``, a
JAX without ``jax.ffi``), or ``JCB_NATIVE=0`` is set, every formulation stays
pure XLA: ``native_status()`` tells which and why. ``usable(ctx)`` also keeps the
kernels out of programs they do not fit: lowerings for ``jax.export`` (a custom
call is not a stable export) and programs over more than one device (XLA's
partitioner cannot split a custom call).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import mlir

__all__ = [
    "FORWARD_TARGET",
    "GROUPED_FORWARD_TARGET",
    "GROUPED_TARGET",
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
_SOURCE = Path(__file__).with_name("csrc") / "conv.cc"


def _cache_dir() -> Path:
    if os.environ.get("JCB_NATIVE_CACHE"):
        return Path(os.environ["JCB_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jax_conv_bpi"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cxx: str) -> Path:
    """Compile the kernel (or find it compiled) for this source, jaxlib and compiler; return the library."""
    include = jax.ffi.include_dir()
    key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), jax.__version__.encode(), cxx.encode()])).hexdigest()
    out = _cache_dir() / f"libjcb_native-{key[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        lib = Path(tmp) / out.name
        cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{include}", str(_SOURCE), "-o", str(lib)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(lib, out)  # atomic: concurrent builds of the same key leave one complete file
    return out


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


@functools.cache
def load() -> tuple[bool, str]:
    """Build (once) and register the kernels: ``(True, library path)`` or ``(False, why not)``."""
    if os.environ.get("JCB_NATIVE", "1") == "0":
        return False, "disabled by JCB_NATIVE=0"
    if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "ffi_call"):
        return False, f"jax {jax.__version__} has no jax.ffi"
    try:
        sgemm, blas = _openblas_sgemm()
    except (ImportError, OSError, AttributeError) as e:
        return False, f"no OpenBLAS from the scipy-openblas32 wheel (pip install 'jax_conv_bpi[native]'): {e}"
    cxx = _compiler()
    if cxx is None:
        return False, "no C++ compiler found ($CXX, c++, g++, clang++)"
    try:
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError) as e:
        return False, f"the kernel did not build: {e}"
    lib.jcb_native_set_sgemm.argtypes = [ctypes.c_void_p]
    lib.jcb_native_set_sgemm(sgemm)
    _keep.extend([blas, lib])
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JcbConvWeightGrad), platform="cpu")
    jax.ffi.register_ffi_target(FORWARD_TARGET, jax.ffi.pycapsule(lib.JcbConvForward), platform="cpu")
    jax.ffi.register_ffi_target(GROUPED_TARGET, jax.ffi.pycapsule(lib.JcbConvGroupedWeightGrad), platform="cpu")
    jax.ffi.register_ffi_target(GROUPED_FORWARD_TARGET, jax.ffi.pycapsule(lib.JcbConvGroupedForward), platform="cpu")
    return True, str(path)


_keep: list = []  # the loaded libraries stay loaded as long as the process


def native_status() -> str:
    """Build (once) and load the optional native CPU kernels; say where they are, or why they are off.

    The kernels (the ``[native]`` extra: ``pip install 'jax_conv_bpi[native]'``)
    compute the forward convolution, the stride-1 input gradient and the weight
    gradient of ungrouped float32 convolutions on one CPU device with OpenBLAS
    (at stride 1 on AVX-512 CPUs mostly without it, directly), some strided
    input gradients' sub-pixel convolution, and the forward and weight
    gradient of depthwise-like grouped ones;
    they are compiled with the machine's C++ compiler the first time they are
    needed, or by this call. Where they are off (no compiler, no
    ``scipy-openblas32``, ``JCB_NATIVE=0``), every CPU formulation is pure XLA
    and the results are the same to float32 rounding.

    Returns:
      One line: ``"native kernel: <library path>"`` or ``"native kernel off: <why>"``.

    Example:
      >>> import jax_conv_bpi as jcb
      >>> jcb.native_status().startswith(("native kernel: ", "native kernel off: "))
      True
    """
    ok, what = load()
    return f"native kernel: {what}" if ok else f"native kernel off: {what}"


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

    Both need stride 1, more than one tap and a CPU with AVX-512; the forward
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
    return bool(_keep[-1].jcb_native_direct(which, *(v.ctypes.data_as(pointer) for v in dims)))


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

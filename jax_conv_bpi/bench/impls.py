"""The implementations the benchmark compares, prepared for one shape.

Every ``prepare_*`` function returns a ``Prepared``: a zero-argument ``call``
that runs the computation once and waits for it (``block_until_ready`` /
``torch.cuda.synchronize``), a ``to_numpy`` for the correctness check, and
the compiled executable's memory footprint where it can be read.

Input gradient (the operator itself), for a 2-D ``Shape`` and, with the
rank's names (``1d``, ``3d``), for a ``ShapeND``:
  * ``ours``: ``jax.jit(jax_conv_bpi.conv2d_backprop_input)`` in ``pad`` mode
    (2-D ``Shape``); ``jax.jit(jax_conv_bpi.conv_transpose)`` with the
    ``output_padding`` that gives exactly the shape's input size (``ShapeND``).
  * ``jax_vjp``: ``jax.jit`` of ``jax.vjp`` of ``lax.conv_general_dilated``
    w.r.t. ``x``, what plain JAX gives.
  * ``torch_conv_transpose{1,2,3}d``: ``F.conv_transpose{1,2,3}d`` with the
    padding and ``output_padding`` that give exactly the input size
    (asymmetric padding: ``padding=0`` and a crop).
  * ``torch_conv{1,2,3}d_input``: ``torch.nn.grad.conv{1,2,3}d_input``.

Training step (forward convolution + gradients w.r.t. input and weight of
``sum(conv(x, w) * r)``): the library's forward under ``jax.grad`` (its
backward is this project's input- and weight-gradient primitives):
``jax_conv_bpi.conv2d`` for a ``Shape``, ``jax_conv_bpi.conv_p`` bound on the
shape's geometry (the primitive ``conv2d`` binds, of any rank) for a
``ShapeND``; plain ``lax.conv_general_dilated`` under ``jax.grad``; and
PyTorch autograd of ``F.conv{1,2,3}d``.

Weight gradient alone (the cotangent of the weight of ``conv(x, w)`` for a
given ``dout``): ``ours`` is ``jax.vjp`` of the library's forward convolution
w.r.t. ``w`` (its backward is the weight-gradient primitive); ``jax_vjp`` the
same of ``lax.conv_general_dilated``; ``torch_conv_weight`` is
``torch.nn.grad.conv{1,2,3}d_weight``. ``cpu_paths`` names the CPU
formulation each of the library's three primitives picks for a shape.

By default every float32 computation runs at full float32 precision
(``Precision.HIGHEST`` in JAX, TF32 off in PyTorch), so GPU numbers compare
like with like. ``precision="default"`` (``--precision default``) lets the
N-D entries' ``conv_transpose`` / ``conv_p``, their ``lax`` baselines and
PyTorch use the backend's default (TF32 on an NVIDIA GPU since Ampere); the
2-D ``Shape`` entries are the MindSpore API, full float32 by design, so they
and their baselines stay at ``HIGHEST`` (and PyTorch's TF32 stays off for
them). ``dtype`` (``--dtype``) casts every implementation's arrays, JAX and
PyTorch alike (``float32`` or ``bfloat16``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jax_conv_bpi as jcb

from .suite import AnyShape, Shape, ShapeND


def torch_op_impls(rank: int) -> tuple[str, str]:
    """The PyTorch peers of the input gradient for ``rank`` spatial dims: (conv_transpose, grad.conv_input)."""
    return (f"torch_conv_transpose{rank}d", f"torch_conv{rank}d_input")


def op_impls(rank: int) -> tuple[str, ...]:
    return ("ours", "jax_vjp", *torch_op_impls(rank))


LABELS = {
    "ours": "jax_conv_bpi",
    "jax_vjp": "jax.vjp(lax.conv)",
    **{f"torch_conv_transpose{r}d": f"torch conv_transpose{r}d" for r in (1, 2, 3)},
    **{f"torch_conv{r}d_input": f"torch grad.conv{r}d_input" for r in (1, 2, 3)},
    "jax_grad": "jax.grad(lax.conv)",
    "torch_conv_weight": "torch grad.conv{1,2,3}d_weight",
    "torch_autograd": "torch autograd(conv2d)",
    "ours_opt": "jax_conv_bpi + cpu_compiler_options()",
    "jax_vjp_opt": "jax.vjp(lax.conv) + cpu_compiler_options()",
}
# The opt-in section: the same functions compiled with ``jax_conv_bpi.cpu_compiler_options()``.
OPT_IN_IMPLS = {"ours_opt": "ours", "jax_vjp_opt": "jax_vjp"}
DTYPES = ("float32", "bfloat16")
PRECISIONS = ("highest", "default")


def jax_precision(shape: AnyShape, precision: str = "highest"):
    """The lax precision of ``shape``'s JAX implementations: ``None`` (the backend default) only for an N-D
    entry under ``precision="default"``; the 2-D ``Shape`` entries (MindSpore's API) are always HIGHEST."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "default" and isinstance(shape, ShapeND):
        return None
    return lax.Precision.HIGHEST


def cast(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` in ``dtype`` (``'bfloat16'`` through ml_dtypes, as JAX takes it)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return np.asarray(a, jnp.dtype(dtype))


def _host_float(out) -> np.ndarray:
    """A result on the host, bfloat16 widened to float32 (for the correctness check)."""
    out = np.asarray(out)
    return out.astype(np.float32) if out.dtype == jnp.bfloat16 else out


@dataclasses.dataclass
class Prepared:
    call: Callable[[], Any]
    to_numpy: Callable[[Any], Any]
    memory: dict | None = None
    first_call_s: float | None = None  # JAX: trace + compile + the first run, in seconds


# -- JAX ----------------------------------------------------------------------


def ours_fn(shape: AnyShape, precision: str = "highest") -> Callable:
    """This library's input gradient: the MindSpore API for a 2-D ``Shape``, ``conv_transpose`` for a ``ShapeND``."""
    if isinstance(shape, ShapeND):
        return ours_nd_fn(shape, precision)

    def ours(dout, w):
        return jcb.conv2d_backprop_input(
            dout,
            w,
            shape.x_shape,
            stride=shape.stride,
            pad_mode="pad",
            pad=shape.pad,
            dilation=shape.dilation,
            group=shape.group,
        )

    return ours


def ours_nd_fn(shape: ShapeND, precision: str = "highest") -> Callable:
    """``jax_conv_bpi.conv_transpose`` giving exactly ``shape.x_shape`` (channels-first; full float32 unless
    ``precision="default"``)."""
    prec = jax_precision(shape, precision)

    def ours(dout, w):
        return jcb.conv_transpose(
            dout,
            w,
            shape.stride,
            shape.pad,
            output_padding=shape.output_padding,
            rhs_dilation=shape.dilation,
            feature_group_count=shape.group,
            precision=prec,
        )

    return ours


def dimension_numbers(rank: int) -> tuple[str, str, str]:
    """Channels-first ``lax`` dimension numbers of ``rank`` spatial dims: ``('NCHW', 'OIHW', 'NCHW')`` in 2-D."""
    sp = {1: "H", 2: "HW", 3: "DHW"}[rank]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def lax_conv(x, w, shape: AnyShape, precision: str = "highest"):
    """The forward convolution in plain lax, channels-first, at full float32 precision (or the default)."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=shape.stride,
        padding=shape.pad_pairs,
        rhs_dilation=shape.dilation,
        dimension_numbers=dimension_numbers(shape.rank),
        feature_group_count=shape.group,
        precision=jax_precision(shape, precision),
    )


def geometry(shape: AnyShape, precision: str = "highest") -> jcb.ConvGeometry:
    """The library's geometry of ``shape``'s forward convolution (full float32, as ``conv2d`` asks, by default)."""
    return jcb.ConvGeometry(
        x_shape=shape.x_shape,
        w_shape=shape.w_shape,
        y_shape=shape.dout_shape,
        stride=shape.stride,
        dilation=shape.dilation,
        padding=shape.pad_pairs,
        group=shape.group,
        precision=jax_precision(shape, precision),
    )


def library_conv(x, w, shape: AnyShape, precision: str = "highest"):
    """The library's forward convolution: ``conv2d`` for a 2-D ``Shape``, ``conv_p`` on its geometry otherwise.

    Either way its derivatives are the library's own input- and weight-gradient primitives.
    """
    if isinstance(shape, Shape):
        return jcb.conv2d(
            x, w, stride=shape.stride, pad_mode="pad", pad=shape.pad, dilation=shape.dilation, group=shape.group
        )
    return jcb.conv_p.bind(x, w, geom=geometry(shape, precision))


def jax_vjp_fn(shape: AnyShape, precision: str = "highest") -> Callable:
    def baseline(dout, w):
        x = jnp.zeros(shape.x_shape, dout.dtype)
        _, vjp = jax.vjp(lambda x: lax_conv(x, w, shape, precision), x)
        return vjp(dout)[0]

    return baseline


def train_fn(shape: AnyShape, impl: str, precision: str = "highest") -> Callable:
    """``(x, w, r) -> (loss, (dx, dw))`` for ``loss = sum(conv(x, w) * r)``."""
    forwards = {"ours": library_conv, "jax_grad": lax_conv}
    if impl not in forwards:
        raise ValueError(f"no JAX training step {impl!r}")
    forward = forwards[impl]

    def loss(x, w, r):
        return jnp.sum(forward(x, w, shape, precision) * r)

    return jax.value_and_grad(loss, argnums=(0, 1))


def weight_grad_fn(shape: AnyShape, impl: str, precision: str = "highest") -> Callable:
    """``(x, dout) -> dw``: ``jax.vjp`` w.r.t. the weight of the library's forward (``ours``) or of lax's (``jax_vjp``).

    The convolution is linear in the weight, so the vjp does not depend on the
    weight's value (zeros here) and ``jax.jit`` drops the unused forward.
    """
    forwards = {"ours": library_conv, "jax_vjp": lax_conv}
    if impl not in forwards:
        raise ValueError(f"no JAX weight gradient {impl!r}; expected one of {sorted(forwards)}")
    forward = forwards[impl]

    def weight_grad(x, dout):
        w0 = jnp.zeros(shape.w_shape, dout.dtype)
        _, vjp = jax.vjp(lambda w: forward(x, w, shape, precision), w0)
        return vjp(dout)[0]

    return weight_grad


def cpu_paths(shape: AnyShape, dtype: str = "float32") -> dict[str, str]:
    """The CPU formulation each primitive of the library picks for ``shape`` with ``dtype`` arrays.

    ``jax_conv_bpi.cpu_paths`` of the shape's geometry, single-device; a path
    through the native kernels (``"native"``, ``"native_subpixel"``) where a
    primitive takes one (they loaded: ``jax_conv_bpi.native_status()``).
    """
    return jcb.cpu_paths(geometry(shape), dtype)


def memory_of(compiled) -> dict | None:
    """Bytes of a compiled executable: arguments + outputs + temporaries (- aliases)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without the analysis
        return None
    if m is None:
        return None
    arg, out, tmp = int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.temp_size_in_bytes)
    alias = int(getattr(m, "alias_size_in_bytes", 0) or 0)
    return {"argument": arg, "output": out, "temp": tmp, "alias": alias, "total": arg + out + tmp - alias}


def prepare_jax(fn: Callable, args: tuple, device, compiler_options: dict | None = None) -> Prepared:
    """Compile ``fn`` for ``args`` (placed on ``device``) ahead of time, with ``compiler_options``."""
    args = tuple(jax.block_until_ready(jax.device_put(a, device)) for a in args)
    start = time.perf_counter()
    jitted = jax.jit(fn, compiler_options=compiler_options) if compiler_options else jax.jit(fn)
    compiled = jitted.lower(*args).compile()

    def call():
        return jax.block_until_ready(compiled(*args))

    call()
    first = time.perf_counter() - start
    return Prepared(
        call=call, to_numpy=lambda out: jax.tree.map(_host_float, out), memory=memory_of(compiled), first_call_s=first
    )


def prepare_jax_op(
    shape: AnyShape,
    impl: str,
    dout: np.ndarray,
    w: np.ndarray,
    device,
    *,
    precision: str = "highest",
    dtype: str = "float32",
) -> Prepared:
    options = jcb.cpu_compiler_options() if impl in OPT_IN_IMPLS else None
    fn = {"ours": ours_fn, "jax_vjp": jax_vjp_fn}[OPT_IN_IMPLS.get(impl, impl)](shape, precision)
    return prepare_jax(fn, (cast(dout, dtype), cast(w, dtype)), device, options)


def prepare_jax_train(
    shape: AnyShape, impl: str, x, w, r, device, *, precision: str = "highest", dtype: str = "float32"
) -> Prepared:
    args = tuple(cast(a, dtype) for a in (x, w, r))
    return prepare_jax(train_fn(shape, impl, precision), args, device)


def prepare_jax_weight_grad(
    shape: AnyShape, impl: str, x, dout, device, *, precision: str = "highest", dtype: str = "float32"
) -> Prepared:
    return prepare_jax(weight_grad_fn(shape, impl, precision), (cast(x, dtype), cast(dout, dtype)), device)


def matmul_peak_fn(n: int):
    """A jitted ``(n, n) @ (n, n)`` float32 product at full precision and its FLOP count."""
    return (lambda a, b: jnp.dot(a, b, precision=lax.Precision.HIGHEST)), 2 * n**3


# -- PyTorch ------------------------------------------------------------------


OMP_WAIT_POLICY = "PASSIVE"
"""PyTorch's OpenMP threads' wait policy in the benchmark, unless the environment sets one.

With the default, PyTorch's idle OpenMP threads spin on their cores after each
call and slow whichever peer runs next in the interleaved loop: measured here
(2 cores, forward convolution, ms, default -> PASSIVE), the native kernel
dcgan_g 17.1 -> 12.1 and hifigan_up1 18.6 -> 15.0, while PyTorch's own times
stayed (dcgan_g 10.9 -> 11.1, hifigan_up1 12.7 -> 13.2).
"""


def import_torch():
    """``torch`` or ``None`` when it is not installed (it is an optional extra).

    Sets ``OMP_WAIT_POLICY`` (``OMP_WAIT_POLICY``, the module constant) first
    when the environment has none and torch is not loaded yet: OpenMP reads it
    once, when torch loads it.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    try:
        # torch is an optional extra (the bench's peers), absent from the type-checking environment.
        import torch  # pyright: ignore[reportMissingImports]
    except ImportError:
        return None
    return torch


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_torch(torch, device: str) -> dict:
    """Threads = usable cores; full float32 (no TF32); cuDNN autotuning on GPU."""
    torch.set_num_threads(usable_cores())
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def _crop(out, start: tuple[int, ...], size: tuple[int, ...], F):
    """``out[:, :, start:start+size]`` on every spatial axis, zero-filled past the end (rows no window reaches)."""
    out = out[(slice(None), slice(None), *(slice(a, a + n) for a, n in zip(start, size)))]
    short = [n - m for n, m in zip(size, out.shape[2:])]
    if any(short):
        out = F.pad(out, [v for m in reversed(short) for v in (0, m)])
    return out


def _symmetric(shape: AnyShape) -> bool:
    return all(lo == hi for lo, hi in shape.pad_pairs)


def _lows(shape: AnyShape) -> tuple[int, ...]:
    return tuple(lo for lo, _ in shape.pad_pairs)


def _torch_pad(shape: AnyShape) -> list[int]:
    """``F.pad``'s argument for the forward padding: (lo, hi) pairs, last spatial axis first."""
    return [v for pair in reversed(shape.pad_pairs) for v in pair]


def _common(shape: AnyShape) -> dict:
    return {"stride": shape.stride, "dilation": shape.dilation, "groups": shape.group}


def conv_transpose_args(shape: AnyShape) -> dict | None:
    """Symmetric ``padding`` / ``output_padding`` giving exactly the input size, or ``None``.

    ``None`` for asymmetric padding, or where PyTorch's ``output_padding <
    max(stride, dilation)`` rule forbids the size.
    """
    if not _symmetric(shape):
        return None
    out_pad = shape.output_padding
    if not all(0 <= op < max(s, d) for op, s, d in zip(out_pad, shape.stride, shape.dilation)):
        return None
    return {"padding": _lows(shape), "output_padding": out_pad}


conv_transpose2d_args = conv_transpose_args  # the 2-D name the tests and docs use


def torch_conv_transpose(torch, shape: AnyShape) -> Callable:
    """``F.conv_transpose{1,2,3}d`` giving exactly the input size (``padding=0`` and a crop when it must)."""
    F = torch.nn.functional
    conv_t = getattr(F, f"conv_transpose{shape.rank}d")
    common = _common(shape)
    args = conv_transpose_args(shape)
    if args is not None:
        return lambda dout, w: conv_t(dout, w, **common, **args)

    def cropped(dout, w):
        return _crop(conv_t(dout, w, **common), _lows(shape), shape.spatial, F)

    return cropped


torch_conv_transpose2d = torch_conv_transpose


def torch_conv_input(torch, shape: AnyShape) -> Callable:
    """``torch.nn.grad.conv{1,2,3}d_input`` (asymmetric padding: the padded input's gradient, cropped)."""
    conv_input = getattr(torch.nn.grad, f"conv{shape.rank}d_input")
    common = _common(shape)
    if _symmetric(shape):
        return lambda dout, w: conv_input(shape.x_shape, w, dout, padding=_lows(shape), **common)
    padded = (shape.N, shape.C_in, *(n + lo + hi for n, (lo, hi) in zip(shape.spatial, shape.pad_pairs)))
    window = (slice(None), slice(None), *(slice(lo, lo + n) for n, (lo, _) in zip(shape.spatial, shape.pad_pairs)))
    return lambda dout, w: conv_input(padded, w, dout, **common)[window]


torch_conv2d_input = torch_conv_input


def torch_conv_weight(torch, shape: AnyShape) -> Callable:
    """``torch.nn.grad.conv{1,2,3}d_weight`` of ``(x, dout)`` (asymmetric padding: of the padded input)."""
    conv_weight = getattr(torch.nn.grad, f"conv{shape.rank}d_weight")
    common = _common(shape)
    if _symmetric(shape):
        return lambda x, dout: conv_weight(x, shape.w_shape, dout, padding=_lows(shape), **common)
    pad = _torch_pad(shape)
    return lambda x, dout: conv_weight(torch.nn.functional.pad(x, pad), shape.w_shape, dout, **common)


def torch_train(torch, shape: AnyShape) -> Callable:
    """Autograd of ``sum(F.conv{1,2,3}d(x, w) * r)`` w.r.t. ``x`` and ``w``."""
    F = torch.nn.functional
    conv = getattr(F, f"conv{shape.rank}d")
    symmetric, common = _symmetric(shape), _common(shape)

    def step(x, w, r):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            w = w.detach().requires_grad_(True)
            if symmetric:
                y = conv(x, w, padding=_lows(shape), **common)
            else:
                y = conv(F.pad(x, _torch_pad(shape)), w, **common)
            loss = (y * r).sum()
            dx, dw = torch.autograd.grad(loss, (x, w))
        return loss.detach(), (dx, dw)

    return step


def prepare_torch(
    torch, fn: Callable, args: tuple, device: str, *, grad: bool = False, dtype: str = "float32", tf32: bool = False
) -> Prepared:
    """``fn`` on ``args`` (float32 arrays, cast to ``dtype`` on ``device``); ``tf32``: allow TF32 (CUDA) in its calls.

    On CUDA every call ends with ``torch.cuda.synchronize()`` (kernels are asynchronous).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    tdtype = getattr(torch, dtype)
    targs = tuple(torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device=device, dtype=tdtype) for a in args)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        if device == "cuda":  # per call: the 2-D entries keep TF32 off in a --precision default run
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.inference_mode(not grad):
            out = fn(*targs)
        sync()
        return out

    def to_numpy(out):
        if isinstance(out, tuple):
            return tuple(to_numpy(o) for o in out)
        return out.detach().float().cpu().numpy()

    memory = None
    if device == "cuda":
        call()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = call()
        peak = torch.cuda.max_memory_allocated()
        inputs = sum(t.numel() * t.element_size() for t in targs)
        memory = {"total": int(peak - base + inputs), "argument": int(inputs)}
        del out
    return Prepared(call=call, to_numpy=to_numpy, memory=memory)


def torch_tf32(shape: AnyShape, precision: str) -> bool:
    """PyTorch's TF32 switch for ``shape``: on exactly where the JAX side runs at the default precision."""
    return jax_precision(shape, precision) is None


def prepare_torch_op(
    torch, shape: AnyShape, impl: str, dout, w, device: str, *, precision: str = "highest", dtype: str = "float32"
) -> Prepared:
    """``impl`` is one of ``torch_op_impls(shape.rank)``."""
    conv_t, conv_input = torch_op_impls(shape.rank)
    fn = {conv_t: torch_conv_transpose, conv_input: torch_conv_input}[impl](torch, shape)
    return prepare_torch(torch, fn, (dout, w), device, dtype=dtype, tf32=torch_tf32(shape, precision))


def prepare_torch_train(
    torch, shape: AnyShape, x, w, r, device: str, *, precision: str = "highest", dtype: str = "float32"
) -> Prepared:
    return prepare_torch(
        torch, torch_train(torch, shape), (x, w, r), device, grad=True, dtype=dtype, tf32=torch_tf32(shape, precision)
    )


def prepare_torch_weight_grad(
    torch, shape: AnyShape, x, dout, device: str, *, precision: str = "highest", dtype: str = "float32"
) -> Prepared:
    return prepare_torch(
        torch, torch_conv_weight(torch, shape), (x, dout), device, dtype=dtype, tf32=torch_tf32(shape, precision)
    )

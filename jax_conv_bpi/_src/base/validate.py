"""Validators shared by every gate: the checks and messages that do not depend on a vocabulary.

Each function takes the name of the entry point (``op``) and of the argument,
so its error names both, the value received and what is accepted. The gates
of the two vocabularies build on these: lax's N-D one (``op.args``) and
MindSpore's (``mindspore.args_2d``, ``mindspore.args_nd``, ``mindspore.nn.config``).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AXES",
    "FLOAT_DTYPES",
    "FLOAT_NAMES",
    "MAX_DIM",
    "UNSET",
    "XLA_MAX_BYTES",
    "check_allocatable",
    "check_array",
    "check_entries",
    "check_int",
    "check_limit",
    "channels_last_hint",
    "float_dtype_name",
    "got",
    "is_array",
    "is_index",
    "is_int",
    "is_zero",
    "memory_limit",
    "same_dtype",
    "static_hint",
    "warn_shape_used",
    "weight_layout_hint",
]

AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
"""The spatial axes' names, per number of spatial dimensions (error messages name the axis)."""
FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
UNSET: Any = object()

FLOAT_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))

# Largest size, stride, dilation or padding accepted at call time: XLA's convolution
# attributes are 64-bit, but nothing this large can be allocated, and beyond 2**63
# the lowering itself overflows. Checked here so the answer is a ValueError.
MAX_DIM = 2**31 - 1


XLA_MAX_BYTES = 2**63 - 1
"""XLA's sizes and byte counts are signed 64-bit: no array of more bytes (or elements) can be addressed."""


@functools.cache
def memory_limit() -> tuple[int, str]:
    """The most bytes one array may take, and what that limit is, for ``check_allocatable``.

    The larger of the host's physical memory (``sysconf``; the CPU devices
    allocate there) and the memory of all devices of JAX's default backend
    together (``memory_stats()["bytes_limit"]``, where the backend reports it:
    GPUs and TPUs), so nothing any device of this process could hold is
    refused; ``XLA_MAX_BYTES`` where neither is known.
    """
    limits = []
    try:
        limits.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's physical memory"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        pass
    devices: list[Any] = []
    try:
        devices = list(jax.devices())
        stats = [d.memory_stats() or {} for d in devices]
    except Exception:  # no backend, or one that cannot report: the other limits stand
        stats = []
    if stats and all("bytes_limit" in st for st in stats):
        total = sum(int(st["bytes_limit"]) for st in stats)
        limits.append((total, f"the memory of the {len(stats)} {devices[0].platform} device(s) together"))
    if not limits:
        return XLA_MAX_BYTES, "what XLA can address (2**63 - 1 bytes)"
    return max(limits)


def check_allocatable(op: str, what: str, shape: Sequence[int], dtype: Any) -> None:
    """A ``ValueError`` naming the shape and its size in bytes where an array of ``shape`` and ``dtype`` cannot be
    allocated: more bytes than ``memory_limit()`` (or than XLA can address). Checked at trace time, so such a
    result fails with a Python exception instead of XLA's failed allocation (which may abort the process)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    limit, name = memory_limit()
    if nbytes > min(limit, XLA_MAX_BYTES):
        raise ValueError(
            f"{op}: the {what} would have shape {tuple(shape)} ({np.dtype(dtype).name}), {nbytes:,} bytes, more "
            f"than {name} ({limit:,} bytes): it cannot be allocated; check the sizes that set it (batch, spatial "
            f"sizes, strides, output size)"
        )


def is_int(v: object) -> TypeGuard[int]:
    """A Python int that is not a bool (MindSpore rejects numpy ints here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_index(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def static_hint(name: str | None = None) -> str:
    """The fix for a traced value where a static one is needed: ``static_argnames`` (naming ``name``), or a partial."""
    example = (
        f"jax.jit(f, static_argnames=({name!r},)) for a parameter of f named {name}"
        if name
        else "jax.jit(f, static_argnames=(...)) naming that parameter of f"
    )
    return (
        f"inside jax.jit a static argument must be a Python value known at trace time: mark it static, e.g. "
        f"{example}, or bind it with functools.partial"
    )


def got(v: Any, name: str | None = None) -> str:
    """``v`` as an error message shows it; a traced value says so, and how to make it static (``static_hint``)."""
    if isinstance(v, jax.core.Tracer):
        aval = getattr(v.aval, "str_short", lambda: str(v.aval))()
        return f"a traced value {aval} ({static_hint(name)})"
    return f"{v!r} ({type(v).__name__})"


def channels_last_hint(name: str, shape: Sequence[int], channels: int) -> str:
    """A hint for a channels-first array whose channel axis does not hold ``channels`` but whose last axis does.

    Returns ``""`` where that does not fit; else a clause to append to the error, naming the fix.
    """
    if len(shape) > 2 and shape[1] != channels and shape[-1] == channels:
        return (
            f"; '{name}' looks channels-last (its last axis has {channels}): this API is channels-first "
            f"(N, C, *spatial), so move the channels first with jnp.moveaxis({name}, -1, 1)"
        )
    return ""


def weight_layout_hint(name: str, shape: Sequence[int], in_per_group: int, *, axis_name: str = "C_in/group") -> str:
    """A hint for a weight of layout ``(O, I, *kernel)`` whose ``I`` axis does not hold ``in_per_group`` but that
    would in the channels-last layouts: ``(O, *kernel, I)`` (OHWI) or ``(*kernel, I, O)`` (HWIO). ``""`` otherwise."""
    n = len(shape) - 2
    if n < 1 or shape[1] == in_per_group:
        return ""
    spatial = ", ".join(str(i) for i in range(n))
    if shape[-1] == in_per_group:
        return (
            f"; '{name}' looks like (O, *kernel, I) (its last axis has {in_per_group} = {axis_name}): this API wants "
            f"(O, I, *kernel), jnp.moveaxis({name}, -1, 1)"
        )
    if n >= 1 and shape[-2] == in_per_group:
        return (
            f"; '{name}' looks like (*kernel, I, O) (HWIO: its axis {n} has {in_per_group} = {axis_name}): this API "
            f"wants (O, I, *kernel), jnp.transpose({name}, ({n + 1}, {n}, {spatial}))"
        )
    return ""


def is_zero(v: Any) -> bool:
    """``v == 0`` as MindSpore's tuple comparison sees it, without numpy's ambiguous-truth error."""
    try:
        return bool(v == 0)
    except (TypeError, ValueError):
        return False


def check_int(op: str, name: str, v: Any, *, minimum: int | None = None, equal: int | None = None) -> int:
    if not is_int(v):
        what = f"= {equal}" if equal is not None else f">= {minimum}"
        raise TypeError(f"{op}: '{name}' must be a Python int {what}, got {got(v, name)}")
    if equal is not None and v != equal:
        raise ValueError(f"{op}: '{name}' must be {equal} (the only value MindSpore supports), got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: '{name}' must be an int >= {minimum}, got {v!r}")
    return v


def check_entries(
    items: Sequence[Any], not_int: Callable[[Any], Exception], negative: Callable[[Any], Exception]
) -> tuple[int, ...]:
    """``items`` as a tuple of Python ints >= 0, checked entry by entry, in order.

    The first entry that is not a Python int raises ``not_int(entry)``, the
    first negative one ``negative(entry)``, whichever comes first: the callers
    build the exceptions, with each vocabulary's type and message.
    """
    for v in items:
        if not is_int(v):
            raise not_int(v)
        if v < 0:
            raise negative(v)
    return tuple(items)


def check_limit(op: str, name: str, values: Sequence[int]) -> None:
    if max(values) > MAX_DIM:
        raise ValueError(
            f"{op}: {name} {tuple(values)} is too large: sizes, strides, dilations and paddings must be "
            f"<= 2**31 - 1 = {MAX_DIM}"
        )


def check_array(op: str, name: str, value: Any) -> Any:
    """Accept JAX and NumPy arrays; reject Python lists, scalars and None.

    Nothing is converted here (``_nchw`` does that once every check passed), so
    a rejected call never reaches JAX, not even for a device transfer.
    """
    if not isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{op}: '{name}' must be a JAX or NumPy array, got {type(value).__name__}; Python lists, scalars "
            f"and None are not converted implicitly (use jnp.asarray)"
        )
    dtype = np.dtype(value.dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: '{name}' must have a floating dtype (float16, bfloat16, float32 or float64), got {dtype}"
        )
    return value


def same_dtype(op: str, names: tuple[str, str], a: Any, b: Any) -> None:
    # Compared as JAX will hold them: without x64 a NumPy float64 array is float32.
    if jax.dtypes.canonicalize_dtype(a.dtype) != jax.dtypes.canonicalize_dtype(b.dtype):
        raise TypeError(
            f"{op}: '{names[0]}' and '{names[1]}' must have the same dtype (no promotion), got {a.dtype} and {b.dtype}"
        )


def is_array(v: Any) -> bool:
    """A JAX or NumPy array (the only array types the entry points accept)."""
    return isinstance(v, (jax.Array, np.ndarray))


def float_dtype_name(op: str, name: str, value: Any) -> str:
    """The name of a floating dtype-like (``jnp.float32``, ``"bfloat16"``, ``np.dtype(...)``), else a TypeError."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(
            f"{op}: '{name}' must be a floating dtype ({', '.join(FLOAT_NAMES)}), got {got(value, name)}"
        ) from None
    if dtype.name not in FLOAT_NAMES:
        raise TypeError(f"{op}: '{name}' must be a floating dtype ({', '.join(FLOAT_NAMES)}), got {dtype.name}")
    return dtype.name


def warn_shape_used(op: str, name: str, value: Any, actual: Any, seen: str, used: str, *, stacklevel: int) -> None:
    """Warn (``UserWarning``) that attribute ``name=value`` disagrees with ``actual``, read from an array's shape.

    Nothing happens when ``value`` is ``None`` (not given) or equals ``actual``.
    The message is ``"{op}: {name}={value} disagrees with {seen}; {used}"``:
    ``seen`` names where ``actual`` comes from (its value included), ``used``
    says that the shape is used. ``stacklevel`` counts from this function's
    caller, as if it called ``warnings.warn`` itself.
    """
    if value is not None and value != actual:
        warnings.warn(f"{op}: {name}={value} disagrees with {seen}; {used}", UserWarning, stacklevel=stacklevel + 1)

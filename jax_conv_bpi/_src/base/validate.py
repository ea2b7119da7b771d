"""Validators shared by every gate: the checks and messages that do not depend on a vocabulary.

Each function takes the name of the entry point (``op``) and of the argument,
so its error names both, the value received and what is accepted. The gates
of the two vocabularies build on these: lax's N-D one (``op.args``) and
MindSpore's (``mindspore.args_2d``, ``mindspore.args_nd``, ``mindspore.nn.config``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AXES",
    "FLOAT_DTYPES",
    "FLOAT_NAMES",
    "MAX_DIM",
    "UNSET",
    "check_array",
    "check_entries",
    "check_int",
    "check_limit",
    "float_dtype_name",
    "got",
    "is_array",
    "is_index",
    "is_int",
    "is_zero",
    "same_dtype",
    "warn_shape_used",
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


def is_int(v: object) -> TypeGuard[int]:
    """A Python int that is not a bool (MindSpore rejects numpy ints here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_index(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def got(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def is_zero(v: Any) -> bool:
    """``v == 0`` as MindSpore's tuple comparison sees it, without numpy's ambiguous-truth error."""
    try:
        return bool(v == 0)
    except (TypeError, ValueError):
        return False


def check_int(op: str, name: str, v: Any, *, minimum: int | None = None, equal: int | None = None) -> int:
    if not is_int(v):
        what = f"= {equal}" if equal is not None else f">= {minimum}"
        raise TypeError(f"{op}: '{name}' must be a Python int {what}, got {got(v)}")
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
            f"{op}: '{name}' must be a floating dtype ({', '.join(FLOAT_NAMES)}), got {got(value)}"
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

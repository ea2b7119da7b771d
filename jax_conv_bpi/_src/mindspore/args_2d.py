"""Argument normalisation and validation: the one gate every entry point uses.

Two stages, both pure Python on static values, both run once at trace time:

* ``normalize_attrs`` turns the constructor/keyword attributes into a frozen,
  hashable ``ConvAttrs``. It follows MindSpore's order of checks (the first
  failure wins) and raises the same exception *type* MindSpore raises, with a
  message that names the operator, the argument, the value received and what
  is accepted.
* ``bind_*`` functions check the call-time inputs (array types, dtypes, ranks,
  ``input_size``, shape consistency) against the attributes and produce a
  ``ConvGeometry``: every static number the formulations need, channels-first.
  Shape mistakes raise ``ValueError`` naming expected and actual shapes.

``bind_conv_transpose`` is the same gate for the JAX-native ``conv_transpose``
(lax's vocabulary: strides, ``'SAME'``/``'VALID'``/pairs padding, dimension
numbers), and the size helpers validate their arguments with the very
checks the classes use. Every entry point goes through here, so they cannot
disagree.
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry

__all__ = ["ConvAttrs", "ConvGeometry", "bind_conv_transpose", "normalize_attrs"]

_UNSET: Any = object()
_FLOAT_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
_FORMATS = ("NCHW", "NHWC")
# Largest size, stride, dilation or padding accepted at call time: XLA's convolution
# attributes are 64-bit, but nothing this large can be allocated, and beyond 2**63
# the lowering itself overflows. Checked here so the answer is a ValueError.
_MAX_DIM = 2**31 - 1
# NCHW position of each axis letter, per data format.
_TO_NCHW = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 3, 1, 2)}
_FROM_NCHW = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 2, 3, 1)}


@dataclasses.dataclass(frozen=True)
class ConvAttrs:
    """Normalised, validated attributes of one operator instance (hashable)."""

    op_name: str
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_mode: str  # "valid" | "same" | "pad"
    pad: tuple[int, int, int, int]  # (top, bottom, left, right), pad_list already resolved
    group: int
    data_format: str  # "NCHW" | "NHWC"
    out_channel: int | None = None
    kernel_size: tuple[int, int] | None = None


# ---------------------------------------------------------------------------
# Constructor / keyword attributes
# ---------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    """A Python int that is not a bool (MindSpore rejects numpy ints here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _got(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def _is_zero(v: Any) -> bool:
    """``v == 0`` as MindSpore's tuple comparison sees it, without numpy's ambiguous-truth error."""
    try:
        return bool(v == 0)
    except (TypeError, ValueError):
        return False


def _check_int(op: str, name: str, v: Any, *, minimum: int | None = None, equal: int | None = None) -> int:
    if not _is_int(v):
        what = f"= {equal}" if equal is not None else f">= {minimum}"
        raise TypeError(f"{op}: '{name}' must be a Python int {what}, got {_got(v)}")
    if equal is not None and v != equal:
        raise ValueError(f"{op}: '{name}' must be {equal} (the only value MindSpore supports), got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: '{name}' must be an int >= {minimum}, got {v!r}")
    return v


def _check_kernel_size(op: str, v: Any) -> tuple[int, int]:
    if not (_is_int(v) or isinstance(v, tuple)):
        raise TypeError(f"{op}: 'kernel_size' must be an int or a tuple of 2 ints (not a list), got {_got(v)}")
    pair = (v, v) if _is_int(v) else v
    if len(pair) != 2 or not all(_is_int(k) and k > 0 for k in pair):
        raise ValueError(f"{op}: 'kernel_size' must be a positive int or a tuple of 2 positive ints, got {v!r}")
    return pair


def _check_window(op: str, name: str, v: Any) -> tuple[int, int]:
    """stride / dilation: int, 2-tuple (h, w) or 4-tuple (1, 1, h, w)."""
    if not (_is_int(v) or isinstance(v, tuple)):
        raise TypeError(f"{op}: '{name}' must be an int or a tuple of 2 or 4 ints (not a list), got {_got(v)}")
    full = (1, 1, v, v) if _is_int(v) else ((1, 1) + v if len(v) == 2 else v)
    if len(full) != 4 or not all(_is_int(k) and k > 0 for k in full):
        raise ValueError(
            f"{op}: '{name}' must be a positive int, a tuple (h, w) of positive ints or a 4-tuple "
            f"(1, 1, h, w), got {v!r}"
        )
    if full[0] != 1 or full[1] != 1:
        raise ValueError(
            f"{op}: a 4-tuple '{name}' must be (1, 1, h, w): it is read in (N, C, H, W) order for both data "
            f"formats, got {v!r}; pass the pair (h, w) instead"
            + (f", e.g. ({full[1]}, {full[2]}) if {v!r} was meant in NHWC order" if full[3] == 1 else "")
        )
    return full[2], full[3]


def normalize_attrs(
    op_name: str,
    *,
    out_channel: Any = _UNSET,
    kernel_size: Any = _UNSET,
    pad_mode: Any = "valid",
    pad: Any = 0,
    pad_list: Any = None,
    mode: Any = _UNSET,
    stride: Any = 1,
    dilation: Any = 1,
    group: Any = 1,
    data_format: Any = "NCHW",
) -> ConvAttrs:
    """Validate and normalise operator attributes in MindSpore's check order.

    ``out_channel``, ``kernel_size`` and ``mode`` are checked only when given
    (the classes give them; the functions take them from the weight).
    """
    op = op_name
    out_c = None if out_channel is _UNSET else _check_int(op, "out_channel", out_channel, minimum=1)
    ksize = None if kernel_size is _UNSET else _check_kernel_size(op, kernel_size)
    if not isinstance(data_format, str) or data_format not in _FORMATS:
        raise ValueError(f"{op}: 'data_format' must be 'NCHW' or 'NHWC' (upper case), got {_got(data_format)}")
    s = _check_window(op, "stride", stride)
    d = _check_window(op, "dilation", dilation)
    if not (_is_int(pad) or isinstance(pad, tuple)):
        raise TypeError(
            f"{op}: 'pad' must be an int or a tuple (top, bottom, left, right) of ints (not a list), got {_got(pad)}"
        )
    if not isinstance(pad_mode, str):
        raise TypeError(f"{op}: 'pad_mode' must be a str ('valid', 'same' or 'pad'), got {_got(pad_mode)}")
    pads = (pad,) * 4 if _is_int(pad) else pad
    if len(pads) != 4:
        raise ValueError(
            f"{op}: 'pad' must be an int or a tuple of exactly 4 ints (top, bottom, left, right), "
            f"got {pad!r} of length {len(pads)}"
        )
    m = pad_mode.lower()
    if m not in arithmetic.PAD_MODES:
        raise ValueError(
            f"{op}: 'pad_mode' must be 'valid', 'same' or 'pad' (any letter case, no spaces), got {pad_mode!r}"
        )
    if m != "pad" and not all(_is_zero(p) for p in pads):
        raise ValueError(f"{op}: 'pad' must be 0 or (0, 0, 0, 0) when pad_mode is {pad_mode!r}, got {pad!r}")
    if m == "pad":
        for p in pads:
            if not _is_int(p):
                raise TypeError(f"{op}: every entry of 'pad' must be a Python int >= 0, got {_got(p)} in {pad!r}")
            if p < 0:
                raise ValueError(f"{op}: every entry of 'pad' must be >= 0, got {p!r} in {pad!r}")
        pads = tuple(pads)
    else:
        pads = (0, 0, 0, 0)
    if mode is not _UNSET:
        _check_int(op, "mode", mode, equal=1)
    g = _check_int(op, "group", group, minimum=1)
    pads = _resolve_pad_list(op, pad_list, m, pads)
    return ConvAttrs(op, s, d, m, pads, g, data_format, out_c, ksize)


def _resolve_pad_list(op: str, pad_list: Any, mode: str, pads: tuple[int, ...]) -> tuple[int, int, int, int]:
    """MindSpore CPU: in pad mode an all->=0 ``pad_list`` replaces ``pad``."""
    if pad_list is None or (isinstance(pad_list, (tuple, list)) and len(pad_list) == 0 and mode != "pad"):
        return pads  # type: ignore[return-value]
    if not isinstance(pad_list, (tuple, list)):
        raise TypeError(
            f"{op}: 'pad_list' must be None or a tuple/list of 4 ints (top, bottom, left, right), got {_got(pad_list)}"
        )
    for p in pad_list:
        if _is_int(p) and p == -1:
            continue
        if not _is_int(p):
            raise TypeError(
                f"{op}: every entry of 'pad_list' must be a Python int >= 0 or -1, got {_got(p)} in {pad_list!r}"
            )
        if p < 0:
            raise ValueError(f"{op}: every entry of 'pad_list' must be >= 0 or -1, got {p!r} in {pad_list!r}")
    if mode != "pad" or any(p < 0 for p in pad_list):
        return pads  # type: ignore[return-value]  # ignored, as on MindSpore CPU
    if len(pad_list) != 4:
        raise ValueError(
            f"{op}: 'pad_list' must have 4 entries (top, bottom, left, right) in pad mode, got {pad_list!r}"
        )
    return tuple(pad_list)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Call-time inputs
# ---------------------------------------------------------------------------


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
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{op}: '{name}' must have a floating dtype (float16, bfloat16, float32 or float64), got {dtype}"
        )
    return value


def _check_rank(op: str, name: str, arr: Any, layout: str) -> None:
    if arr.ndim != 4:
        raise ValueError(f"{op}: '{name}' must be a rank-4 {layout} array, got shape {tuple(arr.shape)}")


def _same_dtype(op: str, names: tuple[str, str], a: Any, b: Any) -> None:
    # Compared as JAX will hold them: without x64 a NumPy float64 array is float32.
    if jax.dtypes.canonicalize_dtype(a.dtype) != jax.dtypes.canonicalize_dtype(b.dtype):
        raise TypeError(
            f"{op}: '{names[0]}' and '{names[1]}' must have the same dtype (no promotion), got {a.dtype} and {b.dtype}"
        )


def normalize_shape_arg(op: str, name: str, value: Any) -> tuple[int, int, int, int]:
    """``input_size`` / ``weight_shape``: 4 static non-negative ints."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{op}: '{name}' must be static (known at trace time), got a traced array {value.aval}; inside "
            f"jax.jit pass a tuple of Python ints, or mark the argument static (static_argnums)"
        )
    if isinstance(value, (jax.Array, np.ndarray)):
        if not jnp.issubdtype(value.dtype, jnp.integer):
            raise TypeError(f"{op}: '{name}' as an array must have an integer dtype, got {value.dtype}")
        if value.ndim != 1:
            raise ValueError(f"{op}: '{name}' as an array must be 1-D, got shape {tuple(value.shape)}")
        items: Sequence[Any] = [int(v) for v in np.asarray(value)]
    elif isinstance(value, (tuple, list)):
        items = value
        for v in items:
            if isinstance(v, jax.core.Tracer):
                raise TypeError(
                    f"{op}: '{name}' must be static (known at trace time), got a traced entry; inside jax.jit "
                    f"pass Python ints"
                )
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{op}: every entry of '{name}' must be an int, got {_got(v)} in {value!r}")
    else:
        raise TypeError(f"{op}: '{name}' must be a tuple or list of 4 ints or a 1-D integer array, got {_got(value)}")
    if len(items) != 4:
        raise ValueError(f"{op}: '{name}' must have 4 entries, got {len(items)}: {tuple(items)!r}")
    shape = tuple(operator.index(v) for v in items)
    if any(v < 0 for v in shape):
        raise ValueError(f"{op}: '{name}' entries must be >= 0, got {shape}")
    return shape  # type: ignore[return-value]


def _to_nchw(shape: Sequence[int], fmt: str) -> tuple[int, int, int, int]:
    return tuple(shape[i] for i in _TO_NCHW[fmt])  # type: ignore[return-value]


def _weight_to_oihw(shape: Sequence[int], fmt: str) -> tuple[int, int, int, int]:
    # NHWC weights are OHWI, which maps to OIHW like NHWC maps to NCHW.
    return _to_nchw(shape, fmt)


def _warn_attr_mismatch(attrs: ConvAttrs, w_oihw: tuple[int, int, int, int]) -> None:
    if attrs.kernel_size is not None and attrs.kernel_size != w_oihw[2:]:
        warnings.warn(
            f"{attrs.op_name}: kernel_size={attrs.kernel_size} disagrees with the weight's spatial shape "
            f"{w_oihw[2:]}; the weight's shape is used (as MindSpore does)",
            UserWarning,
            stacklevel=5,
        )
    if attrs.out_channel is not None and attrs.out_channel != w_oihw[0]:
        warnings.warn(
            f"{attrs.op_name}: out_channel={attrs.out_channel} disagrees with the weight's output channels "
            f"{w_oihw[0]}; the weight's shape is used (as MindSpore does)",
            UserWarning,
            stacklevel=5,
        )


def _layout_names(fmt: str) -> tuple[str, str]:
    return (fmt, "OIHW" if fmt == "NCHW" else "OHWI")


def _geometry(
    attrs: ConvAttrs,
    x: tuple[int, int, int, int],
    w: tuple[int, int, int, int],
    *,
    x_name: str,
    w_name: str,
) -> tuple[ConvGeometry, tuple[int, int]]:
    """Channel checks and the forward geometry; returns it and the expected output spatial size."""
    op, g = attrs.op_name, attrs.group
    fmt, wfmt = _layout_names(attrs.data_format)
    _check_limit(op, x_name, _from_nchw_shape(x, attrs.data_format))
    _check_limit(op, w_name, _from_nchw_shape(w, attrs.data_format))
    _check_limit(op, "stride", attrs.stride)
    _check_limit(op, "dilation", attrs.dilation)
    if min(w) < 1:
        raise ValueError(
            f"{op}: every dimension of '{w_name}' must be >= 1, got {w_name} shape ({wfmt}) "
            f"{_from_nchw_shape(w, attrs.data_format)}"
        )
    if min(x[1:]) < 1:
        raise ValueError(
            f"{op}: the channels, height and width of '{x_name}' must be >= 1 (only the batch may be 0), got "
            f"{x_name} {_from_nchw_shape(x, attrs.data_format)} ({fmt})"
        )
    if w[0] % g:
        raise ValueError(
            f"{op}: group={g} must divide the weight's output channels {w[0]} ({w_name} shape (OIHW) {w}); "
            f"accepted groups are the divisors of {w[0]}"
        )
    if x[1] != g * w[1]:
        raise ValueError(
            f"{op}: {x_name} has {x[1]} channels but with group={g} the weight expects group * C_in/group = "
            f"{g} * {w[1]} = {g * w[1]} ({w_name} shape (OIHW) {w})"
        )
    pairs = (attrs.pad[0:2], attrs.pad[2:4])
    padding = arithmetic.forward_padding(attrs.pad_mode, x[2:], w[2:], attrs.stride, attrs.dilation, pairs)
    _check_limit(op, "padding (top, bottom, left, right)", padding[0] + padding[1])
    out = tuple(
        arithmetic.output_length(x[2 + a], w[2 + a], attrs.stride[a], attrs.dilation[a], *padding[a]) for a in range(2)
    )
    geom = ConvGeometry(
        x_shape=x,
        w_shape=w,
        y_shape=(x[0], w[0], max(out[0], 0), max(out[1], 0)),
        stride=attrs.stride,
        dilation=attrs.dilation,
        padding=padding,
        group=g,
        precision=lax.Precision.HIGHEST,  # MindSpore computes float32 in full precision
    )
    _check_limit(op, "output", geom.y_shape)
    return geom, out  # type: ignore[return-value]


def _check_limit(op: str, name: str, values: Sequence[int]) -> None:
    if max(values) > _MAX_DIM:
        raise ValueError(
            f"{op}: {name} {tuple(values)} is too large: sizes, strides, dilations and paddings must be "
            f"<= 2**31 - 1 = {_MAX_DIM}"
        )


def _spatial_mismatch(attrs: ConvAttrs, geom: ConvGeometry, dout_hw, need_hw, x_hw) -> ValueError:
    op = attrs.op_name
    for a, axis in enumerate(("height", "width")):
        if dout_hw[a] == need_hw[a] and need_hw[a] >= 0:
            continue
        k, s, d = geom.kernel[a], attrs.stride[a], attrs.dilation[a]
        lo, hi = geom.padding[a]
        rng = arithmetic.valid_input_range(attrs.pad_mode, dout_hw[a], k, s, d, lo, hi)
        fits = f"input {axis}s that give dout {axis} {dout_hw[a]} are " + (f"{rng[0]}..{rng[1]}" if rng else "none")
        need = f"it needs dout {axis} {need_hw[a]}" if need_hw[a] >= 0 else "the kernel does not fit at all"
        return ValueError(
            f"{op}: dout {axis} {dout_hw[a]} does not fit input_size {axis} {x_hw[a]} (kernel {k}, stride {s}, "
            f"dilation {d}, pad_mode {attrs.pad_mode!r}, padding {(lo, hi)}): {need}; {fits}"
        )
    raise AssertionError("no mismatching axis")  # pragma: no cover


def bind_backprop_input(
    attrs: ConvAttrs, dout: Any, weight: Any, input_size: Any
) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate ``op(dout, weight, input_size)``; return NCHW/OIHW arrays and geometry."""
    op, fmt = attrs.op_name, attrs.data_format
    dout = check_array(op, "dout", dout)
    weight = check_array(op, "weight", weight)
    _same_dtype(op, ("dout", "weight"), dout, weight)
    _check_rank(op, "dout", dout, fmt)
    _check_rank(op, "weight", weight, _layout_names(fmt)[1])
    size = _to_nchw(normalize_shape_arg(op, "input_size", input_size), fmt)
    y = _to_nchw(dout.shape, fmt)
    w = _weight_to_oihw(weight.shape, fmt)
    if y[1] != w[0]:
        raise ValueError(
            f"{op}: dout has {y[1]} channels but the weight has {w[0]} output channels "
            f"(dout shape ({fmt}) {tuple(dout.shape)}, weight shape ({_layout_names(fmt)[1]}) {tuple(weight.shape)})"
        )
    geom, need = _geometry(attrs, size, w, x_name="input_size", w_name="weight")
    if y[0] != size[0]:
        raise ValueError(
            f"{op}: dout batch {y[0]} differs from input_size batch {size[0]}; they must be equal "
            f"(dout shape ({fmt}) {tuple(dout.shape)}, input_size {tuple(_from_nchw_shape(size, fmt))})"
        )
    if tuple(y[2:]) != tuple(need):
        raise _spatial_mismatch(attrs, geom, y[2:], need, size[2:])
    _warn_attr_mismatch(attrs, w)  # only for a call that is otherwise valid
    return _nchw(dout, fmt), _nchw(weight, fmt), geom


def bind_conv2d(attrs: ConvAttrs, x: Any, weight: Any) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate ``conv2d(x, weight)``."""
    op, fmt = attrs.op_name, attrs.data_format
    x = check_array(op, "x", x)
    weight = check_array(op, "weight", weight)
    _same_dtype(op, ("x", "weight"), x, weight)
    _check_rank(op, "x", x, fmt)
    _check_rank(op, "weight", weight, _layout_names(fmt)[1])
    w = _weight_to_oihw(weight.shape, fmt)
    geom, out = _geometry(attrs, _to_nchw(x.shape, fmt), w, x_name="x", w_name="weight")
    if min(out) < 0:
        padded = tuple(geom.x_shape[2 + a] + sum(geom.padding[a]) for a in range(2))
        raise ValueError(
            f"{op}: the kernel does not fit the padded input: padded x (height, width) {padded} with padding "
            f"{geom.padding[0] + geom.padding[1]}, kernel {geom.kernel}, dilation {geom.dilation}, extent {geom.extent}, stride "
            f"{geom.stride}; it needs padded height/width >= extent - stride = "
            f"{tuple(e - s for e, s in zip(geom.extent, geom.stride))}"
        )
    _warn_attr_mismatch(attrs, w)
    return _nchw(x, fmt), _nchw(weight, fmt), geom


def bind_backprop_filter(
    attrs: ConvAttrs, dout: Any, x: Any, weight_shape: Any
) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate ``op(dout, x, weight_shape)``."""
    op, fmt = attrs.op_name, attrs.data_format
    dout = check_array(op, "dout", dout)
    x = check_array(op, "x", x)
    _same_dtype(op, ("dout", "x"), dout, x)
    _check_rank(op, "dout", dout, fmt)
    _check_rank(op, "x", x, fmt)
    w = _weight_to_oihw(normalize_shape_arg(op, "weight_shape", weight_shape), fmt)
    y, xs = _to_nchw(dout.shape, fmt), _to_nchw(x.shape, fmt)
    if y[1] != w[0]:
        raise ValueError(
            f"{op}: dout has {y[1]} channels but weight_shape has {w[0]} output channels; they must be equal "
            f"(dout shape ({fmt}) {tuple(dout.shape)}, weight_shape {tuple(_from_nchw_shape(w, fmt))})"
        )
    geom, need = _geometry(attrs, xs, w, x_name="x", w_name="weight_shape")
    if y[0] != xs[0]:
        raise ValueError(
            f"{op}: dout batch {y[0]} differs from x batch {xs[0]}; they must be equal "
            f"(dout shape ({fmt}) {tuple(dout.shape)}, x shape ({fmt}) {tuple(x.shape)})"
        )
    if tuple(y[2:]) != tuple(need):
        raise _spatial_mismatch(attrs, geom, y[2:], need, xs[2:])
    _warn_attr_mismatch(attrs, w)
    return _nchw(dout, fmt), _nchw(x, fmt), geom


def _from_nchw_shape(shape: Sequence[int], fmt: str) -> tuple[int, ...]:
    return tuple(shape[i] for i in _FROM_NCHW[fmt])


def _nchw(arr: Any, fmt: str) -> jax.Array:
    arr = jnp.asarray(arr)
    return arr if fmt == "NCHW" else jnp.transpose(arr, _TO_NCHW[fmt])


def from_nchw(arr: jax.Array, fmt: str) -> jax.Array:
    """Back from the internal NCHW/OIHW layout to the user's format."""
    return arr if fmt == "NCHW" else jnp.transpose(arr, _FROM_NCHW[fmt])


# ---------------------------------------------------------------------------
# The JAX-native transposed convolution (lax's vocabulary, 1-3 spatial dims)
# ---------------------------------------------------------------------------

_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}


def default_dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channels-first layouts for ``n`` spatial dims: ``("NCH", "OIH", "NCH")`` ... ``("NCDHW", "OIDHW", "NCDHW")``."""
    sp = _SPATIAL[n]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def _is_index(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def spatial_ints(op: str, name: str, value: Any, n: int, *, minimum: int) -> tuple[int, ...]:
    """An int (every axis) or a tuple/list of ``n`` ints, each ``>= minimum``."""
    if _is_index(value):
        items = (int(value),) * n
    elif isinstance(value, (tuple, list)) and all(_is_index(v) for v in value):
        items = tuple(int(v) for v in value)
    else:
        raise TypeError(
            f"{op}: '{name}' must be an int or a sequence of {n} ints (one per spatial axis), got {_got(value)}"
        )
    if len(items) != n:
        raise ValueError(f"{op}: '{name}' needs {n} entries (one per spatial axis), got {len(items)}: {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{op}: every entry of '{name}' must be >= {minimum}, got {value!r}")
    _check_limit(op, f"'{name}'", items)
    return items


def padding_arg(op: str, padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    """``'SAME'`` / ``'VALID'`` (any case), an int, or ``n`` pairs ``(lo, hi)`` of ints >= 0."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"{op}: 'padding' as a string must be 'SAME' or 'VALID', got {padding!r}")
        return mode
    if _is_index(padding):
        pairs = ((int(padding), int(padding)),) * n
    elif isinstance(padding, (tuple, list)) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_index(v) for v in p) for p in padding
    ):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise TypeError(
            f"{op}: 'padding' must be 'SAME', 'VALID', an int or a sequence of {n} (lo, hi) pairs of ints, "
            f"got {_got(padding)}"
        )
    if len(pairs) != n:
        raise ValueError(f"{op}: 'padding' needs {n} (lo, hi) pairs (one per spatial axis), got {padding!r}")
    if any(v < 0 for p in pairs for v in p):
        raise ValueError(f"{op}: every padding must be >= 0, got {padding!r}")
    _check_limit(op, "'padding'", [v for p in pairs for v in p])
    return pairs


def _dimension_numbers(op: str, dn: Any, ndim: int, y_shape, w_shape) -> lax.ConvDimensionNumbers:
    if dn is None:
        dn = default_dimension_numbers(ndim - 2)
    try:
        return lax.conv_dimension_numbers(tuple(y_shape), tuple(w_shape), dn)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(
            f"{op}: invalid 'dimension_numbers' {dn!r} for rank-{ndim} operands: {e}; e.g. "
            f"{default_dimension_numbers(ndim - 2)!r} (channels-first) or "
            f"{('N' + _SPATIAL[ndim - 2] + 'C', _SPATIAL[ndim - 2] + 'IO', 'N' + _SPATIAL[ndim - 2] + 'C')!r}"
        ) from None


def _precision_arg(op: str, precision: Any) -> Any:
    if precision is None or isinstance(precision, lax.Precision):
        return precision
    if isinstance(precision, str):
        try:
            return lax.Precision(precision)
        except (ValueError, KeyError):
            raise ValueError(
                f"{op}: 'precision' must be None, a lax.Precision or one of its names ('default', 'high', "
                f"'highest', or the aliases 'fastest', 'bfloat16', 'tensorfloat32', 'float32'), got {precision!r}"
            ) from None
    if isinstance(precision, (tuple, list)) and len(precision) == 2:
        return tuple(_precision_arg(op, p) for p in precision)
    raise TypeError(f"{op}: 'precision' must be None, a lax.Precision, a str or a pair of them, got {_got(precision)}")


def _dtype_arg(op: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{op}: '{name}' must be None or a floating dtype, got {_got(value)}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: '{name}' must be float16, bfloat16, float32 or float64, got {dtype}")
    return jax.dtypes.canonicalize_dtype(dtype).name


def _cpu_path_arg(op: str, cpu_path: Any, strides, dilation) -> str | None:
    from jax_conv_bpi._src.lowering.dispatch import CPU_PATHS

    if cpu_path is None:
        return None
    if not isinstance(cpu_path, str) or cpu_path not in CPU_PATHS:
        raise ValueError(f"{op}: 'cpu_path' must be None or one of {CPU_PATHS}, got {cpu_path!r}")
    if cpu_path == "flipped_conv" and set(strides) != {1}:
        raise ValueError(f"{op}: cpu_path 'flipped_conv' needs stride 1 on every axis, got strides {strides}")
    if cpu_path == "lhs_dilated" and set(strides) != {1} and set(dilation) != {1}:
        raise ValueError(
            f"{op}: cpu_path 'lhs_dilated' with strides {strides} and dilation {dilation}: XLA CPU may abort the "
            f"process on strided + dilated lhs-dilated convolutions; choose another path"
        )
    return cpu_path


def transpose_geometry(
    op: str,
    y_cf: Sequence[int],
    w_cf: Sequence[int],
    strides: Any,
    padding: Any,
    output_padding: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
) -> ConvGeometry:
    """The geometry of ``conv_transpose`` from channels-first shapes of ``y`` and ``w`` (``_padding`` eq. (7))."""
    n = len(y_cf) - 2
    s = spatial_ints(op, "strides", strides, n, minimum=1)
    d = spatial_ints(op, "rhs_dilation", rhs_dilation, n, minimum=1)
    p_out = spatial_ints(op, "output_padding", output_padding, n, minimum=0)
    pads = padding_arg(op, padding, n)
    g = _check_int(op, "feature_group_count", feature_group_count, minimum=1)
    if min(w_cf) < 1:
        raise ValueError(f"{op}: every dimension of 'w' must be >= 1, got w shape (O, I, *kernel) {tuple(w_cf)}")
    if y_cf[1] != w_cf[0]:
        raise ValueError(
            f"{op}: y has {y_cf[1]} channels but w has {w_cf[0]} output channels (O); they must be equal "
            f"(y shape (N, C, *spatial) {tuple(y_cf)}, w shape (O, I, *kernel) {tuple(w_cf)})"
        )
    if w_cf[0] % g:
        raise ValueError(
            f"{op}: feature_group_count={g} must divide w's output channels {w_cf[0]}; accepted values are the "
            f"divisors of {w_cf[0]}"
        )
    sizes, pairs = [], []
    for a in range(n):
        o, k = y_cf[2 + a], w_cf[2 + a]
        limit = max(s[a], d[a])
        if p_out[a] >= limit:
            raise ValueError(
                f"{op}: output_padding {p_out[a]} on spatial axis {a} must be < max(stride, dilation) = {limit} "
                f"(stride {s[a]}, dilation {d[a]}); got output_padding {output_padding!r}"
            )
        if pads == "SAME":
            if p_out[a]:
                raise ValueError(
                    f"{op}: output_padding must be 0 with padding='SAME' (it fixes the size to y's size times the "
                    f"stride); for other sizes pass explicit (lo, hi) pairs, got output_padding {output_padding!r}"
                )
            size = o * s[a]
            lo, hi = arithmetic.same_padding(size, k, s[a], d[a])
        else:
            lo, hi = (0, 0) if pads == "VALID" else pads[a]
            size = arithmetic.transpose_input_length(o, k, s[a], d[a], lo, hi, p_out[a])
        if size < 1:
            raise ValueError(
                f"{op}: spatial axis {a}: y size {o}, kernel {k}, stride {s[a]}, dilation {d[a]}, padding {(lo, hi)} "
                f"and output_padding {p_out[a]} give an input size of {size}; it must be >= 1 (less padding)"
            )
        sizes.append(size)
        pairs.append((lo, arithmetic.cropped_high(size, o, k, s[a], d[a], lo, hi)))
    x = (y_cf[0], g * w_cf[1], *sizes)
    _check_limit(op, "result shape", x)
    return ConvGeometry(tuple(x), tuple(w_cf), tuple(y_cf), s, d, tuple(pairs), g)


def bind_conv_transpose(
    y: Any,
    w: Any,
    strides: Any,
    padding: Any,
    *,
    output_padding: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
    dimension_numbers: Any,
    precision: Any,
    preferred_element_type: Any,
    cpu_path: Any,
) -> tuple[jax.Array, jax.Array, ConvGeometry, tuple[int, ...]]:
    """Validate ``conv_transpose``; return channels-first ``y``, ``w``, the geometry and the result's permutation."""
    op = "conv_transpose"
    y = check_array(op, "y", y)
    w = check_array(op, "w", w)
    _same_dtype(op, ("y", "w"), y, w)
    if y.ndim not in (3, 4, 5) or w.ndim != y.ndim:
        raise ValueError(
            f"{op}: y and w must both have rank 3, 4 or 5 (1, 2 or 3 spatial dims), got y shape {tuple(y.shape)} "
            f"and w shape {tuple(w.shape)}"
        )
    dn = _dimension_numbers(op, dimension_numbers, y.ndim, y.shape, w.shape)
    y_cf = tuple(y.shape[i] for i in dn.out_spec)
    w_cf = tuple(w.shape[i] for i in dn.rhs_spec)
    geom = transpose_geometry(op, y_cf, w_cf, strides, padding, output_padding, rhs_dilation, feature_group_count)
    geom = geom.replace(
        precision=_precision_arg(op, precision),
        out_dtype=_dtype_arg(op, "preferred_element_type", preferred_element_type),
        cpu_path=_cpu_path_arg(op, cpu_path, geom.stride, geom.dilation),
    )
    y_arr, w_arr = jnp.asarray(y), jnp.asarray(w)
    if tuple(dn.out_spec) != tuple(range(y.ndim)):
        y_arr = jnp.transpose(y_arr, dn.out_spec)
    if tuple(dn.rhs_spec) != tuple(range(w.ndim)):
        w_arr = jnp.transpose(w_arr, dn.rhs_spec)
    return y_arr, w_arr, geom, tuple(int(i) for i in np.argsort(dn.lhs_spec))


# ---------------------------------------------------------------------------
# Size helpers: the classes' own checks
# ---------------------------------------------------------------------------


def size_pair(fn: str, name: str, value: Any, *, minimum: int) -> tuple[int, int]:
    """A (height, width) size: an int or a tuple of 2 ints (not a list, as for ``kernel_size``)."""
    if not (_is_int(value) or isinstance(value, tuple)):
        raise TypeError(f"{fn}: '{name}' must be an int or a tuple (h, w) of ints (not a list), got {_got(value)}")
    pair = (value, value) if _is_int(value) else value
    if len(pair) != 2 or not all(_is_int(v) and v >= minimum for v in pair):
        raise ValueError(f"{fn}: '{name}' must be an int >= {minimum} or a tuple (h, w) of such ints, got {value!r}")
    return pair  # type: ignore[return-value]


def helper_attrs(fn: str, kernel_size: Any, stride: Any, dilation: Any, pad_mode: Any, pad: Any) -> ConvAttrs:
    """The size helpers' attributes, checked exactly as the classes check them."""
    return normalize_attrs(fn, kernel_size=kernel_size, stride=stride, dilation=dilation, pad_mode=pad_mode, pad=pad)

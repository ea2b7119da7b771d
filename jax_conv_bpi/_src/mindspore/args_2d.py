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
from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.base.validate import (
    UNSET,
    check_array,
    check_entries,
    check_int,
    check_limit,
    got,
    is_int,
    is_zero,
    same_dtype,
    static_hint,
    warn_shape_used,
)

__all__ = [
    "ConvAttrs",
    "bind_backprop_filter",
    "bind_backprop_input",
    "bind_conv2d",
    "from_nchw",
    "normalize_attrs",
    "pad_items",
]

_FORMATS = ("NCHW", "NHWC")
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


def _check_kernel_size(op: str, v: Any) -> tuple[int, int]:
    if not (is_int(v) or isinstance(v, tuple)):
        raise TypeError(
            f"{op}: 'kernel_size' must be an int or a tuple of 2 ints (not a list), got {got(v, 'kernel_size')}"
        )
    pair = v if isinstance(v, tuple) else (v, v)
    if len(pair) != 2 or not all(is_int(k) and k > 0 for k in pair):
        raise ValueError(f"{op}: 'kernel_size' must be a positive int or a tuple of 2 positive ints, got {v!r}")
    return pair


def _check_window(op: str, name: str, v: Any) -> tuple[int, int]:
    """stride / dilation: int, 2-tuple (h, w) or 4-tuple (1, 1, h, w)."""
    if not (is_int(v) or isinstance(v, tuple)):
        raise TypeError(f"{op}: '{name}' must be an int or a tuple of 2 or 4 ints (not a list), got {got(v, name)}")
    full = ((1, 1) + v if len(v) == 2 else v) if isinstance(v, tuple) else (1, 1, v, v)
    if len(full) != 4 or not all(is_int(k) and k > 0 for k in full):
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
    out_channel: Any = UNSET,
    kernel_size: Any = UNSET,
    pad_mode: Any = "valid",
    pad: Any = 0,
    pad_list: Any = None,
    mode: Any = UNSET,
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
    out_c = None if out_channel is UNSET else check_int(op, "out_channel", out_channel, minimum=1)
    ksize = None if kernel_size is UNSET else _check_kernel_size(op, kernel_size)
    if not isinstance(data_format, str) or data_format not in _FORMATS:
        raise ValueError(
            f"{op}: 'data_format' must be 'NCHW' or 'NHWC' (upper case), got {got(data_format, 'data_format')}"
        )
    s = _check_window(op, "stride", stride)
    d = _check_window(op, "dilation", dilation)
    if not (is_int(pad) or isinstance(pad, tuple)):
        raise TypeError(
            f"{op}: 'pad' must be an int or a tuple (top, bottom, left, right) of ints (not a list), got {got(pad, 'pad')}"
        )
    if not isinstance(pad_mode, str):
        raise TypeError(f"{op}: 'pad_mode' must be a str ('valid', 'same' or 'pad'), got {got(pad_mode, 'pad_mode')}")
    pads = pad if isinstance(pad, tuple) else (pad,) * 4
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
    pads = pad_items(op, "pad", m, pad_mode, pads, pad)
    if mode is not UNSET:
        check_int(op, "mode", mode, equal=1)
    g = check_int(op, "group", group, minimum=1)
    pads = _resolve_pad_list(op, pad_list, m, pads)
    return ConvAttrs(op, s, d, m, pads, g, data_format, out_c, ksize)


def pad_items(op: str, name: str, mode: str, pad_mode: Any, pads: Sequence[Any], shown: Any) -> tuple[int, ...]:
    """The 'pad must be zero unless pad mode' check, then the pad items (ints >= 0); args_nd's paddings too."""
    zero = "0 or " + ("(" + ", ".join(["0"] * len(pads)) + ")" if len(pads) > 1 else "0")
    if mode != "pad":
        if not all(is_zero(p) for p in pads):
            raise ValueError(f"{op}: '{name}' must be {zero} when pad_mode is {pad_mode!r}, got {shown!r}")
        return (0,) * len(pads)
    return check_entries(
        pads,
        lambda p: TypeError(
            f"{op}: every entry of '{name}' must be a Python int >= 0, got {got(p, name)} in {shown!r}"
        ),
        lambda p: ValueError(f"{op}: every entry of '{name}' must be >= 0, got {p!r} in {shown!r}"),
    )


def _resolve_pad_list(op: str, pad_list: Any, mode: str, pads: tuple[int, ...]) -> tuple[int, int, int, int]:
    """MindSpore CPU: in pad mode an all->=0 ``pad_list`` replaces ``pad``."""
    if pad_list is None or (isinstance(pad_list, (tuple, list)) and len(pad_list) == 0 and mode != "pad"):
        return pads  # type: ignore[return-value]
    if not isinstance(pad_list, (tuple, list)):
        raise TypeError(
            f"{op}: 'pad_list' must be None or a tuple/list of 4 ints (top, bottom, left, right), got {got(pad_list, 'pad_list')}"
        )
    for p in pad_list:
        if is_int(p) and p == -1:
            continue
        if not is_int(p):
            raise TypeError(
                f"{op}: every entry of 'pad_list' must be a Python int >= 0 or -1, got {got(p, 'pad_list')} in {pad_list!r}"
            )
        if p < 0:
            raise ValueError(f"{op}: every entry of 'pad_list' must be >= 0 or -1, got {p!r} in {pad_list!r}")
    if mode != "pad" or any(p < 0 for p in pad_list):
        return pads  # type: ignore[return-value]  # ignored, as on MindSpore CPU
    if len(pad_list) != 4:
        raise ValueError(
            f"{op}: 'pad_list' must have 4 entries (top, bottom, left, right) in pad mode, got {pad_list!r}"
        )
    return tuple(pad_list)


# ---------------------------------------------------------------------------
# Call-time inputs
# ---------------------------------------------------------------------------


def _check_rank(op: str, name: str, arr: Any, layout: str) -> None:
    if arr.ndim != 4:
        raise ValueError(f"{op}: '{name}' must be a rank-4 {layout} array, got shape {tuple(arr.shape)}")


def normalize_shape_arg(op: str, name: str, value: Any) -> tuple[int, int, int, int]:
    """``input_size`` / ``weight_shape``: 4 static non-negative ints."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{op}: '{name}' must be static (known at trace time), got a traced array {value.aval}: pass a tuple "
            f"of Python ints ({static_hint(name)}; a tuple, not an array: static arguments must be hashable)"
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
                    f"{op}: '{name}' must be static (known at trace time), got a traced entry in it: pass Python "
                    f"ints ({static_hint(name)})"
                )
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{op}: every entry of '{name}' must be an int, got {got(v, name)} in {value!r}")
    else:
        raise TypeError(
            f"{op}: '{name}' must be a tuple or list of 4 ints or a 1-D integer array, got {got(value, name)}"
        )
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
    op, used = attrs.op_name, "the weight's shape is used (as MindSpore does)"
    kernel, out_c = w_oihw[2:], w_oihw[0]
    seen = f"the weight's spatial shape {kernel}"
    warn_shape_used(op, "kernel_size", attrs.kernel_size, kernel, seen, used, stacklevel=5)
    seen = f"the weight's output channels {out_c}"
    warn_shape_used(op, "out_channel", attrs.out_channel, out_c, seen, used, stacklevel=5)


def _format_hint(name: str, shape: Sequence[int], fmt: str, channels: int, *, array: bool = True) -> str:
    """A hint where ``name`` (of ``shape``, read as ``fmt``) would have ``channels`` channels in the other layout.

    ``array``: ``name`` is an array (else a shape such as ``input_size``, reordered rather than transposed).
    """
    other = "NHWC" if fmt == "NCHW" else "NCHW"
    if len(shape) == 4 and _to_nchw(shape, other)[1] == channels != _to_nchw(shape, fmt)[1]:
        perm = (0, 3, 1, 2) if fmt == "NCHW" else (0, 2, 3, 1)
        fix = f"jnp.transpose({name}, {perm})" if array else f"{tuple(shape[i] for i in perm)}"
        weights = "OHWI" if other == "NHWC" else "OIHW"
        return (
            f"; '{name}' looks {other}: as {fmt} it is {fix}, or pass data_format={other!r} (then every array is "
            f"{other} and the weight {weights})"
        )
    return ""


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
    check_limit(op, x_name, _from_nchw_shape(x, attrs.data_format))
    check_limit(op, w_name, _from_nchw_shape(w, attrs.data_format))
    check_limit(op, "stride", attrs.stride)
    check_limit(op, "dilation", attrs.dilation)
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
        shown = _from_nchw_shape(x, attrs.data_format)
        raise ValueError(
            f"{op}: {x_name} has {x[1]} channels but with group={g} the weight expects group * C_in/group = "
            f"{g} * {w[1]} = {g * w[1]} ({w_name} shape (OIHW) {w})"
            f"{_format_hint(x_name, shown, attrs.data_format, g * w[1], array=x_name != 'input_size')}"
        )
    pairs = (attrs.pad[0:2], attrs.pad[2:4])
    padding = arithmetic.forward_padding(attrs.pad_mode, x[2:], w[2:], attrs.stride, attrs.dilation, pairs)
    check_limit(op, "padding (top, bottom, left, right)", padding[0] + padding[1])
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
    check_limit(op, "output", geom.y_shape)
    return geom, out  # type: ignore[return-value]


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


def _check_operands(op: str, names: tuple[str, str], a: Any, b: Any, layouts: tuple[str, str]) -> tuple[Any, Any]:
    """The two arrays of a call: array types, one dtype, then rank 4 (``layouts`` name their axes' order)."""
    a = check_array(op, names[0], a)
    b = check_array(op, names[1], b)
    same_dtype(op, names, a, b)
    _check_rank(op, names[0], a, layouts[0])
    _check_rank(op, names[1], b, layouts[1])
    return a, b


def _gradient_geometry(
    attrs: ConvAttrs,
    dout: Any,
    x: tuple[int, int, int, int],
    w: tuple[int, int, int, int],
    *,
    x_name: str,
    w_name: str,
    w_has: str,
    shown: tuple[str, str],
) -> ConvGeometry:
    """The gradients' checks of ``dout`` against the forward's input ``x`` and weight ``w`` (NCHW, OIHW).

    In order: ``dout``'s channels against ``w``'s output channels, the forward
    geometry (``_geometry``'s checks), the batch, then the spatial sizes.
    ``w_has`` states ``w``'s output channels in the channel error; ``shown``
    shows the weight's and ``x``'s shapes in the channel and batch errors.
    """
    op, fmt = attrs.op_name, attrs.data_format
    y = _to_nchw(dout.shape, fmt)
    if y[1] != w[0]:
        raise ValueError(
            f"{op}: dout has {y[1]} channels but {w_has} (dout shape ({fmt}) {tuple(dout.shape)}, {shown[0]})"
            f"{_format_hint('dout', dout.shape, fmt, w[0])}"
        )
    geom, need = _geometry(attrs, x, w, x_name=x_name, w_name=w_name)
    if y[0] != x[0]:
        raise ValueError(
            f"{op}: dout batch {y[0]} differs from {x_name} batch {x[0]}; they must be equal "
            f"(dout shape ({fmt}) {tuple(dout.shape)}, {shown[1]})"
        )
    if tuple(y[2:]) != tuple(need):
        raise _spatial_mismatch(attrs, geom, y[2:], need, x[2:])
    return geom


def bind_backprop_input(
    attrs: ConvAttrs, dout: Any, weight: Any, input_size: Any
) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate ``op(dout, weight, input_size)``; return NCHW/OIHW arrays and geometry."""
    op, fmt = attrs.op_name, attrs.data_format
    wfmt = _layout_names(fmt)[1]
    dout, weight = _check_operands(op, ("dout", "weight"), dout, weight, (fmt, wfmt))
    size = _to_nchw(normalize_shape_arg(op, "input_size", input_size), fmt)
    w = _weight_to_oihw(weight.shape, fmt)
    geom = _gradient_geometry(
        attrs, dout, size, w, x_name="input_size", w_name="weight", w_has=f"the weight has {w[0]} output channels",
        shown=(f"weight shape ({wfmt}) {tuple(weight.shape)}", f"input_size {tuple(_from_nchw_shape(size, fmt))}"),
    )  # fmt: skip
    _warn_attr_mismatch(attrs, w)  # only for a call that is otherwise valid
    return _nchw(dout, fmt), _nchw(weight, fmt), geom


def bind_conv2d(attrs: ConvAttrs, x: Any, weight: Any) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate ``conv2d(x, weight)``."""
    op, fmt = attrs.op_name, attrs.data_format
    x, weight = _check_operands(op, ("x", "weight"), x, weight, (fmt, _layout_names(fmt)[1]))
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
    dout, x = _check_operands(op, ("dout", "x"), dout, x, (fmt, fmt))
    w = _weight_to_oihw(normalize_shape_arg(op, "weight_shape", weight_shape), fmt)
    geom = _gradient_geometry(
        attrs, dout, _to_nchw(x.shape, fmt), w, x_name="x", w_name="weight_shape",
        w_has=f"weight_shape has {w[0]} output channels; they must be equal",
        shown=(f"weight_shape {tuple(_from_nchw_shape(w, fmt))}", f"x shape ({fmt}) {tuple(x.shape)}"),
    )  # fmt: skip
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


# ---------------------------------------------------------------------------
# Size helpers: the classes' own checks
# ---------------------------------------------------------------------------


def size_pair(fn: str, name: str, value: Any, *, minimum: int) -> tuple[int, int]:
    """A (height, width) size: an int or a tuple of 2 ints (not a list, as for ``kernel_size``)."""
    if not (is_int(value) or isinstance(value, tuple)):
        raise TypeError(f"{fn}: '{name}' must be an int or a tuple (h, w) of ints (not a list), got {got(value, name)}")
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2 or not all(is_int(v) and v >= minimum for v in pair):
        raise ValueError(f"{fn}: '{name}' must be an int >= {minimum} or a tuple (h, w) of such ints, got {value!r}")
    return pair


def helper_attrs(fn: str, kernel_size: Any, stride: Any, dilation: Any, pad_mode: Any, pad: Any) -> ConvAttrs:
    """The size helpers' attributes, checked exactly as the classes check them."""
    return normalize_attrs(fn, kernel_size=kernel_size, stride=stride, dilation=dilation, pad_mode=pad_mode, pad=pad)

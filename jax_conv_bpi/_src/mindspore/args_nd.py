"""Validation for MindSpore's 3-D convolutions and its functional convolution API.

The same two stages as ``args_2d`` (which this module builds on):

* ``conv3d_attrs`` normalises the arguments of ``ops.Conv3D`` /
  ``ops.Conv3DTranspose`` (and of ``ops.conv3d`` / ``ops.conv3d_transpose``,
  which build those primitives) in MindSpore's order of checks, raising
  MindSpore's exception type; ``functional_attrs`` does the same for the
  per-function argument forms of ``conv1d`` / ``conv2d`` / ``conv3d`` /
  ``conv_transpose2d``. Both return a frozen, hashable ``NdAttrs``.
* ``bind_forward`` / ``bind_transpose`` check the arrays against the
  attributes and produce the ``ConvGeometry`` of the call (channels-first, 1-3
  spatial dims). Call-time mistakes are ``ValueError`` / ``TypeError`` naming
  the argument, the shapes and what would fit.

All size arithmetic is ``arithmetic``'s; the transposed output length follows
MindSpore: ``pad`` mode is PyTorch's rule (``output_padding`` positions hold
computed values), ``same`` gives ``L * s``, and ``valid`` gives
``max(L * s, (L - 1) * s + ek)`` (quirk ``valid_output_at_least_L_times_stride``:
the adjoint of a valid convolution of the longer input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.base.validate import (
    AXES,
    UNSET,
    channels_last_hint,
    check_array,
    check_int,
    check_limit,
    got,
    is_int,
    same_dtype,
    warn_shape_used,
    weight_layout_hint,
)
from jax_conv_bpi._src.mindspore.args_2d import pad_items

__all__ = ["NdAttrs", "bind_forward", "bind_transpose", "check_bias", "conv3d_attrs", "functional_attrs"]


@dataclasses.dataclass(frozen=True)
class NdAttrs:
    """Normalised attributes of one MindSpore N-D convolution (hashable)."""

    op_name: str
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_mode: str  # "valid" | "same" | "pad"
    pad: tuple[tuple[int, int], ...]  # (lo, hi) per spatial axis, used in pad mode
    group: int
    output_padding: tuple[int, ...] | None = None  # transposed ops only
    out_channel: int | None = None
    kernel_size: tuple[int, ...] | None = None
    in_channel: int | None = None

    @property
    def ndim(self) -> int:
        return len(self.stride)


# ---------------------------------------------------------------------------
# Shared pieces of MindSpore's checks
# ---------------------------------------------------------------------------


def _int_or_tuple(op: str, name: str, v: Any, n: int, *, minimum: int, what: str) -> tuple[int, ...]:
    """An int (every axis) or a tuple of exactly ``n`` ints >= ``minimum``: TypeError for other types."""
    if not (is_int(v) or isinstance(v, tuple)):
        raise TypeError(f"{op}: '{name}' must be an int or a tuple of {n} ints (not a list), got {got(v, name)}")
    items = v if isinstance(v, tuple) else (v,) * n
    if len(items) != n or not all(is_int(k) and k >= minimum for k in items):
        raise ValueError(f"{op}: '{name}' must be {what} or a tuple of {n} such ints, got {v!r}")
    return tuple(items)


def _pad_mode(op: str, pad_mode: Any) -> str:
    if not isinstance(pad_mode, str):
        raise TypeError(f"{op}: 'pad_mode' must be a str ('valid', 'same' or 'pad'), got {got(pad_mode, 'pad_mode')}")
    mode = pad_mode.lower()
    if mode not in arithmetic.PAD_MODES:
        raise ValueError(
            f"{op}: 'pad_mode' must be 'valid', 'same' or 'pad' (any letter case, no spaces), got {pad_mode!r}"
        )
    return mode


def _pairs(flat: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def _group(op: str, name: str, group: Any, out_channel: int) -> int:
    if not is_int(group):
        raise TypeError(f"{op}: '{name}' must be a Python int in [1, {out_channel}], got {got(group, name)}")
    if not 1 <= group <= out_channel:
        raise ValueError(f"{op}: '{name}' must be in [1, {out_channel}] (out_channel {out_channel}), got {group!r}")
    if out_channel % group:
        raise ValueError(
            f"{op}: '{name}'={group} must divide out_channel={out_channel}; accepted values are the divisors of "
            f"{out_channel}"
        )
    return group


# ---------------------------------------------------------------------------
# ops.Conv3D / ops.Conv3DTranspose (MindSpore's checks, in MindSpore's order)
# ---------------------------------------------------------------------------


def conv3d_attrs(
    op: str,
    *,
    transpose: bool,
    in_channel: Any = UNSET,
    out_channel: Any,
    kernel_size: Any,
    mode: Any = 1,
    pad_mode: Any = "valid",
    pad: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    group: Any = 1,
    output_padding: Any = 0,
    data_format: Any = "NCDHW",
    pad_name: str = "pad",
) -> NdAttrs:
    """The constructor checks of ``Conv3D`` (``transpose=False``) or ``Conv3DTranspose``.

    Deliberately not copied (MindSpore CPU limits the mathematics does not have):
    the transposed op's depth dilation == 1, kernel volume <= 343 and stride limits.
    ``pad_name``: what the caller calls ``pad`` (``ops.conv3d_transpose``: ``padding``).
    """
    in_c = out_c = None
    if transpose:
        in_c = check_int(op, "in_channel", in_channel, minimum=1)
        out_c = check_int(op, "out_channel", out_channel, minimum=1)
    ks = _int_or_tuple(op, "kernel_size", kernel_size, 3, minimum=1, what="a positive int")
    s = _int_or_tuple(op, "stride", stride, 3, minimum=1, what="a positive int")
    d = _int_or_tuple(op, "dilation", dilation, 3, minimum=1, what="a positive int")
    if not (is_int(pad) or isinstance(pad, tuple)):
        raise TypeError(
            f"{op}: '{pad_name}' must be an int or a tuple of 6 ints (head, tail, top, bottom, left, right), not a list, "
            f"got {got(pad, pad_name)}"
        )
    pads = pad if isinstance(pad, tuple) else (pad,) * 6

    def pad_length():
        if len(pads) != 6:
            raise ValueError(
                f"{op}: '{pad_name}' must be an int or a tuple of exactly 6 ints (head, tail, top, bottom, left, right), "
                f"got {pad!r} of length {len(pads)}"
            )

    if transpose:  # Conv3DTranspose checks the pad_mode type before the pad length
        m = _pad_mode(op, pad_mode)
        pad_length()
    else:
        pad_length()
        m = _pad_mode(op, pad_mode)
    flat = pad_items(op, pad_name, m, pad_mode, pads, pad)
    check_int(op, "mode", mode, equal=1)
    if not transpose:
        if data_format != "NCDHW":
            raise ValueError(
                f"{op}: 'data_format' must be 'NCDHW' (the only layout), got {got(data_format, 'data_format')}"
            )
        out_c = check_int(op, "out_channel", out_channel, minimum=1)
    assert out_c is not None  # checked above, where each op checks it
    g = _group(op, "group", group, out_c)
    op_pad = None
    if transpose:
        if data_format != "NCDHW":
            raise ValueError(
                f"{op}: 'data_format' must be 'NCDHW' (the only layout), got {got(data_format, 'data_format')}"
            )
        if not (is_int(output_padding) or isinstance(output_padding, tuple)):
            raise TypeError(
                f"{op}: 'output_padding' must be an int or a tuple of 3 ints (not a list), got {got(output_padding, 'output_padding')}"
            )
        op_pad = _int_or_tuple(op, "output_padding", output_padding, 3, minimum=0, what="an int >= 0")
        if any(op_pad) and m != "pad":
            raise ValueError(
                f"{op}: 'output_padding' must be 0 or (0, 0, 0) when pad_mode is {pad_mode!r} (it needs 'pad'), "
                f"got {output_padding!r}"
            )
        for a, axis in enumerate(AXES[3]):
            limit = max(s[a], d[a])
            if op_pad[a] >= limit:
                raise ValueError(
                    f"{op}: 'output_padding' on the {axis} axis must be in [0, max(stride, dilation)) = [0, {limit}) "
                    f"(stride {s[a]}, dilation {d[a]}), got {output_padding!r}"
                )
    return NdAttrs(op, s, d, m, _pairs(flat), g, op_pad, out_c, ks, in_c)


# ---------------------------------------------------------------------------
# The functional API's argument forms
# ---------------------------------------------------------------------------


def _conv1d_single(op: str, name: str, v: Any, *, minimum: int, exc: type[Exception]) -> int:
    """conv1d: an int or a tuple/list of one int (MindSpore: any other type is a ValueError for stride/dilation)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"{op}: '{name}' must be an int or a tuple/list of 1 int, got {v!r} of length {len(v)}")
        (item,) = v
    elif is_int(v):
        item = v
    else:
        raise exc(f"{op}: '{name}' must be an int or a tuple/list of 1 int, got {got(v, name)}")
    if name == "padding":
        return item  # its items are checked with the pad mode
    if not is_int(item):
        raise ValueError(f"{op}: '{name}' must be an int or a tuple/list of 1 int, got {v!r}")
    if item < minimum:
        raise ValueError(f"{op}: '{name}' must be a positive int, got {v!r}")
    return item


def _window_nd(op: str, name: str, v: Any, n: int) -> tuple[int, ...]:
    """conv2d/conv3d stride/dilation: length checked first (tuple or list), then Conv2D/Conv3D's int-or-tuple rule."""
    if isinstance(v, (tuple, list)) and len(v) != n:
        raise ValueError(f"{op}: '{name}' must be an int or a tuple of {n} ints, got {v!r} of length {len(v)}")
    return _int_or_tuple(op, name, v, n, minimum=1, what="a positive int")


def _padding_nd(op: str, padding: Any, n: int) -> tuple[Any, ...]:
    """conv1d/2d/3d ``padding``: an int, or a tuple/list of ``n`` (one symmetric amount per axis)."""
    if is_int(padding):
        per_axis: Sequence[Any] = (padding,) * n
    elif isinstance(padding, (tuple, list)):
        if len(padding) != n:
            raise ValueError(
                f"{op}: 'padding' must be an int or a tuple/list of {n} ints (one per spatial axis, both ends), "
                f"got {padding!r} of length {len(padding)}"
            )
        per_axis = padding
    else:
        raise TypeError(f"{op}: 'padding' must be an int or a tuple/list of {n} ints, got {got(padding, 'padding')}")
    return tuple(v for p in per_axis for v in (p, p))


def _groups_arg(op: str, groups: Any) -> int:
    return check_int(op, "groups", groups, minimum=1)


def functional_attrs(
    op: str,
    n: int,
    *,
    stride: Any,
    dilation: Any,
    padding: Any,
    pad_mode: Any = "pad",
    groups: Any,
    output_padding: Any = None,
) -> NdAttrs:
    """The argument checks of ``conv1d`` (n=1), ``conv2d`` (2), ``conv3d`` (3), ``conv_transpose2d`` (output_padding)."""
    if output_padding is not None:  # conv_transpose2d: ints or sequences of 2 (lists too)
        s = _seq2(op, "stride", stride, minimum=1)
        p = _seq2(op, "padding", padding, minimum=0)
        op_pad = _seq2(op, "output_padding", output_padding, minimum=0)
        d = _seq2(op, "dilation", dilation, minimum=1)
        g = _groups_arg(op, groups)
        return NdAttrs(op, s, d, "pad", tuple((v, v) for v in p), g, op_pad)
    if n == 1:
        s = (_conv1d_single(op, "stride", stride, minimum=1, exc=ValueError),)
        d = (_conv1d_single(op, "dilation", dilation, minimum=1, exc=ValueError),)
        p = _conv1d_single(op, "padding", padding, minimum=0, exc=TypeError)
        flat: Sequence[Any] = (p, p)
    else:
        s = _window_nd(op, "stride", stride, n)
        d = _window_nd(op, "dilation", dilation, n)
        flat = _padding_nd(op, padding, n)
    m = _pad_mode(op, pad_mode)
    flat = pad_items(op, "padding", m, pad_mode, flat, padding)
    g = _groups_arg(op, groups)
    return NdAttrs(op, s, d, m, _pairs(flat), g)


def _seq2(op: str, name: str, v: Any, *, minimum: int) -> tuple[int, int]:
    if is_int(v):
        items: Sequence[Any] = (v, v)
    elif isinstance(v, (tuple, list)) and all(is_int(k) for k in v):
        items = v
    else:
        raise TypeError(f"{op}: '{name}' must be an int or a tuple/list of 2 ints (height, width), got {got(v, name)}")
    if len(items) != 2:
        raise ValueError(f"{op}: '{name}' must be an int or a tuple/list of 2 ints (height, width), got {v!r}")
    if min(items) < minimum:
        what = "positive" if minimum else ">= 0"
        raise ValueError(f"{op}: every entry of '{name}' must be {what}, got {v!r}")
    return tuple(items)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Call time: arrays, shapes, geometry
# ---------------------------------------------------------------------------


def check_operands(op: str, names: tuple[str, str], a: Any, b: Any, ranks: tuple[int, ...]) -> tuple[Any, Any]:
    a = check_array(op, names[0], a)
    b = check_array(op, names[1], b)
    same_dtype(op, names, a, b)
    for name, arr in zip(names, (a, b)):
        if arr.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{op}: '{name}' must have rank {want}, got shape {tuple(arr.shape)}")
    return a, b


def check_bias(op: str, bias: Any, like: Any, channels: int) -> Any:
    """``None`` or a 1-D array of ``channels`` entries and the result's dtype."""
    if bias is None:
        return None
    bias = check_array(op, "bias", bias)
    if bias.ndim != 1 or bias.shape[0] != channels:
        raise ValueError(
            f"{op}: 'bias' must be None or 1-D with one entry per output channel, shape ({channels},), got shape "
            f"{tuple(bias.shape)}"
        )
    same_dtype(op, ("bias", "input"), bias, like)
    return bias


def add_bias(out: jax.Array, bias: Any) -> jax.Array:
    """``out + bias[c]`` over the channel axis (after the convolution's single rounding)."""
    if bias is None:
        return out
    return out + jnp.asarray(bias).reshape((1, -1) + (1,) * (out.ndim - 2))


def _shape_checks(attrs: NdAttrs, x_name: str, w_name: str, x: tuple[int, ...], w: tuple[int, ...]) -> None:
    op = attrs.op_name
    check_limit(op, x_name, x)
    check_limit(op, w_name, w)
    check_limit(op, "stride", attrs.stride)
    check_limit(op, "dilation", attrs.dilation)
    check_limit(op, "padding", [v for pair in attrs.pad for v in pair])
    if min(w) < 1:
        raise ValueError(f"{op}: every dimension of '{w_name}' must be >= 1, got {w_name} shape {w}")
    if min(x[1:]) < 1:
        raise ValueError(
            f"{op}: the channels and spatial sizes of '{x_name}' must be >= 1 (only the batch may be 0), got "
            f"{x_name} shape {x}"
        )


def _check_kernel_size(attrs: NdAttrs, w_name: str, w: tuple[int, ...]) -> None:
    """The weight's spatial shape against the ``kernel_size`` attribute, where the op has one."""
    if attrs.kernel_size is not None and w[2:] != attrs.kernel_size:
        raise ValueError(
            f"{attrs.op_name}: {w_name} spatial shape {w[2:]} differs from kernel_size={attrs.kernel_size} "
            f"({w_name} shape {w})"
        )


def bind_forward(
    attrs: NdAttrs, x: Any, weight: Any, *, x_name: str = "x", w_name: str = "weight"
) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate the forward convolution ``(x, weight)``; return the arrays and the geometry."""
    op, n, g = attrs.op_name, attrs.ndim, attrs.group
    x, weight = check_operands(op, (x_name, w_name), x, weight, (n + 2,))
    xs, w = tuple(x.shape), tuple(weight.shape)
    _shape_checks(attrs, x_name, w_name, xs, w)
    if attrs.out_channel is not None and w[0] != attrs.out_channel:
        raise ValueError(
            f"{op}: {w_name} has {w[0]} output channels but out_channel={attrs.out_channel} ({w_name} shape "
            f"(C_out, C_in/group, *kernel) {w}); make them equal"
        )
    _check_kernel_size(attrs, w_name, w)
    group_name = "group" if op[0].isupper() else "groups"  # the classes' argument, or the functions'
    if w[0] % g:
        raise ValueError(
            f"{op}: '{group_name}'={g} must divide the output channels {w[0]} ({w_name} shape {w}); accepted "
            f"values are the common divisors of {w[0]} and the input channels {xs[1]}"
        )
    if xs[1] != g * w[1]:
        hint = channels_last_hint(x_name, xs, g * w[1])
        if not hint and xs[1] % g == 0:
            hint = weight_layout_hint(w_name, w, xs[1] // g, axis_name=f"C_in/{group_name}")
        raise ValueError(
            f"{op}: {x_name} has {xs[1]} channels but with '{group_name}'={g} the {w_name} expects "
            f"{group_name} * C_in/{group_name} = {g} * {w[1]} = {g * w[1]} ({x_name} shape {xs}, {w_name} shape {w})"
            f"{hint}"
        )
    padding = arithmetic.forward_padding(attrs.pad_mode, xs[2:], w[2:], attrs.stride, attrs.dilation, attrs.pad)
    out = [
        arithmetic.output_length(xs[2 + a], w[2 + a], attrs.stride[a], attrs.dilation[a], *padding[a]) for a in range(n)
    ]
    for a in range(n):
        ek = arithmetic.effective_kernel(w[2 + a], attrs.dilation[a])
        padded = xs[2 + a] + sum(padding[a])
        if n < 3 and out[a] <= 0:  # MindSpore's Conv2D: the padded input must hold the kernel
            raise ValueError(
                f"{op}: the kernel does not fit the padded {x_name} on the {AXES[n][a]} axis: size {xs[2 + a]} "
                f"padded by {padding[a]} is {padded}, smaller than the kernel's extent {ek} (kernel {w[2 + a]}, "
                f"dilation {attrs.dilation[a]}), so the output would be empty; the padded size must be >= {ek} (more "
                f"padding, pad_mode='same', or a larger input)"
            )
        if out[a] < 0:  # Conv3D: an empty output is allowed, no output at all is not
            raise ValueError(
                f"{op}: the kernel does not fit the padded {x_name} on the {AXES[n][a]} axis: size {xs[2 + a]} "
                f"padded by {padding[a]} is {padded}, kernel {w[2 + a]}, dilation {attrs.dilation[a]} (extent {ek}), "
                f"stride {attrs.stride[a]}; the padded size must be >= extent - stride = {ek - attrs.stride[a]}"
            )
    check_limit(op, "output shape", (xs[0], w[0], *out))
    geom = ConvGeometry(
        xs, w, (xs[0], w[0], *out), attrs.stride, attrs.dilation, padding, g, precision=lax.Precision.HIGHEST
    )
    return jnp.asarray(x), jnp.asarray(weight), geom


def transpose_sizes(attrs: NdAttrs, y: Sequence[int], w: Sequence[int]) -> tuple[tuple[int, ...], tuple]:
    """Per axis, MindSpore's transposed output length and the forward padding (lo, hi) it implies."""
    n = attrs.ndim
    op_pad = attrs.output_padding or (0,) * n
    sizes, pairs = [], []
    for a in range(n):
        o, k, s, d = y[2 + a], w[2 + a], attrs.stride[a], attrs.dilation[a]
        ek = arithmetic.effective_kernel(k, d)
        if attrs.pad_mode == "valid":  # quirk valid_output_at_least_L_times_stride
            size, (lo, hi) = max(o * s, (o - 1) * s + ek), (0, 0)
        elif attrs.pad_mode == "same":
            size = o * s
            lo, hi = arithmetic.same_padding(size, k, s, d)
        else:
            lo, hi = attrs.pad[a]
            limit = max(s, d)
            if op_pad[a] >= limit:
                raise ValueError(
                    f"{attrs.op_name}: 'output_padding' on the {AXES[n][a]} axis must be < max(stride, dilation) = "
                    f"{limit} (stride {s}, dilation {d}), got {op_pad[a]}"
                )
            size = arithmetic.transpose_input_length(o, k, s, d, lo, hi, op_pad[a])
            if size < 1:
                raise ValueError(
                    f"{attrs.op_name}: the output would be empty on the {AXES[n][a]} axis: input size {o}, kernel "
                    f"{k}, stride {s}, dilation {d}, padding {(lo, hi)} and output_padding {op_pad[a]} give "
                    f"(o - 1) * s + (k - 1) * d + 1 - lo - hi + output_padding = {size}; it must be >= 1 (less padding)"
                )
            hi = arithmetic.cropped_high(size, o, k, s, d, lo, hi)
        sizes.append(size)
        pairs.append((lo, hi))
    return tuple(sizes), tuple(pairs)


def bind_transpose(
    attrs: NdAttrs, dout: Any, weight: Any, *, y_name: str = "dout", w_name: str = "weight", unbatched: bool = False
) -> tuple[jax.Array, jax.Array, ConvGeometry]:
    """Validate the transposed convolution ``(dout, weight)``; weight is ``(C_in, C_out/group, *kernel)``.

    ``unbatched``: ``dout`` may lack the batch axis (``conv_transpose2d``); the
    returned array then has a batch of 1.
    """
    op, n, g = attrs.op_name, attrs.ndim, attrs.group
    ranks = (n + 1, n + 2) if unbatched else (n + 2,)
    dout, weight = check_operands(op, (y_name, w_name), dout, weight, ranks)
    if weight.ndim != n + 2:
        raise ValueError(f"{op}: '{w_name}' must have rank {n + 2}, got shape {tuple(weight.shape)}")
    y_arr = jnp.asarray(dout)
    if dout.ndim == n + 1:
        y_arr = y_arr[None]
    y, w = tuple(y_arr.shape), tuple(weight.shape)
    _shape_checks(attrs, y_name, w_name, y, w)
    if y[1] != w[0]:
        raise ValueError(
            f"{op}: {y_name} has {y[1]} channels but {w_name}.shape[0] is {w[0]}; they must be equal ({y_name} shape "
            f"{tuple(dout.shape)}, {w_name} shape (C_in, C_out/group, *kernel) {w}){channels_last_hint(y_name, y, w[0])}"
        )
    _check_kernel_size(attrs, w_name, w)
    if y[1] % g:
        raise ValueError(
            f"{op}: '{'groups' if op == 'conv_transpose2d' else 'group'}'={g} must divide the {y_name} "
            f"channels {y[1]} ({y_name} shape {tuple(dout.shape)}); "
            f"accepted values are the divisors of {y[1]}"
        )
    sizes, pairs = transpose_sizes(attrs, y, w)
    x = (y[0], g * w[1], *sizes)
    check_limit(op, "output shape", x)
    geom = ConvGeometry(x, w, y, attrs.stride, attrs.dilation, pairs, g, precision=lax.Precision.HIGHEST)
    used = "the arrays' shapes are used (as MindSpore's forward does)"
    seen = f"{w_name}.shape[0] = {w[0]} ({y_name} channels)"
    warn_shape_used(op, "in_channel", attrs.in_channel, w[0], seen, used, stacklevel=4)
    seen = f"the output channels {w_name}.shape[1] * group = {w[1]} * {g} = {x[1]}"
    warn_shape_used(op, "out_channel", attrs.out_channel, x[1], seen, used, stacklevel=4)
    return y_arr, jnp.asarray(weight), geom

"""Validation for MindSpore's ``nn`` convolution layers (``jax_conv_bpi.nn``).

``layer_config`` runs the constructor checks of ``nn.Conv1d`` ... ``nn.Conv3dTranspose``
(MindSpore 2.10's, in its order of checks) and returns a frozen, hashable
``LayerConfig``: the parameter shapes, the default-initialisation bound and
the ``NdAttrs`` that ``args_nd.bind_forward`` / ``bind_transpose``
turn into a ``ConvGeometry`` at call time, so the layers run on the same gate
and primitives as ``jax_conv_bpi.ops``.

Exception types are MindSpore's where MindSpore raises ``TypeError`` /
``ValueError``; where it leaks another type (``ZeroDivisionError`` for
``group=0`` in the 3-D layers, oneDNN's ``RuntimeError`` at call time) this
raises the ``ValueError`` / ``TypeError`` that names the argument. Deliberate
differences (docs/differences.md, ``nn`` layers):

* N1 ``pad_mode`` in any letter case for every layer (MindSpore: the 1-D and
  2-D layers only lower case; the 3-D layers any case).
* N2 ``Conv2dTranspose`` checks ``output_padding`` (range, pad mode) when it
  is constructed, not when it is first called.
* N3 MindSpore CPU limits not copied: ``Conv3dTranspose`` depth dilation 1,
  kernel volume <= 343, ``stride <= output_padding < dilation``.
* N4 NumPy arrays are accepted as inputs and as ``weight_init`` / ``bias_init``.
* N5 float64 layers compute (with ``jax_enable_x64``; without it the constructor
  says so instead of silently making float32 parameters); bfloat16 too.
* N6 ``ZeroDivisionError`` / ``RuntimeError`` become ``ValueError`` naming the argument.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.validate import AXES, check_entries, float_dtype_name, got, is_int, is_zero
from jax_conv_bpi._src.mindspore.args_nd import NdAttrs

__all__ = ["LayerConfig", "layer_config"]

ABSENT: Any = object()  # a constructor argument the layer does not have (data_format, output_padding)


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """The normalised constructor arguments of one layer (hashable: static under ``jax.jit``)."""

    op_name: str
    ndim: int  # spatial dims of the layer's input
    transpose: bool
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    has_bias: bool
    dtype: str
    attrs: NdAttrs  # on the computed rank (1-D layers: 1-D, their weight's unit axis dropped)
    appended_zeros: tuple[int, ...] | None = None  # Conv2dTranspose: output_padding rows/columns of zeros

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """MindSpore's weight layout; the 1-D layers keep its 4-D ``(.., .., 1, K)`` shape."""
        g = self.attrs.group
        lead = (
            (self.in_channels, self.out_channels // g) if self.transpose else (self.out_channels, self.in_channels // g)
        )
        kernel = (1, *self.kernel_size) if self.ndim == 1 else self.kernel_size
        return (*lead, *kernel)

    @property
    def fan_in(self) -> int:
        """``weight.shape[1] * prod(weight.shape[2:])``: for the transposed layers ``C_out / group * prod(kernel)``."""
        w = self.weight_shape
        return w[1] * math.prod(w[2:])


def _tuple_of(op: str, name: str, v: Any, n: int, *, minimum: int) -> tuple[int, ...]:
    """kernel_size / stride / dilation in MindSpore's per-rank forms and exception types."""
    what = "a positive int" if minimum == 1 else "an int >= 0"
    if n == 1:  # the 1-D layers: an int only
        if not is_int(v):
            raise TypeError(f"{op}: '{name}' must be a Python int (not a tuple or list), got {got(v, name)}")
        items: tuple[Any, ...] = (v,)
    else:
        if not (is_int(v) or isinstance(v, tuple)):
            raise TypeError(f"{op}: '{name}' must be an int or a tuple of {n} ints (not a list), got {got(v, name)}")
        items = v if isinstance(v, tuple) else (v,) * n
        if len(items) != n:  # Conv2d*: a TypeError in MindSpore, Conv3d*: a ValueError
            exc = TypeError if n == 2 else ValueError
            raise exc(f"{op}: '{name}' must be an int or a tuple of exactly {n} ints, got {v!r} of length {len(items)}")
        for k in items:
            if not is_int(k):
                raise TypeError(f"{op}: every entry of '{name}' must be a Python int, got {got(k, name)} in {v!r}")
    for k in items:
        if k < minimum:
            raise ValueError(f"{op}: '{name}' must be {what} (every entry), got {v!r}")
    return tuple(items)


def _padding_arg(op: str, padding: Any, n: int) -> tuple[int, ...]:
    """The flat (lo, hi) amounts: 1-D an int; 2-D an int or (top, bottom, left, right); 3-D an int or 6 ints."""
    names = {2: "(top, bottom, left, right)", 3: "(head, tail, top, bottom, left, right)"}
    if n == 1:
        if not is_int(padding):
            raise TypeError(f"{op}: 'padding' must be a Python int >= 0 (both ends), got {got(padding, 'padding')}")
        flat: tuple[Any, ...] = (padding, padding)
    else:
        if not (is_int(padding) or isinstance(padding, tuple)):
            raise TypeError(
                f"{op}: 'padding' must be an int or a tuple of {2 * n} ints {names[n]} (not a list), got {got(padding, 'padding')}"
            )
        flat = padding if isinstance(padding, tuple) else (padding,) * (2 * n)
        if len(flat) != 2 * n:
            raise ValueError(
                f"{op}: 'padding' must be an int or a tuple of exactly {2 * n} ints {names[n]}, got {padding!r} of "
                f"length {len(flat)}"
            )
        for p in flat:
            if not is_int(p):
                raise TypeError(
                    f"{op}: every entry of 'padding' must be a Python int, got {got(p, 'padding')} in {padding!r}"
                )
    if any(p < 0 for p in flat):
        raise ValueError(f"{op}: 'padding' must be >= 0 (every entry), got {padding!r}")
    return tuple(flat)


def _pad_mode_arg(op: str, pad_mode: Any, type_error: bool) -> str:
    if not isinstance(pad_mode, str):
        exc = TypeError if type_error else ValueError  # MindSpore's type for this layer
        raise exc(
            f"{op}: 'pad_mode' must be a str: 'same', 'valid' or 'pad' (any letter case), got {got(pad_mode, 'pad_mode')}"
        )
    mode = pad_mode.lower()
    if mode not in arithmetic.PAD_MODES:
        raise ValueError(f"{op}: 'pad_mode' must be 'same', 'valid' or 'pad' (any letter case), got {pad_mode!r}")
    return mode


def _output_padding_arg(op: str, v: Any, n: int) -> tuple[int, ...]:
    if not (is_int(v) or isinstance(v, tuple)):
        raise TypeError(
            f"{op}: 'output_padding' must be an int or a tuple of {n} ints (not a list), got {got(v, 'output_padding')}"
        )
    items = v if isinstance(v, tuple) else (v,) * n
    if len(items) != n:
        raise ValueError(f"{op}: 'output_padding' must be an int or a tuple of exactly {n} ints, got {v!r}")
    return check_entries(
        items,
        lambda k: TypeError(
            f"{op}: every entry of 'output_padding' must be a Python int, got {got(k, 'output_padding')} in {v!r}"
        ),
        lambda k: ValueError(f"{op}: 'output_padding' must be >= 0 (every entry), got {v!r}"),
    )


def _channels(op: str, name: str, v: Any) -> int:
    if not is_int(v):
        raise TypeError(f"{op}: '{name}' must be a Python int >= 1, got {got(v, name)}")
    if v < 1:
        raise ValueError(f"{op}: '{name}' must be an int >= 1, got {v!r}")
    return v


def _group_arg(op: str, group: Any, c_in: int, c_out: int) -> int:
    if not is_int(group):
        raise TypeError(
            f"{op}: 'group' must be a Python int >= 1 dividing both channel counts, got {got(group, 'group')}"
        )
    if group < 1:
        raise ValueError(f"{op}: 'group' must be an int >= 1 dividing in_channels and out_channels, got {group!r}")
    if c_in % group or c_out % group:
        divisors = [d for d in range(1, math.gcd(c_in, c_out) + 1) if c_in % d == 0 and c_out % d == 0]
        raise ValueError(
            f"{op}: 'group'={group} must divide in_channels={c_in} and out_channels={c_out}; accepted values are "
            f"{divisors}"
        )
    return group


def _dtype_arg(op: str, dtype: Any) -> str:
    name = float_dtype_name(op, "dtype", dtype)
    if name == "float64" and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{op}: dtype float64 needs 64-bit JAX (jax.config.update('jax_enable_x64', True) or the "
            "jax.enable_x64() context); without it the parameters would silently be float32"
        )
    return name


def layer_config(
    op: str,
    n: int,
    *,
    transpose: bool,
    in_channels: Any,
    out_channels: Any,
    kernel_size: Any,
    stride: Any,
    pad_mode: Any,
    padding: Any,
    dilation: Any,
    group: Any,
    has_bias: Any,
    dtype: Any,
    data_format: Any = ABSENT,
    output_padding: Any = ABSENT,
    output_padding_appends_zeros: bool = False,
) -> LayerConfig:
    """The constructor checks of one ``nn`` layer of ``n`` spatial dims (``ABSENT``: an argument it does not have)."""
    c_in = _channels(op, "in_channels", in_channels)
    c_out = _channels(op, "out_channels", out_channels)
    if data_format is not ABSENT:
        want = "NCHW" if n == 2 else "NCDHW"
        if data_format != want:
            gpu = (
                " (MindSpore's NHWC layout is GPU-only; this layer is channels-first)" if data_format == "NHWC" else ""
            )
            raise ValueError(f"{op}: 'data_format' must be {want!r}, got {got(data_format, 'data_format')}{gpu}")
    ks = _tuple_of(op, "kernel_size", kernel_size, n, minimum=1)
    s = _tuple_of(op, "stride", stride, n, minimum=1)
    d = _tuple_of(op, "dilation", dilation, n, minimum=1)
    flat = _padding_arg(op, padding, n)
    op_pad = None if output_padding is ABSENT else _output_padding_arg(op, output_padding, n)
    # Conv2d and the 3-D layers: TypeError for a non-str pad_mode; the others a ValueError (MindSpore's types).
    mode = _pad_mode_arg(op, pad_mode, type_error=(n == 2 and not transpose) or n == 3)
    if mode != "pad" and not all(is_zero(p) for p in flat):
        raise ValueError(
            f"{op}: 'padding' must be 0 unless pad_mode is 'pad', got padding={padding!r} with {pad_mode!r}"
        )
    if op_pad is not None and any(op_pad):
        if mode != "pad":
            raise ValueError(
                f"{op}: a non-zero 'output_padding' needs pad_mode='pad', got output_padding={output_padding!r} with "
                f"pad_mode={pad_mode!r}"
            )
        for a, axis in enumerate(AXES[n]):
            limit = max(s[a], d[a])
            if op_pad[a] >= limit:
                raise ValueError(
                    f"{op}: 'output_padding' on the {axis} axis must be in [0, max(stride, dilation)) = [0, {limit}) "
                    f"(stride {s[a]}, dilation {d[a]}), got {output_padding!r}"
                )
    g = _group_arg(op, group, c_in, c_out)
    if type(has_bias) is not bool:
        raise TypeError(f"{op}: 'has_bias' must be True or False (a Python bool), got {got(has_bias, 'has_bias')}")
    dt = _dtype_arg(op, dtype)
    pairs = tuple((flat[2 * a], flat[2 * a + 1]) for a in range(n))
    appended = None
    if output_padding_appends_zeros:  # Conv2dTranspose: zeros after the bias, the op sees none
        appended, op_pad = op_pad, None
    attrs = NdAttrs(op, s, d, mode, pairs, g, output_padding=op_pad)
    return LayerConfig(op, n, transpose, c_in, c_out, ks, has_bias, dt, attrs, appended)

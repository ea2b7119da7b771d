"""MindSpore's 2-D convolution functions: thin shells over the gate and the primitives.

Each validates through ``args_2d`` (MindSpore's checks and defaults) and binds
one of the three N-D primitives with a 2-D ``ConvGeometry``; the classes in
``classes_2d`` call the same ``apply_*`` functions.
"""

from __future__ import annotations

from typing import Any

import jax

from jax_conv_bpi._src.mindspore import args_2d
from jax_conv_bpi._src.op.primitives import backprop_filter_p, backprop_input_p, conv_p

__all__ = ["conv2d", "conv2d_backprop_filter", "conv2d_backprop_input"]


def conv2d_backprop_input(
    dout: jax.Array,
    weight: jax.Array,
    input_size: Any,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore ``ops.Conv2DBackpropInput``: the input gradient of ``conv2d``.

    Also called transposed convolution. Returns ``dx`` of shape ``input_size``
    such that ``dx = vjp of conv2d(x, weight) w.r.t. x, applied to dout``.

    Args:
      dout: ``(N, C_out, Ho, Wo)`` (NCHW) or ``(N, Ho, Wo, C_out)`` (NHWC).
      weight: ``(C_out, C_in/group, KH, KW)`` (NCHW) or ``(C_out, KH, KW, C_in/group)`` (NHWC).
      input_size: the shape of the result, in the data format's order: a
        tuple/list of 4 ints or a concrete 1-D integer array. It must be
        static under ``jax.jit``.
      stride, dilation: int, ``(h, w)`` or ``(1, 1, h, w)``.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"`` (any letter case).
      pad: int or ``(top, bottom, left, right)``, used in ``pad`` mode.
      pad_list: in ``pad`` mode, a 4-tuple of ints >= 0 that replaces ``pad``.
      group: number of channel groups.
      data_format: ``"NCHW"`` or ``"NHWC"``.

    Returns:
      An array of shape ``input_size`` and ``dout``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> dout = jnp.ones((10, 32, 30, 30))
      >>> weight = jnp.ones((32, 32, 3, 3))
      >>> dx = jcb.conv2d_backprop_input(dout, weight, (10, 32, 32, 32))
      >>> dx.shape, float(dx[0, 0, 0, 0]), float(dx[0, 0, 2, 2])
      ((10, 32, 32, 32), 32.0, 288.0)
    """
    attrs = args_2d.normalize_attrs(
        "conv2d_backprop_input",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_backprop_input(attrs, dout, weight, input_size)


def conv2d(
    x: jax.Array,
    weight: jax.Array,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore's primitive ``ops.Conv2D`` as a function: a 2-D cross-correlation with MindSpore's padding.

    ``conv2d_backprop_input`` is exactly its VJP w.r.t. ``x``. It mirrors the
    operator class's attributes (``pad_list``, ``data_format``, ``group``; no
    bias). For MindSpore's *functional* ``ops.conv2d`` (``bias``, ``groups``,
    ``padding``) use ``jax_conv_bpi.ops.conv2d``: the same name in MindSpore's
    other API, hence in ``ops`` here.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> y = jcb.conv2d(jnp.ones((1, 2, 7, 8)), jnp.ones((4, 2, 3, 3)), stride=2, pad_mode="same")
      >>> y.shape, float(y[0, 0, 1, 1])
      ((1, 4, 4, 4), 18.0)
    """
    attrs = args_2d.normalize_attrs(
        "conv2d",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_conv2d(attrs, x, weight)


def conv2d_backprop_filter(
    dout: jax.Array,
    x: jax.Array,
    weight_shape: Any,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore ``ops.Conv2DBackpropFilter``: the weight gradient of ``conv2d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> dw = jcb.conv2d_backprop_filter(jnp.ones((1, 4, 3, 3)), jnp.ones((1, 2, 5, 5)), (4, 2, 3, 3))
      >>> dw.shape, float(dw[0, 0, 0, 0])
      ((4, 2, 3, 3), 9.0)
    """
    attrs = args_2d.normalize_attrs(
        "conv2d_backprop_filter",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_backprop_filter(attrs, dout, x, weight_shape)


def apply_backprop_input(attrs: args_2d.ConvAttrs, dout, weight, input_size) -> jax.Array:
    """Validated call of the input-gradient primitive (shared by class and function)."""
    dout, weight, geom = args_2d.bind_backprop_input(attrs, dout, weight, input_size)
    return args_2d.from_nchw(backprop_input_p.bind(dout, weight, geom=geom), attrs.data_format)


def apply_conv2d(attrs: args_2d.ConvAttrs, x, weight) -> jax.Array:
    x, weight, geom = args_2d.bind_conv2d(attrs, x, weight)
    return args_2d.from_nchw(conv_p.bind(x, weight, geom=geom), attrs.data_format)


def apply_backprop_filter(attrs: args_2d.ConvAttrs, dout, x, weight_shape) -> jax.Array:
    dout, x, geom = args_2d.bind_backprop_filter(attrs, dout, x, weight_shape)
    return args_2d.from_nchw(backprop_filter_p.bind(dout, x, geom=geom), attrs.data_format)

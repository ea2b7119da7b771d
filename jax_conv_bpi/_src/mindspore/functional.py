"""MindSpore's functional convolutions: ``conv1d``, ``conv2d``, ``conv3d``, ``conv_transpose2d``, ``conv3d_transpose``.

Each is a thin shell: argument checks (``args_nd``), one of the N-D
primitives on the call's geometry (1-D runs as 1-D), then the bias, added
after the convolution's single rounding as MindSpore's ``BiasAdd`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jax_conv_bpi._src.base.validate import is_array, is_int
from jax_conv_bpi._src.mindspore import args_nd
from jax_conv_bpi._src.op.primitives import backprop_input_p, conv_p

__all__ = ["conv1d", "conv2d", "conv3d", "conv3d_transpose", "conv_transpose2d"]

_IntOrSeq = int | Sequence[int]


def _forward(op: str, n: int, input, weight, bias, stride, pad_mode, padding, dilation, groups) -> jax.Array:
    args_nd.check_operands(op, ("input", "weight"), input, weight, (n + 2,))
    attrs = args_nd.functional_attrs(
        op, n, stride=stride, dilation=dilation, padding=padding, pad_mode=pad_mode, groups=groups
    )
    x, w, geom = args_nd.bind_forward(attrs, input, weight, x_name="input", w_name="weight")
    bias = args_nd.check_bias(op, bias, x, geom.w_shape[0])
    return args_nd.add_bias(conv_p.bind(x, w, geom=geom), bias)


def conv1d(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: _IntOrSeq = 1,
    pad_mode: str = "valid",
    padding: _IntOrSeq = 0,
    dilation: _IntOrSeq = 1,
    groups: int = 1,
) -> jax.Array:
    """MindSpore ``ops.conv1d``: 1-D cross-correlation plus an optional bias.

    Args:
      input: ``(N, C_in, L)``.
      weight: ``(C_out, C_in/groups, K)``.
      bias: ``None`` or ``(C_out,)``, added after the convolution.
      stride, dilation: an int or a tuple/list of one int.
      pad_mode: ``"valid"``, ``"same"`` (the odd pixel at the end) or ``"pad"``.
      padding: in ``pad`` mode, an int or a tuple/list of one int: both ends.
      groups: must divide ``C_in`` and ``C_out``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> y = ops.conv1d(jnp.ones((1, 2, 7)), jnp.ones((3, 2, 3)), jnp.arange(3.0), pad_mode="pad", padding=1)
      >>> y.shape, y[0, :, 0].tolist()
      ((1, 3, 7), [4.0, 5.0, 6.0])
    """
    return _forward("conv1d", 1, input, weight, bias, stride, pad_mode, padding, dilation, groups)


def conv2d(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: int | tuple[int, int] = 1,
    pad_mode: str = "valid",
    padding: int | Sequence[int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> jax.Array:
    """MindSpore's functional ``ops.conv2d``: 2-D cross-correlation plus an optional bias.

    For the primitive ``ops.Conv2D``'s attributes (``pad_list``,
    ``data_format``) as a function, use ``jax_conv_bpi.conv2d``.

    Args:
      input: ``(N, C_in, H, W)``.
      weight: ``(C_out, C_in/groups, KH, KW)``.
      bias: ``None`` or ``(C_out,)``.
      stride, dilation: an int or a tuple ``(h, w)``.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"``.
      padding: in ``pad`` mode an int, or a tuple/list ``(ph, pw)``: symmetric per axis.
      groups: must divide ``C_in`` and ``C_out``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> ops.conv2d(jnp.ones((1, 2, 6, 7)), jnp.ones((4, 2, 3, 3)), pad_mode="pad", padding=(2, 0)).shape
      (1, 4, 8, 5)
    """
    return _forward("conv2d", 2, input, weight, bias, stride, pad_mode, padding, dilation, groups)


def conv3d(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: int | tuple[int, int, int] = 1,
    pad_mode: str = "valid",
    padding: int | Sequence[int] = 0,
    dilation: int | tuple[int, int, int] = 1,
    groups: int = 1,
) -> jax.Array:
    """MindSpore ``ops.conv3d``: 3-D cross-correlation (``ops.Conv3D``) plus an optional bias.

    Args:
      input: ``(N, C_in, D, H, W)``.
      weight: ``(C_out, C_in/groups, KD, KH, KW)``.
      bias: ``None`` or ``(C_out,)``.
      stride, dilation: an int or a tuple of 3.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"`` (any letter case, as MindSpore).
      padding: in ``pad`` mode an int, or a tuple/list ``(pd, ph, pw)``: symmetric per axis.
      groups: must divide ``C_in`` and ``C_out``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> ops.conv3d(jnp.ones((1, 2, 4, 4, 5)), jnp.ones((3, 2, 3, 3, 3)), pad_mode="SAME", stride=2).shape
      (1, 3, 2, 2, 3)
    """
    return _forward("conv3d", 3, input, weight, bias, stride, pad_mode, padding, dilation, groups)


def conv_transpose2d(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> jax.Array:
    """MindSpore ``ops.conv_transpose2d`` (PyTorch's ``conv_transpose2d`` semantics, as documented).

    MindSpore 2.10 has no CPU kernel for it; this computes the documented
    operator: ``oH = (H - 1) * sH - 2 * pH + dH * (kH - 1) + opH + 1`` (same for
    W), the ``output_padding`` positions holding computed values.

    Args:
      input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
      weight: ``(C_in, C_out/groups, kH, kW)``.
      bias: ``None`` or ``(C_out,)``.
      stride, padding, output_padding, dilation: an int or a tuple/list of 2;
        ``0 <= output_padding < max(stride, dilation)`` per axis.
      groups: must divide ``C_in`` (and gives ``C_out = groups * weight.shape[1]``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> ops.conv_transpose2d(jnp.ones((1, 2, 4, 5)), jnp.ones((2, 3, 3, 3)), stride=2, padding=1,
      ...                      output_padding=1).shape
      (1, 3, 8, 10)
      >>> ops.conv_transpose2d(jnp.ones((2, 4, 3)), jnp.ones((2, 3, 3, 2)), stride=2, padding=1).shape
      (3, 7, 4)
    """
    op = "conv_transpose2d"
    attrs = args_nd.functional_attrs(
        op, 2, stride=stride, dilation=dilation, padding=padding, groups=groups, output_padding=output_padding
    )
    unbatched = is_array(input) and input.ndim == 3
    y, w, geom = args_nd.bind_transpose(attrs, input, weight, y_name="input", w_name="weight", unbatched=True)
    bias = args_nd.check_bias(op, bias, y, geom.x_shape[1])
    out = args_nd.add_bias(backprop_input_p.bind(y, w, geom=geom), bias)
    return out[0] if unbatched else out


def conv3d_transpose(
    inputs: jax.Array,
    weight: jax.Array,
    pad_mode: str = "valid",
    padding: int | tuple[int, int, int, int, int, int] = 0,
    stride: int | tuple[int, int, int] = 1,
    dilation: int | tuple[int, int, int] = 1,
    group: int = 1,
    output_padding: int | tuple[int, int, int] = 0,
) -> jax.Array:
    """MindSpore ``ops.conv3d_transpose``: ``ops.Conv3DTranspose`` built from the arrays' shapes.

    Args:
      inputs: ``(N, C_in, D, H, W)``.
      weight: ``(C_in, C_out/group, KD, KH, KW)``.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"`` (any letter case).
      padding: an int or ``(head, tail, top, bottom, left, right)``, in ``pad`` mode.
      stride, dilation, output_padding: an int or a tuple of 3 (``output_padding``
        only in ``pad`` mode, ``< max(stride, dilation)``).
      group: must divide ``C_in``; the result has ``weight.shape[1] * group`` channels.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> ops.conv3d_transpose(jnp.ones((1, 2, 2, 3, 2)), jnp.ones((2, 3, 3, 3, 3)), pad_mode="pad", padding=1,
      ...                      stride=2, output_padding=1).shape
      (1, 3, 4, 6, 4)
    """
    op = "conv3d_transpose"
    y, w = args_nd.check_operands(op, ("inputs", "weight"), inputs, weight, (5,))
    # MindSpore passes out_channel=weight.shape[1]; the output really has weight.shape[1] * group channels,
    # which is what bounds the group here (no group quirk).
    out_c = w.shape[1] * group if is_int(group) and group >= 1 else w.shape[1]
    attrs = args_nd.conv3d_attrs(
        op,
        transpose=True,
        in_channel=y.shape[1],
        out_channel=out_c,
        kernel_size=tuple(w.shape[2:]),
        pad_mode=pad_mode,
        pad=padding,
        stride=stride,
        dilation=dilation,
        group=group,
        output_padding=output_padding,
        pad_name="padding",
    )
    y, w, geom = args_nd.bind_transpose(attrs, y, w, y_name="inputs", w_name="weight")
    return backprop_input_p.bind(y, w, geom=geom)

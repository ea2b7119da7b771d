"""MindSpore's ``ops.Conv3D`` and ``ops.Conv3DTranspose``: thin shells over the N-D primitives.

The constructors validate once (``args_nd.conv3d_attrs``, MindSpore's
order of checks and exception types); a call checks the arrays, builds the
geometry and binds ``conv_p`` / ``backprop_input_p``. Instances are immutable
and hashable (usable as static arguments of ``jax.jit``).
"""

from __future__ import annotations

import jax

from jax_conv_bpi._src.mindspore import args_nd
from jax_conv_bpi._src.mindspore.classes_2d import ConvOp
from jax_conv_bpi._src.op.primitives import backprop_input_p, conv_p

__all__ = ["Conv3D", "Conv3DTranspose"]

_Triple = int | tuple[int, int, int]


class _Conv3DOp(ConvOp):
    """Immutability, equality and hashing from the 2-D classes; attributes are an ``NdAttrs``."""

    __slots__ = ()

    def __repr__(self) -> str:
        a = self._attrs
        head = f"in_channel={a.in_channel}, " if a.in_channel is not None else ""
        tail = f", output_padding={a.output_padding}" if a.output_padding is not None else ""
        pad = tuple(v for pair in a.pad for v in pair)
        return (
            f"{type(self).__name__}({head}out_channel={a.out_channel}, kernel_size={a.kernel_size}, "
            f"pad_mode={a.pad_mode!r}, pad={pad}, stride={a.stride}, dilation={a.dilation}, group={a.group}{tail})"
        )


class Conv3D(_Conv3DOp):
    """MindSpore ``ops.Conv3D``: 3-D cross-correlation, ``op(x, weight)``, no bias.

    ``x`` is ``(N, C_in, D, H, W)``, ``weight`` ``(out_channel, C_in/group, *kernel_size)``.
    ``pad_mode`` is ``"valid"``, ``"same"`` (odd pixel at the end) or ``"pad"``
    with ``pad`` an int or ``(head, tail, top, bottom, left, right)``; any letter case.
    float16 is computed in float32 and rounded once.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> conv = ops.Conv3D(out_channel=4, kernel_size=3, pad_mode="pad", pad=1, stride=2)
      >>> y = conv(jnp.ones((1, 2, 5, 6, 7)), jnp.ones((4, 2, 3, 3, 3)))
      >>> y.shape, float(y[0, 0, 1, 1, 1])
      ((1, 4, 3, 3, 4), 54.0)
    """

    __slots__ = ()

    def __init__(
        self,
        out_channel: int,
        kernel_size: _Triple,
        mode: int = 1,
        pad_mode: str = "valid",
        pad: int | tuple[int, int, int, int, int, int] = 0,
        stride: _Triple = 1,
        dilation: _Triple = 1,
        group: int = 1,
        data_format: str = "NCDHW",
    ) -> None:
        attrs = args_nd.conv3d_attrs(
            "Conv3D",
            transpose=False,
            out_channel=out_channel,
            kernel_size=kernel_size,
            mode=mode,
            pad_mode=pad_mode,
            pad=pad,
            stride=stride,
            dilation=dilation,
            group=group,
            data_format=data_format,
        )
        object.__setattr__(self, "_attrs", attrs)

    def __call__(self, x: jax.Array, weight: jax.Array) -> jax.Array:
        x, weight, geom = args_nd.bind_forward(self._attrs, x, weight)
        return conv_p.bind(x, weight, geom=geom)


class Conv3DTranspose(_Conv3DOp):
    """MindSpore ``ops.Conv3DTranspose``: the adjoint of ``Conv3D``, ``op(dout, weight)``, no bias.

    ``dout`` is ``(N, C_in, D, H, W)``, ``weight`` ``(C_in, C_out/group, *kernel_size)``
    (PyTorch's ``conv_transpose3d`` layout); the result has ``weight.shape[1] * group``
    channels. Output length per axis: ``pad`` mode ``(L - 1) * s + (k - 1) * d + 1 -
    lo - hi + output_padding`` (the ``output_padding`` positions hold computed
    values), ``same`` ``L * s``, ``valid`` ``max(L * s, (L - 1) * s + (k - 1) * d + 1)``
    (MindSpore's quirk: when the kernel extent is below the stride the trailing
    positions are zeros). ``in_channel`` / ``out_channel`` are validated; the
    arrays' shapes win, with a ``UserWarning`` when they disagree.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_conv_bpi import ops
      >>> up = ops.Conv3DTranspose(in_channel=4, out_channel=2, kernel_size=3, pad_mode="pad", pad=1, stride=2,
      ...                          output_padding=1)
      >>> up(jnp.ones((1, 4, 3, 3, 3)), jnp.ones((4, 2, 3, 3, 3))).shape
      (1, 2, 6, 6, 6)
    """

    __slots__ = ()

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: _Triple,
        mode: int = 1,
        pad_mode: str = "valid",
        pad: int | tuple[int, int, int, int, int, int] = 0,
        stride: _Triple = 1,
        dilation: _Triple = 1,
        group: int = 1,
        output_padding: _Triple = 0,
        data_format: str = "NCDHW",
    ) -> None:
        attrs = args_nd.conv3d_attrs(
            "Conv3DTranspose",
            transpose=True,
            in_channel=in_channel,
            out_channel=out_channel,
            kernel_size=kernel_size,
            mode=mode,
            pad_mode=pad_mode,
            pad=pad,
            stride=stride,
            dilation=dilation,
            group=group,
            output_padding=output_padding,
            data_format=data_format,
        )
        object.__setattr__(self, "_attrs", attrs)

    def __call__(self, dout: jax.Array, weight: jax.Array) -> jax.Array:
        dout, weight, geom = args_nd.bind_transpose(self._attrs, dout, weight)
        return backprop_input_p.bind(dout, weight, geom=geom)

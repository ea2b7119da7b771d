"""MindSpore-style operator classes: thin shells over the functions.

Each constructor validates its attributes once (``args_2d.normalize_attrs``,
MindSpore's order of checks and exception types); each call validates the
inputs and binds the primitive through the same path as the functions.
Instances are immutable and hashable, so they can be closed over or passed as
static arguments to ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import jax

from jax_conv_bpi._src.mindspore import args_2d, functions_2d

__all__ = ["Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "Conv2DTranspose"]


class ConvOp:
    """The immutable, hashable base of the MindSpore operator classes (equality and hash on the attributes)."""

    __slots__ = ("_attrs", "__weakref__")  # weakref: jax.jit(op) caches on it

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} instances are immutable")

    def _init(self, **kwargs: Any) -> None:
        object.__setattr__(self, "_attrs", args_2d.normalize_attrs(type(self).__name__, **kwargs))

    @property
    def attrs(self) -> Any:
        """The normalised attributes (per-axis stride and dilation, resolved padding), validated once."""
        return self._attrs

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._attrs == other._attrs  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._attrs))

    def __repr__(self) -> str:
        a = self._attrs
        return (
            f"{type(self).__name__}(out_channel={a.out_channel}, kernel_size={a.kernel_size}, "
            f"pad_mode={a.pad_mode!r}, pad={a.pad}, stride={a.stride}, dilation={a.dilation}, "
            f"group={a.group}, data_format={a.data_format!r})"
        )


class _GradientOp(ConvOp):
    """The constructor the two gradient operators share (MindSpore gives both the same attributes, ``pad_list`` too)."""

    __slots__ = ()

    def __init__(
        self,
        out_channel: int,
        kernel_size: int | tuple[int, int],
        pad_mode: str = "valid",
        pad: int | tuple[int, int, int, int] = 0,
        pad_list: tuple[int, int, int, int] | None = None,
        mode: int = 1,
        stride: int | tuple[int, ...] = 1,
        dilation: int | tuple[int, ...] = 1,
        group: int = 1,
        data_format: str = "NCHW",
    ) -> None:
        self._init(
            out_channel=out_channel,
            kernel_size=kernel_size,
            pad_mode=pad_mode,
            pad=pad,
            pad_list=pad_list,
            mode=mode,
            stride=stride,
            dilation=dilation,
            group=group,
            data_format=data_format,
        )


class Conv2DBackpropInput(_GradientOp):
    """MindSpore ``ops.Conv2DBackpropInput`` with the same constructor and call.

    ``op(dout, weight, input_size)`` equals
    ``conv2d_backprop_input(dout, weight, input_size, **attributes)``.
    ``out_channel`` and ``kernel_size`` are validated; as in MindSpore the
    computation uses the weight's shape, and a disagreement emits one
    ``UserWarning``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
      >>> dx = op(jnp.ones((10, 32, 30, 30)), jnp.ones((32, 32, 3, 3)), (10, 32, 32, 32))
      >>> dx.shape
      (10, 32, 32, 32)
    """

    __slots__ = ()

    def __call__(self, dout: jax.Array, weight: jax.Array, input_size: Any) -> jax.Array:
        return functions_2d.apply_backprop_input(self._attrs, dout, weight, input_size)


class Conv2DTranspose(Conv2DBackpropInput):
    """MindSpore ``ops.Conv2DTranspose``: ``Conv2DBackpropInput`` under its other name.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> jcb.Conv2DTranspose(4, 3)(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5)).shape
      (1, 2, 5, 5)
    """

    __slots__ = ()


class Conv2D(ConvOp):
    """MindSpore ``ops.Conv2D``: ``op(x, weight)``, same padding semantics.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> jcb.Conv2D(4, 3, pad_mode="pad", pad=1)(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3))).shape
      (1, 4, 5, 5)
    """

    __slots__ = ()

    def __init__(
        self,
        out_channel: int,
        kernel_size: int | tuple[int, int],
        mode: int = 1,
        pad_mode: str = "valid",
        pad: int | tuple[int, int, int, int] = 0,
        stride: int | tuple[int, ...] = 1,
        dilation: int | tuple[int, ...] = 1,
        group: int = 1,
        data_format: str = "NCHW",
    ) -> None:
        self._init(
            out_channel=out_channel,
            kernel_size=kernel_size,
            pad_mode=pad_mode,
            pad=pad,
            mode=mode,
            stride=stride,
            dilation=dilation,
            group=group,
            data_format=data_format,
        )

    def __call__(self, x: jax.Array, weight: jax.Array) -> jax.Array:
        return functions_2d.apply_conv2d(self._attrs, x, weight)


class Conv2DBackpropFilter(_GradientOp):
    """MindSpore ``ops.Conv2DBackpropFilter``: ``op(dout, x, weight_shape)``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> op = jcb.Conv2DBackpropFilter(4, 3)
      >>> op(jnp.ones((1, 4, 3, 3)), jnp.ones((1, 2, 5, 5)), (4, 2, 3, 3)).shape
      (4, 2, 3, 3)
    """

    __slots__ = ()

    def __call__(self, dout: jax.Array, x: jax.Array, weight_shape: Any) -> jax.Array:
        return functions_2d.apply_backprop_filter(self._attrs, dout, x, weight_shape)

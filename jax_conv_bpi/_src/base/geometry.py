"""The static description of one convolution, for 1, 2 or 3 spatial dimensions.

``ConvGeometry`` is the one parameter of the three primitives. It is frozen and
hashable (it keys JAX's compilation caches) and holds, in channels-first order,

    x  the forward convolution's input      (N, C_in, *spatial)
    w  its kernel                           (C_out, C_in / group, *kernel)
    y  its output (the transposed input)    (N, C_out, *out)

with, per spatial axis, a stride, a dilation and a ``(lo, hi)`` padding pair of
the forward convolution. The invariant checked on construction is the forward
convolution's output-size rule on every axis,

    out = (size + lo + hi - ((kernel - 1) * dilation + 1)) // stride + 1,

so every formulation may rely on it. ``hi`` may be negative (a crop of rows no
window reads): ``conv_transpose`` uses that for an ``output_padding`` of at
least the stride, where PyTorch's rule allows sizes beyond the forward's
natural input.

Besides shapes, the geometry carries the numerics of the call (``precision``,
``out_dtype``) and an optional forced CPU formulation (``cpu_path``), because
those are static too and must survive differentiation and batching.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jax_conv_bpi._src.base import arithmetic

__all__ = ["OPERAND_NAMES", "ConvGeometry"]

OPERAND_NAMES = {"x": "input", "w": "weight", "y": "output (dout)"}
"""What each of the geometry's arrays is, as error messages name it."""


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Every static quantity of one convolution, channels-first (NC..., OI...): the primitives' parameter.

    Public as ``jax_conv_bpi.ConvGeometry`` for binding ``conv_p``,
    ``backprop_input_p`` and ``backprop_filter_p`` directly and for
    ``cpu_paths``; the entry points (``conv_transpose``, the MindSpore shells)
    build it from their arguments. Construction checks the forward
    output-size rule on every axis and names the axis that breaks it.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> g = jcb.ConvGeometry(x_shape=(1, 2, 8), w_shape=(4, 2, 3), y_shape=(1, 4, 4),
      ...                      stride=(2,), dilation=(1,), padding=((1, 0),))
      >>> jcb.conv_p.bind(jnp.ones((1, 2, 8)), jnp.ones((4, 2, 3)), geom=g).shape
      (1, 4, 4)
      >>> jcb.backprop_input_p.bind(jnp.ones((1, 4, 4)), jnp.ones((4, 2, 3)), geom=g).shape
      (1, 2, 8)
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    group: int = 1
    # lax precision of every convolution / matmul (None: the backend default,
    # ``jax.default_matmul_precision`` respected); the MindSpore shells use HIGHEST.
    precision: Any = None
    # dtype name of the result (None: the operands' dtype).
    out_dtype: str | None = None
    # forced CPU formulation of the input gradient (None: the dispatcher's choice).
    cpu_path: str | None = None

    def __post_init__(self):
        n = self.ndim
        if not 1 <= n <= 3:
            raise ValueError(f"ConvGeometry: 1 to 3 spatial dimensions, got {n} (x shape {self.x_shape})")
        lengths = (len(self.w_shape), len(self.y_shape), len(self.stride) + 2, len(self.dilation) + 2)
        if any(v != n + 2 for v in lengths) or len(self.padding) != n:
            raise ValueError(f"ConvGeometry: inconsistent ranks in {self}")
        for a in range(n):
            size, out, k, s, d, (lo, hi) = self.axis(a)
            want = max(arithmetic.output_length(size, k, s, d, lo, hi), 0)
            if out != want:
                raise ValueError(
                    f"ConvGeometry: spatial axis {a}: output size {out}, but size {size}, kernel {k}, stride {s}, "
                    f"dilation {d}, padding {(lo, hi)} give {want}"
                )

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.x_shape) - 2

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.w_shape[2:])

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(arithmetic.effective_kernel(k, d) for k, d in zip(self.kernel, self.dilation))

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the spatial dimensions in a channels-first array."""
        return tuple(range(2, 2 + self.ndim))

    def axis(self, a: int) -> tuple[int, int, int, int, int, tuple[int, int]]:
        """Spatial axis ``a``: (input size, output size, kernel, stride, dilation, (lo, hi))."""
        return (
            self.x_shape[2 + a],
            self.y_shape[2 + a],
            self.w_shape[2 + a],
            self.stride[a],
            self.dilation[a],
            self.padding[a],
        )

    def replace(self, **changes) -> ConvGeometry:
        return dataclasses.replace(self, **changes)

    def with_unit_axis(self) -> ConvGeometry:
        """The same convolution with a leading spatial axis of size 1 (kernel 1, stride 1, no padding).

        A 1-D geometry becomes the 2-D one of height 1, whose arrays are the 1-D
        arrays with a unit axis inserted after the channels: the CPU lowering runs
        1-D problems as 2-D ones.
        """
        return self.replace(
            x_shape=(*self.x_shape[:2], 1, *self.x_shape[2:]),
            w_shape=(*self.w_shape[:2], 1, *self.w_shape[2:]),
            y_shape=(*self.y_shape[:2], 1, *self.y_shape[2:]),
            stride=(1, *self.stride),
            dilation=(1, *self.dilation),
            padding=((0, 0), *self.padding),
        )

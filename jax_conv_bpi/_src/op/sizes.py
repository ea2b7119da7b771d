"""The sizes ``conv_transpose`` can produce: checked with its own gate (``op.args``), so the two agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax_conv_bpi._src.op.args import padding_arg, reachable_sizes, spatial_ints

__all__ = ["conv_transpose_sizes"]


def conv_transpose_sizes(
    y_size: Sequence[int],
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int],
    padding: Any,
    *,
    rhs_dilation: int | Sequence[int] = 1,
) -> tuple[range, ...]:
    """The spatial sizes ``conv_transpose`` can produce, per axis, with ``output_padding`` or ``output_size``.

    Args:
      y_size: spatial size of ``y`` (one int per spatial axis: 1 to 3 of them).
      kernel_size, strides, rhs_dilation: an int or one per spatial axis.
      padding: as for ``conv_transpose``: ``'SAME'``, ``'SAME_LOWER'``,
        ``'VALID'``, an int or ``(lo, hi)`` pairs.

    Returns:
      One ``range`` per axis: the reachable sizes (all >= 1), exactly the
      ``output_size`` values ``conv_transpose`` accepts. For pairs and
      ``'VALID'``, size ``n`` is ``output_padding = n - n0`` with ``n0 = (o -
      1) * s - lo - hi + d * (k - 1) + 1``, the size of ``output_padding=0``
      (PyTorch's rule ``0 <= output_padding < max(stride, dilation)``); ``n0``
      is ``r.start`` unless it is below 1: then the sizes below 1 are left out
      and ``r.start`` is 1. ``'SAME'`` and ``'SAME_LOWER'`` reach ``(o - 1) *
      s + 1 .. o * s``, the sizes whose ``'SAME'`` forward convolution has
      ``o`` outputs: size ``n`` is ``output_padding = o * s - n`` (Equinox's
      rule; none for ``y_size`` 0).

    Example:
      >>> import jax_conv_bpi as jcb
      >>> [list(r) for r in jcb.conv_transpose_sizes((16,), 3, 2, [(1, 1)])]
      [[31, 32]]
      >>> jcb.conv_transpose_sizes((8, 8), 4, 2, "SAME")
      (range(15, 17), range(15, 17))
      >>> jcb.conv_transpose_sizes((1,), 1, 3, [(1, 1)])  # n0 = -1: output_padding 2 gives size 1
      (range(1, 2),)
    """
    fn = "conv_transpose_sizes"
    if not (isinstance(y_size, (tuple, list)) and 1 <= len(y_size) <= 3):
        raise TypeError(f"{fn}: 'y_size' must be a tuple of 1 to 3 ints (one per spatial axis), got {y_size!r}")
    n = len(y_size)
    out = spatial_ints(fn, "y_size", tuple(y_size), n, minimum=0)
    k = spatial_ints(fn, "kernel_size", kernel_size, n, minimum=1)
    s = spatial_ints(fn, "strides", strides, n, minimum=1)
    d = spatial_ints(fn, "rhs_dilation", rhs_dilation, n, minimum=1)
    pads = padding_arg(fn, padding, n)
    return tuple(
        reachable_sizes(out[a], k[a], s[a], d[a], pads if isinstance(pads, str) else pads[a]) for a in range(n)
    )

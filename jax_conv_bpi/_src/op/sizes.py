"""The sizes ``conv_transpose`` can produce: checked with its own gate (``op.args``), so the two agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.op.args import padding_arg, spatial_ints

__all__ = ["conv_transpose_sizes"]


def conv_transpose_sizes(
    y_size: Sequence[int],
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int],
    padding: Any,
    *,
    rhs_dilation: int | Sequence[int] = 1,
) -> tuple[range, ...]:
    """The spatial sizes ``conv_transpose`` can produce, per axis, with ``output_padding``.

    Args:
      y_size: spatial size of ``y`` (one int per spatial axis: 1 to 3 of them).
      kernel_size, strides, rhs_dilation: an int or one per spatial axis.
      padding: as for ``conv_transpose``: ``'SAME'``, ``'VALID'``, an int or
        ``(lo, hi)`` pairs.

    Returns:
      One ``range`` per axis: the reachable sizes (all >= 1). Size ``n`` is
      ``output_padding = n - n0`` with ``n0 = (o - 1) * s - lo - hi + d * (k -
      1) + 1``, the size of ``output_padding=0`` (PyTorch's rule ``0 <=
      output_padding < max(stride, dilation)``). ``n0`` is ``r.start`` unless
      it is below 1: then the sizes below 1 are left out and ``r.start`` is 1.
      ``'SAME'`` allows one size, ``y_size * stride`` (none for ``y_size`` 0).

    Example:
      >>> import jax_conv_bpi as jcb
      >>> [list(r) for r in jcb.conv_transpose_sizes((16,), 3, 2, [(1, 1)])]
      [[31, 32]]
      >>> jcb.conv_transpose_sizes((8, 8), 4, 2, "SAME")
      (range(16, 17), range(16, 17))
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
    ranges = []
    for a in range(n):
        if pads == "SAME":
            size = out[a] * s[a]
            ranges.append(range(size, size + 1) if size >= 1 else range(0))
            continue
        lo, hi = pads[a] if isinstance(pads, tuple) else (0, 0)  # not SAME: VALID or the pairs
        start = arithmetic.transpose_input_length(out[a], k[a], s[a], d[a], lo, hi, 0)
        ranges.append(range(max(start, 1), start + max(s[a], d[a])))
    return tuple(ranges)

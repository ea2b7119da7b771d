"""Public size helpers: which sizes a convolution gives, and which a transposed one can produce.

They validate their arguments with the gate's own checks (``_args``), so a
value the classes reject is rejected here too, with the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.mindspore import args_2d

__all__ = ["conv2d_output_size", "conv_transpose_sizes", "valid_input_sizes"]


def conv2d_output_size(
    input_size: int | tuple[int, int],
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, ...] = 1,
    dilation: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
) -> tuple[int, int]:
    """Spatial (height, width) of MindSpore ``Conv2D``'s output, i.e. of ``dout``.

    Args:
      input_size: spatial (height, width) of the convolution input (an int or a tuple).
      kernel_size: int or (kh, kw).
      stride, dilation: int, (h, w) or (1, 1, h, w), as the classes accept.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"`` (any letter case).
      pad: int or (top, bottom, left, right), used in ``pad`` mode.

    Returns:
      The (height, width) of ``dout`` that ``conv2d_backprop_input`` expects
      for this ``input_size``.

    Example:
      >>> import jax_conv_bpi as jcb
      >>> jcb.conv2d_output_size((32, 32), 3)
      (30, 30)
      >>> jcb.conv2d_output_size((7, 8), 3, stride=2, pad_mode="same")
      (4, 4)
    """
    fn = "conv2d_output_size"
    size = args_2d.size_pair(fn, "input_size", input_size, minimum=1)
    attrs = args_2d.helper_attrs(fn, kernel_size, stride, dilation, pad_mode, pad)
    k, s, d = attrs.kernel_size, attrs.stride, attrs.dilation
    p = arithmetic.forward_padding(attrs.pad_mode, size, k, s, d, (attrs.pad[0:2], attrs.pad[2:4]))
    out = tuple(arithmetic.output_length(size[a], k[a], s[a], d[a], *p[a]) for a in range(2))
    if min(out) < 0:
        raise ValueError(
            f"{fn}: the kernel extent {tuple(arithmetic.effective_kernel(k[a], d[a]) for a in range(2))} does not fit "
            f"the padded input {tuple(size[a] + sum(p[a]) for a in range(2))} (padding {p[0] + p[1]})"
        )
    return out  # type: ignore[return-value]


def valid_input_sizes(
    dout_size: int | tuple[int, int],
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, ...] = 1,
    dilation: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
) -> tuple[range, range]:
    """Every input (height, width) whose convolution output is ``dout_size``.

    Under a stride several input sizes give the same ``dout`` size, which
    is why ``conv2d_backprop_input`` takes ``input_size`` explicitly. The rows
    and columns beyond the smallest valid size receive no gradient (zeros).

    Returns:
      Two ``range`` objects (heights, widths); empty when nothing fits.

    Example:
      >>> import jax_conv_bpi as jcb
      >>> heights, widths = jcb.valid_input_sizes((3, 3), 3, stride=2)
      >>> list(heights), list(widths)
      ([7, 8], [7, 8])
    """
    fn = "valid_input_sizes"
    out = args_2d.size_pair(fn, "dout_size", dout_size, minimum=0)
    attrs = args_2d.helper_attrs(fn, kernel_size, stride, dilation, pad_mode, pad)
    ranges = []
    for a in range(2):
        lo, hi = attrs.pad[2 * a : 2 * a + 2]
        r = arithmetic.valid_input_range(
            attrs.pad_mode, out[a], attrs.kernel_size[a], attrs.stride[a], attrs.dilation[a], lo, hi
        )
        ranges.append(range(0) if r is None else range(r[0], r[1] + 1))
    return ranges[0], ranges[1]


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
    out = args_2d.spatial_ints(fn, "y_size", tuple(y_size), n, minimum=0)
    k = args_2d.spatial_ints(fn, "kernel_size", kernel_size, n, minimum=1)
    s = args_2d.spatial_ints(fn, "strides", strides, n, minimum=1)
    d = args_2d.spatial_ints(fn, "rhs_dilation", rhs_dilation, n, minimum=1)
    pads = args_2d.padding_arg(fn, padding, n)
    ranges = []
    for a in range(n):
        if pads == "SAME":
            size = out[a] * s[a]
            ranges.append(range(size, size + 1) if size >= 1 else range(0))
            continue
        lo, hi = (0, 0) if pads == "VALID" else pads[a]
        start = arithmetic.transpose_input_length(out[a], k[a], s[a], d[a], lo, hi, 0)
        ranges.append(range(max(start, 1), start + max(s[a], d[a])))
    return tuple(ranges)

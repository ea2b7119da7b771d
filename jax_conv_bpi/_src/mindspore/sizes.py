"""MindSpore-vocabulary size helpers: which sizes a 2-D convolution gives, and which inputs give a ``dout``.

They validate their arguments with the gate's own checks (``args_2d``), so a
value the classes reject is rejected here too, with the same message.
"""

from __future__ import annotations

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.mindspore import args_2d

__all__ = ["conv2d_output_size", "valid_input_sizes"]


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
    assert k is not None  # helper_attrs always checks kernel_size
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
    k = attrs.kernel_size
    assert k is not None  # helper_attrs always checks kernel_size
    ranges = []
    for a in range(2):
        lo, hi = attrs.pad[2 * a : 2 * a + 2]
        r = arithmetic.valid_input_range(attrs.pad_mode, out[a], k[a], attrs.stride[a], attrs.dilation[a], lo, hi)
        ranges.append(range(0) if r is None else range(r[0], r[1] + 1))
    return ranges[0], ranges[1]

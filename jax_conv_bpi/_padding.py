"""Padding and output-size arithmetic of MindSpore's 2-D convolution family.

Everything in this module is plain Python integer arithmetic on static shapes.
It runs once, at trace time; nothing here touches an array.

Derivation
==========

One spatial axis is enough: H and W are independent. Notation:

    S          input size (``input_size`` height or width)
    K, d, s    kernel size, dilation, stride
    ek         effective kernel extent, ek = (K - 1) * d + 1
    lo, hi     zero padding before / after the input (top/bottom, left/right)
    O          output size of the forward convolution (the height of ``dout``)

Forward convolution (MindSpore ``Conv2D``, a cross-correlation)
---------------------------------------------------------------

The padded input has P = lo + S + hi rows. Window ``o`` starts at padded row
``o * s`` and reads rows ``o * s + i * d`` for ``i < K``. A window fits when
``o * s + ek <= P``, so

    O = floor((P - ek) / s) + 1                                           (1)

with floor division (Python's ``//``). O = 0 is a legal, empty output when
-s <= P - ek <= -1; anything more negative is no output at all.

Padding of each mode:

* ``valid``: lo = hi = 0.
* ``pad``:   lo, hi given by the user (``pad``, or ``pad_list`` when it wins).
* ``same``:  O = ceil(S / s). The rows the windows need beyond S are

      need = max(0, (O - 1) * s + ek - S)                                (2)

  and they are split ``lo = need // 2``, ``hi = need - lo`` (the odd row goes
  after). Substituting (2) into (1) gives back O = ceil(S / s): with
  need > 0, P - ek = (O - 1) * s exactly; with need = 0 (clamped), the
  surplus S - ((O - 1) * s + ek) is < s because ek >= 1, so the floor in (1)
  still returns O - 1.

Input gradient (``Conv2DBackpropInput``)
----------------------------------------

Its output ``dx`` is the adjoint of (1): padded row ``r = o * s + i * d``
receives ``dout[o] * w[i]``, and ``dx[y] = padded[y + lo]``. Written as a
stride-1 correlation of the *lhs-dilated* ``dout`` with the *flipped* kernel:
dilating ``dout`` by s puts ``dout[o]`` at position ``o * s`` of a sequence of
length (O - 1) * s + 1. Correlating that with the flipped, dilated kernel
under zero padding (a, b) produces, at output position t,

    sum_i dout[o] * w[K-1-i']  over  o * s == t - a + (K - 1 - i') * d ... (3)

and choosing a = ek - 1 makes (3) read ``o * s + i * d == t`` (with
i = K - 1 - i'): the "full" transposed convolution whose position t is padded
row t. Its length is (O - 1) * s + ek. We want padded rows lo .. lo + S - 1,
so we shift by lo and cut at S:

    a = ek - 1 - lo                                                       (4)
    b = S + lo - (O - 1) * s - 1                                          (5)

(the output length of the stride-1 correlation is
a + (O - 1) * s + 1 + b - ek + 1 = S). A negative a or b crops instead of
pads; ``lhs_dilated_padding`` returns them as they are and the formulations
split the negative part off as a slice, so XLA only ever sees padding >= 0.

When S + lo + hi exceeds (O - 1) * s + ek, the last rows of the padded input
lie under no window (the "ambiguous input_size" of a strided convolution:
every S in ``valid_input_range`` gives the same O). (5) is then larger than
ek - 1 - hi and those rows of ``dx`` come out exactly zero, which is
MindSpore's behaviour.

Ambiguity of ``input_size``
---------------------------

Inverting (1) for a given O: valid/pad mode need
``(O - 1) * s <= S + lo + hi - ek <= (O - 1) * s + s - 1``, i.e.

    S in [ (O - 1) * s + ek - lo - hi , O * s + ek - lo - hi - 1 ]          (6)

and ``same`` mode needs ceil(S / s) = O, i.e. S in [(O - 1) * s + 1, O * s].
Both are intersected with S >= 1.

Weight gradient (``Conv2DBackpropFilter``)
------------------------------------------

``dw[i] = sum_o dout[o] * padded[o * s + i * d]`` only reads padded rows
< (O - 1) * s + ek, so the formulation crops the padded input to that length
(``hi`` may become negative, a crop) before correlating it with ``dout``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "conv2d_output_size",
    "effective_kernel",
    "forward_padding",
    "lhs_dilated_padding",
    "output_length",
    "same_padding",
    "valid_input_range",
    "valid_input_sizes",
]

PAD_MODES = ("valid", "same", "pad")


def effective_kernel(k: int, d: int) -> int:
    """Extent of a kernel of size ``k`` with dilation ``d``."""
    return (k - 1) * d + 1


def same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """``same``-mode padding (before, after) of one axis, equation (2)."""
    out = -(-size // s)
    need = max(0, (out - 1) * s + effective_kernel(k, d) - size)
    return need // 2, need - need // 2


def forward_padding(
    mode: str,
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad: tuple[int, int, int, int],
) -> tuple[int, int, int, int]:
    """The (top, bottom, left, right) padding MindSpore applies to the input.

    ``mode`` is the normalised pad mode; ``pad`` the explicit padding used in
    ``pad`` mode (already resolved against ``pad_list``).
    """
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "pad":
        return tuple(pad)  # type: ignore[return-value]
    top, bottom = same_padding(size[0], kernel[0], stride[0], dilation[0])
    left, right = same_padding(size[1], kernel[1], stride[1], dilation[1])
    return (top, bottom, left, right)


def output_length(size: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """Equation (1). May be negative when no window fits at all."""
    return (size + lo + hi - effective_kernel(k, d)) // s + 1


def lhs_dilated_padding(size: int, out: int, k: int, s: int, d: int, lo: int) -> tuple[int, int]:
    """Equations (4) and (5): padding of the lhs-dilated correlation."""
    ek = effective_kernel(k, d)
    return ek - 1 - lo, size + lo - (out - 1) * s - 1


def valid_input_range(mode: str, out: int, k: int, s: int, d: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Inclusive range of input sizes S >= 1 whose forward output is ``out``.

    Equation (6) for ``valid``/``pad``; ``ceil(S / s) == out`` for ``same``
    (whose ``lo``/``hi`` are then ignored: they depend on S). ``None`` when no
    positive size works.
    """
    if mode == "same":
        first, last = (out - 1) * s + 1, out * s
    else:
        ek = effective_kernel(k, d)
        first = (out - 1) * s + ek - lo - hi
        last = first + s - 1
    first = max(first, 1)
    return (first, last) if last >= first else None


def _pair(fn: str, value: int | Sequence[int], name: str, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, (bool, str)) or not isinstance(value, (int, Sequence)):
        raise TypeError(f"{fn}: '{name}' must be an int or a pair (h, w) of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair):
        raise ValueError(f"{fn}: '{name}' must be an int >= {minimum} or a pair (h, w) of such ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _helper_padding(
    fn: str, mode: str, pad: int | Sequence[int], size: tuple[int, int] | None, kernel, stride, dilation
) -> tuple[int, int, int, int]:
    if not isinstance(mode, str) or mode.lower() not in PAD_MODES:
        raise ValueError(f"{fn}: 'pad_mode' must be one of {PAD_MODES} (any letter case), got {mode!r}")
    mode = mode.lower()
    if isinstance(pad, (bool, str)) or not isinstance(pad, (int, Sequence)):
        raise TypeError(f"{fn}: 'pad' must be an int or a 4-tuple (top, bottom, left, right), got {pad!r}")
    pads = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    if len(pads) != 4 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads):
        raise ValueError(f"{fn}: 'pad' must be an int >= 0 or a 4-tuple of ints >= 0, got {pad!r}")
    if mode != "pad" and any(pads):
        raise ValueError(f"{fn}: 'pad' must be 0 when pad_mode is {mode!r}, got {pad!r}")
    if mode == "same" and size is None:
        return (0, 0, 0, 0)
    return forward_padding(mode, size, kernel, stride, dilation, pads)  # type: ignore[arg-type]


def conv2d_output_size(
    input_size: tuple[int, int],
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
) -> tuple[int, int]:
    """Spatial (height, width) of MindSpore ``Conv2D``'s output, i.e. of ``dout``.

    Args:
      input_size: spatial (height, width) of the convolution input.
      kernel_size: int or (kh, kw).
      stride, dilation: int or (h, w) pairs.
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
    size = _pair(fn, input_size, "input_size")
    kernel = _pair(fn, kernel_size, "kernel_size")
    s, d = _pair(fn, stride, "stride"), _pair(fn, dilation, "dilation")
    p = _helper_padding(fn, pad_mode, pad, size, kernel, s, d)
    out = tuple(output_length(size[a], kernel[a], s[a], d[a], p[2 * a], p[2 * a + 1]) for a in range(2))
    if min(out) < 0:
        raise ValueError(
            f"{fn}: the kernel extent {tuple(effective_kernel(kernel[a], d[a]) for a in range(2))} does not fit "
            f"the padded input {tuple(size[a] + p[2 * a] + p[2 * a + 1] for a in range(2))} (padding {p})"
        )
    return out  # type: ignore[return-value]


def valid_input_sizes(
    dout_size: tuple[int, int],
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
) -> tuple[range, range]:
    """Every input (height, width) whose convolution output is ``dout_size``.

    Under a stride > 1 several input sizes give the same ``dout`` size, which
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
    out = _pair(fn, dout_size, "dout_size", minimum=0)
    kernel = _pair(fn, kernel_size, "kernel_size")
    s, d = _pair(fn, stride, "stride"), _pair(fn, dilation, "dilation")
    p = _helper_padding(fn, pad_mode, pad, None, kernel, s, d)
    mode = pad_mode.lower()
    ranges = []
    for a in range(2):
        r = valid_input_range(mode, out[a], kernel[a], s[a], d[a], p[2 * a], p[2 * a + 1])
        ranges.append(range(0) if r is None else range(r[0], r[1] + 1))
    return ranges[0], ranges[1]

"""Padding and output-size arithmetic of the convolution family, per spatial axis.

Everything in this module is plain Python integer arithmetic on static shapes.
It runs once, at trace time; nothing here touches an array.

Derivation
==========

One spatial axis is enough: the axes of a 1-, 2- or 3-D convolution are
independent. Notation:

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

Transposed convolution in lax's vocabulary (``conv_transpose``)
---------------------------------------------------------------

``conv_transpose`` is given O (the size of ``y``), the forward padding
(lo, hi) and an ``output_padding`` p, and must choose S. Solving (1) for the
smallest S with output O gives S0 = (O - 1) * s + ek - lo - hi, and PyTorch's
rule is

    S = (O - 1) * s - lo - hi + ek + p,      0 <= p < max(s, d)           (7)

For p < s, (6) says S still gives output O: the result is exactly the VJP of
the forward convolution of an S-sized input. For s <= p < max(s, d) (only
when d > s), (1) would give O + p // s outputs; the rows of those extra
windows are no part of ``y``, so the operator is the VJP of the forward
convolution cropped to its first O outputs, which is what (1) computes with
hi reduced by s * (p // s) (``cropped_high``): a negative hi is a crop of
rows no remaining window reads. ``'SAME'`` is lax's forward rule, O =
ceil(S / s) with the padding of (2), and fixes S = O * s (p must be 0):
the sizes stride times larger that ``lax.conv_transpose`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "cropped_high",
    "effective_kernel",
    "forward_padding",
    "lhs_dilated_padding",
    "output_length",
    "same_padding",
    "transpose_input_length",
    "valid_input_range",
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
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    pad: Sequence[tuple[int, int]],
) -> tuple[tuple[int, int], ...]:
    """The ``(lo, hi)`` padding per spatial axis that the forward convolution applies.

    ``mode`` is the normalised pad mode; ``pad`` the explicit pairs used in
    ``pad`` mode (already resolved against MindSpore's ``pad_list``).
    """
    if mode == "valid":
        return tuple((0, 0) for _ in size)
    if mode == "pad":
        return tuple(tuple(p) for p in pad)  # type: ignore[return-value]
    return tuple(same_padding(*axis) for axis in zip(size, kernel, stride, dilation))


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


def transpose_input_length(out: int, k: int, s: int, d: int, lo: int, hi: int, output_padding: int) -> int:
    """Equation (7): the input size ``conv_transpose`` produces on one axis."""
    return (out - 1) * s - lo - hi + effective_kernel(k, d) + output_padding


def cropped_high(size: int, out: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """``hi`` lowered by whole strides until (1) gives ``out`` (no change when it already does)."""
    extra = output_length(size, k, s, d, lo, hi) - out
    return hi - s * max(extra, 0)

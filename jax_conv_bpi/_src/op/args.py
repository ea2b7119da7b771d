"""The gate of lax's vocabulary: ``conv_transpose``'s arguments, 1-3 spatial dims.

Strides, ``'SAME'``/``'SAME_LOWER'``/``'VALID'``/pairs padding, an output
padding or an output size, dimension numbers, the kernel convention
(``transpose_kernel``), the padding mode, a bias, precision and
``preferred_element_type`` as lax and its users take them, checked once at
trace time (pure Python on static values) into a ``TransposeCall``: the
channels-first operands and ``ConvGeometry`` of the primitive, and the static
steps around it. ``conv_transpose_sizes`` validates with the same checks.

Sizes per spatial axis (``o`` = ``y``'s size, ``ek = (k - 1) * d + 1``):

* pairs ``(lo, hi)`` and ``'VALID'`` (``(0, 0)``): PyTorch's rule ``n = (o - 1)
  * s - lo - hi + ek + p`` with ``0 <= p < max(s, d)`` (``arithmetic`` eq. (7));
* ``'SAME'`` / ``'SAME_LOWER'``: ``n = o * s - p`` with ``0 <= p < s``: exactly
  the sizes whose forward convolution with lax's ``'SAME'`` padding has ``o``
  outputs (``ceil(n / s) == o``), the forward padding being lax's for that
  ``n`` (the odd row after for ``'SAME'``, before for ``'SAME_LOWER'``).
  Equinox's ``ConvTranspose`` rule: ``output_padding`` lowers the size.

An ``output_size`` names ``n`` instead; it must be one of those sizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.base.validate import (
    check_array,
    check_int,
    check_limit,
    float_dtype_name,
    got,
    is_index,
    same_dtype,
)

__all__ = [
    "PADDING_MODES",
    "TransposeCall",
    "axis_padding",
    "bind_conv_transpose",
    "default_dimension_numbers",
    "padding_arg",
    "reachable_sizes",
    "spatial_ints",
    "transpose_geometry",
]

_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}
_SAME = ("SAME", "SAME_LOWER")
PADDING_MODES = ("zeros", "circular")
"""``conv_transpose``'s ``padding_mode`` values (any letter case)."""


def default_dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channels-first layouts for ``n`` spatial dims: ``("NCH", "OIH", "NCH")`` ... ``("NCDHW", "OIDHW", "NCDHW")``."""
    sp = _SPATIAL[n]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def spatial_ints(op: str, name: str, value: Any, n: int, *, minimum: int) -> tuple[int, ...]:
    """An int (every axis) or a tuple/list of ``n`` ints, each ``>= minimum``."""
    if is_index(value):
        items = (int(value),) * n
    elif isinstance(value, (tuple, list)) and all(is_index(v) for v in value):
        items = tuple(int(v) for v in value)
    else:
        raise TypeError(
            f"{op}: '{name}' must be an int or a sequence of {n} ints (one per spatial axis), got {got(value)}"
        )
    if len(items) != n:
        raise ValueError(f"{op}: '{name}' needs {n} entries (one per spatial axis), got {len(items)}: {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{op}: every entry of '{name}' must be >= {minimum}, got {value!r}")
    check_limit(op, f"'{name}'", items)
    return items


def padding_arg(op: str, padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    """``'SAME'`` / ``'SAME_LOWER'`` / ``'VALID'`` (any case), an int, or ``n`` pairs ``(lo, hi)`` of ints >= 0."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "SAME_LOWER", "VALID"):
            raise ValueError(
                f"{op}: 'padding' as a string must be 'SAME', 'SAME_LOWER' or 'VALID', got {padding!r}; other "
                f"paddings as one (lo, hi) pair per spatial axis"
            )
        return mode
    if is_index(padding):
        pairs = ((int(padding), int(padding)),) * n
    elif isinstance(padding, (tuple, list)) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(is_index(v) for v in p) for p in padding
    ):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise TypeError(
            f"{op}: 'padding' must be 'SAME', 'SAME_LOWER', 'VALID', an int or a sequence of {n} (lo, hi) pairs "
            f"of ints, got {got(padding)}"
        )
    if len(pairs) != n:
        raise ValueError(f"{op}: 'padding' needs {n} (lo, hi) pairs (one per spatial axis), got {padding!r}")
    if any(v < 0 for p in pairs for v in p):
        raise ValueError(f"{op}: every padding must be >= 0, got {padding!r}")
    check_limit(op, "'padding'", [v for p in pairs for v in p])
    return pairs


def reachable_sizes(o: int, k: int, s: int, d: int, pad: str | tuple[int, int]) -> range:
    """The sizes of one spatial axis (all >= 1), for ``pad`` a padding string or the axis' ``(lo, hi)`` pair.

    ``'SAME'`` / ``'SAME_LOWER'``: ``(o - 1) * s + 1 .. o * s`` (``output_padding = o * s - n``). Otherwise
    ``n0 .. n0 + max(s, d) - 1`` with ``n0`` the size of ``output_padding`` 0 (``output_padding = n - n0``).
    """
    if pad in _SAME:
        return range(max((o - 1) * s + 1, 1), o * s + 1)
    lo, hi = _pair(pad)
    start = arithmetic.transpose_input_length(o, k, s, d, lo, hi, 0)
    return range(max(start, 1), start + max(s, d))


def _pair(pad: str | tuple[int, int]) -> tuple[int, int]:
    """The ``(lo, hi)`` of a pair or of ``'VALID'`` (the callers handle ``'SAME'`` / ``'SAME_LOWER'`` first)."""
    return (0, 0) if isinstance(pad, str) else pad


def axis_padding(pad: str | tuple[int, int], size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """The forward convolution's ``(lo, hi)`` on one axis of input size ``size`` (lax's rule for the strings)."""
    if pad in _SAME:
        lo, hi = arithmetic.same_padding(size, k, s, d)
        return (hi, lo) if pad == "SAME_LOWER" else (lo, hi)  # SAME_LOWER: the odd row before
    return _pair(pad)


def _span(r: range) -> str:
    return f"{r.start}..{r.stop - 1}" if len(r) else "none"


def _dimension_numbers(op: str, dn: Any, n: int, w_shape) -> lax.ConvDimensionNumbers:
    if dn is None:
        dn = default_dimension_numbers(n)
    try:
        return lax.conv_dimension_numbers((1,) * (n + 2), tuple(w_shape), dn)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(
            f"{op}: invalid 'dimension_numbers' {dn!r} for {n} spatial dims (w of rank {n + 2}): {e}; e.g. "
            f"{default_dimension_numbers(n)!r} (channels-first) or "
            f"{('N' + _SPATIAL[n] + 'C', _SPATIAL[n] + 'IO', 'N' + _SPATIAL[n] + 'C')!r}"
        ) from None


def _precision_arg(op: str, precision: Any) -> Any:
    if precision is None or isinstance(precision, lax.Precision):
        return precision
    if isinstance(precision, str):
        try:
            return lax.Precision(precision)
        except (ValueError, KeyError):
            raise ValueError(
                f"{op}: 'precision' must be None, a lax.Precision or one of its names ('default', 'high', "
                f"'highest', or the aliases 'fastest', 'bfloat16', 'tensorfloat32', 'float32'), got {precision!r}"
            ) from None
    if isinstance(precision, (tuple, list)) and len(precision) == 2:
        return tuple(_precision_arg(op, p) for p in precision)
    raise TypeError(f"{op}: 'precision' must be None, a lax.Precision, a str or a pair of them, got {got(precision)}")


def _element_type(op: str, value: Any) -> str | None:
    """``preferred_element_type``: None, or a floating dtype-like, as JAX will hold it (float64 without x64: float32)."""
    if value is None:
        return None
    name = float_dtype_name(op, "preferred_element_type", value)
    return jax.dtypes.canonicalize_dtype(jnp.dtype(name)).name


def _cpu_path_arg(op: str, cpu_path: Any) -> str | None:
    from jax_conv_bpi._src.lowering.dispatch import CPU_PATHS

    if cpu_path is None:
        return None
    if not isinstance(cpu_path, str) or cpu_path not in CPU_PATHS:
        raise ValueError(f"{op}: 'cpu_path' must be None or one of {CPU_PATHS}, got {cpu_path!r}")
    return cpu_path


def _check_forced_path(op: str, geom: ConvGeometry) -> None:
    """The dispatcher's refusal of a forced ``cpu_path`` that does not serve ``geom``, under ``op``'s name."""
    from jax_conv_bpi._src.lowering.dispatch import check_forced_path

    try:
        check_forced_path(geom)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None


def _static_bool(op: str, name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"{op}: '{name}' must be a Python bool (static configuration; inside jax.jit pass it through "
        f"static_argnames or functools.partial), got {got(value)}"
    )


def _padding_mode_arg(op: str, value: Any) -> bool:
    """``True`` for circular padding."""
    if isinstance(value, str) and value.lower() in PADDING_MODES:
        return value.lower() == "circular"
    raise ValueError(
        f"{op}: 'padding_mode' must be one of {PADDING_MODES} (any letter case), got {got(value)}"
        + ("; reflect/replicate padding has no transposed form here" if isinstance(value, str) else "")
    )


def _axis_size(
    op: str, a: int, o: int, k: int, s: int, d: int, pad: str | tuple[int, int], p: int, want: int | None
) -> int | None:
    """The result's size on spatial axis ``a`` from ``output_padding`` ``p``, or ``None`` when ``want`` is not reachable."""
    if want is not None:
        return want if want in reachable_sizes(o, k, s, d, pad) else None
    if pad in _SAME:
        if p >= s:
            raise ValueError(
                f"{op}: output_padding {p} on spatial axis {a} must be < stride {s} with padding {pad!r} (the size "
                f"is y's size times the stride minus output_padding: {_span(reachable_sizes(o, k, s, d, pad))} "
                f"here); or pass output_size"
            )
        size = o * s - p
    else:
        limit = max(s, d)
        if p >= limit:
            raise ValueError(
                f"{op}: output_padding {p} on spatial axis {a} must be < max(stride, dilation) = {limit} "
                f"(stride {s}, dilation {d}); or pass output_size"
            )
        lo, hi = _pair(pad)
        size = arithmetic.transpose_input_length(o, k, s, d, lo, hi, p)
    if size < 1:
        raise ValueError(
            f"{op}: spatial axis {a}: y size {o}, kernel {k}, stride {s}, dilation {d}, padding {pad!r} "
            f"and output_padding {p} give an input size of {size}; it must be >= 1 (less padding)"
        )
    return size


def _resolve_sizes(
    op: str,
    y_cf: Sequence[int],
    w_cf: Sequence[int],
    strides: Any,
    padding: Any,
    output_padding: Any,
    rhs_dilation: Any,
    output_size: Sequence[int] | None,
):
    """Strides, dilations, sizes and the forward ``(lo, hi)`` per axis (output_padding and output_size checked)."""
    n = len(y_cf) - 2
    s = spatial_ints(op, "strides", strides, n, minimum=1)
    d = spatial_ints(op, "rhs_dilation", rhs_dilation, n, minimum=1)
    p_out = spatial_ints(op, "output_padding", output_padding, n, minimum=0)
    pads = padding_arg(op, padding, n)
    if output_size is not None and any(p_out):
        raise ValueError(
            f"{op}: pass output_size or output_padding, not both (output_size {tuple(output_size)}, output_padding "
            f"{output_padding!r}); output_size alone names the size"
        )
    per_axis = [pads if isinstance(pads, str) else pads[a] for a in range(n)]
    sizes = []
    for a in range(n):
        o, k = y_cf[2 + a], w_cf[2 + a]
        want = None if output_size is None else output_size[a]
        size = _axis_size(op, a, o, k, s[a], d[a], per_axis[a], p_out[a], want)
        if size is None:
            ranges = [reachable_sizes(y_cf[2 + b], w_cf[2 + b], s[b], d[b], per_axis[b]) for b in range(n)]
            raise ValueError(
                f"{op}: output_size {tuple(output_size or ())} is not reachable on spatial axis {a}: y size {o}, "
                f"kernel {k}, stride {s[a]}, dilation {d[a]} and padding {per_axis[a]!r} give sizes "
                f"{_span(ranges[a])}, got {want}; reachable per spatial axis: "
                f"{', '.join(f'axis {b}: {_span(r)}' for b, r in enumerate(ranges))} (conv_transpose_sizes lists them)"
            )
        sizes.append(size)
    pairs = tuple(axis_padding(per_axis[a], sizes[a], w_cf[2 + a], s[a], d[a]) for a in range(n))
    return s, d, tuple(sizes), pairs


def transpose_geometry(
    op: str,
    y_cf: Sequence[int],
    w_cf: Sequence[int],
    strides: Any,
    padding: Any,
    output_padding: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
    *,
    output_size: Sequence[int] | None = None,
) -> ConvGeometry:
    """The geometry of ``conv_transpose`` from channels-first shapes of ``y`` and the forward kernel ``w``.

    ``arithmetic`` eq. (7) for pairs and ``'VALID'``; ``o * s - output_padding``
    with lax's ``'SAME'`` / ``'SAME_LOWER'`` padding of that size; or the
    ``output_size`` (spatial, one per axis) when given.
    """
    g = check_int(op, "feature_group_count", feature_group_count, minimum=1)
    if min(w_cf) < 1:
        raise ValueError(f"{op}: every dimension of 'w' must be >= 1, got w shape (O, I, *kernel) {tuple(w_cf)}")
    if y_cf[1] != w_cf[0]:
        raise ValueError(
            f"{op}: y has {y_cf[1]} channels but w has {w_cf[0]} output channels (O); they must be equal "
            f"(y shape (N, C, *spatial) {tuple(y_cf)}, w shape (O, I, *kernel) {tuple(w_cf)})"
        )
    if w_cf[0] % g:
        raise ValueError(
            f"{op}: feature_group_count={g} must divide w's output channels {w_cf[0]}; accepted values are the "
            f"divisors of {w_cf[0]}"
        )
    s, d, sizes, pairs = _resolve_sizes(op, y_cf, w_cf, strides, padding, output_padding, rhs_dilation, output_size)
    cropped = tuple(
        (lo, arithmetic.cropped_high(size, o, k, sa, da, lo, hi))
        for size, o, k, sa, da, (lo, hi) in zip(sizes, y_cf[2:], w_cf[2:], s, d, pairs)
    )
    x = (y_cf[0], g * w_cf[1], *sizes)
    check_limit(op, "result shape", x)
    return ConvGeometry(tuple(x), tuple(w_cf), tuple(y_cf), s, d, cropped, g)


# -- the layout of a call ------------------------------------------------------------------------


def _layout_hint(op: str, y_layout: Sequence[int], w_shape: Sequence[int], given: Any, g: int, tk: bool) -> str:
    """What would fit when ``y``'s channels match neither the kernel's axis nor ``feature_group_count`` says."""
    n = len(w_shape) - 2
    sp = _SPATIAL[n]
    fits = []
    for tk_try in (tk, not tk):
        for lhs in ("NC" + sp, "N" + sp + "C"):
            for rhs in ("OI" + sp, sp + "IO", "O" + sp + "I"):
                c_y, o_w, i_w = y_layout[lhs.index("C")], w_shape[rhs.index("O")], w_shape[rhs.index("I")]
                ok = (c_y == o_w) if tk_try else (c_y == g * i_w)
                if ok and o_w % g == 0 and (lhs, rhs, lhs) not in [f[0] for f in fits if f[1] == tk_try]:
                    fits.append(((lhs, rhs, lhs), tk_try))
    user = default_dimension_numbers(n) if given is None else given
    user = tuple(user) if isinstance(user, (tuple, list)) and all(isinstance(v, str) for v in user) else None
    hints = []
    for dn, tk_try in fits:
        if dn == user and tk_try == tk:
            continue
        if dn == user:
            hints.append(
                "w's I axis matches y's channels: if w is laid out as lax.conv_transpose(..., "
                "transpose_kernel=False), Flax's and Equinox's ConvTranspose take it (I = y's channels, not "
                "flipped), pass transpose_kernel=False"
                if not tk_try
                else "w's O axis matches y's channels: if w is the forward convolution's kernel, pass "
                "transpose_kernel=True"
            )
        else:
            extra = "" if tk_try == tk else f", transpose_kernel={tk_try}"
            hints.append(f"the shapes fit dimension_numbers={dn!r}{extra}")
        if len(hints) == 2:
            break
    return ("; " + "; or ".join(hints)) if hints else ""


def _check_channels(op: str, y_layout, w_shape, dn, given: Any, g: int, tk: bool) -> None:
    """``y``'s channels against the kernel (its O axis, or I times the groups for ``transpose_kernel=False``)."""
    c_y = y_layout[dn.out_spec[1]]
    o_w, i_w = w_shape[dn.rhs_spec[0]], w_shape[dn.rhs_spec[1]]
    shapes = f"(y {tuple(y_layout)} as {_spec(given, 2)}, w {tuple(w_shape)} as {_spec(given, 1)})"
    if tk and c_y != o_w:
        raise ValueError(
            f"{op}: y has {c_y} channels but w has {o_w} output channels (O); they must be equal {shapes}"
            + _layout_hint(op, y_layout, w_shape, given, g, tk)
        )
    if not tk and c_y != g * i_w:
        raise ValueError(
            f"{op}: y has {c_y} channels but w's I axis {i_w} times feature_group_count {g} is {g * i_w}; with "
            f"transpose_kernel=False they must be equal {shapes}" + _layout_hint(op, y_layout, w_shape, given, g, tk)
        )


def _spec(given: Any, i: int) -> str:
    if given is None:
        return "channels-first"
    return repr(given[i]) if isinstance(given, (tuple, list)) and len(given) == 3 else "given"


def _forward_kernel(w_cf: jax.Array, g: int) -> jax.Array:
    """A ``transpose_kernel=False`` kernel (O = the result's channels, I = y's / g) as the forward kernel.

    Per group, O and I swap places and every spatial axis flips:
    ``w_f[j * I + i, c, t] = w[j * O / g + c, i, K - 1 - t]`` for group ``j``
    (lax's transpose of a grouped convolution's input).
    """
    o, i, *kernel = w_cf.shape
    w = jnp.swapaxes(w_cf.reshape(g, o // g, i, *kernel), 1, 2).reshape(g * i, o // g, *kernel)
    return jnp.flip(w, axis=tuple(range(2, w.ndim)))


def _output_size_arg(op: str, value: Any, n: int, rank: int) -> tuple[int, ...] | None:
    """``None``, ``n`` spatial sizes (or one int for every axis), or a full result shape of ``rank`` entries."""
    if value is None:
        return None
    if is_index(value):
        return spatial_ints(op, "output_size", value, n, minimum=1)
    if not (isinstance(value, (tuple, list)) and all(is_index(v) for v in value)):
        raise TypeError(
            f"{op}: 'output_size' must be None, {n} ints (the spatial sizes) or {rank} ints (the result's shape), "
            f"got {got(value)}"
        )
    if len(value) not in (n, rank):
        raise ValueError(
            f"{op}: 'output_size' needs {n} entries (the spatial sizes) or {rank} (the result's full shape), got "
            f"{len(value)}: {value!r}"
        )
    return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class TransposeCall:
    """One ``conv_transpose`` call, checked: the primitive's operands and geometry, and the static steps around it.

    ``y`` is channels-first with one batch axis, ``w`` the forward kernel,
    channels-first. ``geom`` is the primitive's geometry: for circular padding
    the zero-padded full result (``(0, 0)`` padding, output_padding 0), folded
    by ``wrap`` (one ``(size, lo)`` per axis: full row ``r`` adds to row ``(r -
    lo) mod size``); ``None`` when ``y`` is empty on an axis (the result is
    zeros). ``x_shape`` is the channels-first result with one batch axis;
    ``batch`` the shape that axis unfolds into (``y``'s leading batch axes,
    then ``N``), and ``back`` the permutation to the result's layout. ``batch``
    ``None``: ``y`` has no ``N`` axis, and the result drops it (at ``n_axis``
    of its layout). ``wide``: the primitive returns float32 and the fold and
    the bias add in float32 before the one rounding to ``dtype``.
    """

    y: Any
    w: Any
    bias: Any
    geom: ConvGeometry | None
    wrap: tuple[tuple[int, int], ...] | None
    x_shape: tuple[int, ...]
    batch: tuple[int, ...] | None
    back: tuple[int, ...]
    n_axis: int
    dtype: str
    wide: bool


def bind_conv_transpose(
    y: Any,
    w: Any,
    strides: Any,
    padding: Any,
    *,
    output_padding: Any,
    output_size: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
    dimension_numbers: Any,
    transpose_kernel: Any,
    padding_mode: Any,
    bias: Any,
    precision: Any,
    preferred_element_type: Any,
    cpu_path: Any,
) -> TransposeCall:
    """Validate ``conv_transpose``; return its ``TransposeCall``.

    The number of spatial dims ``n`` is ``w``'s rank minus 2. ``y`` has the
    ``n + 2`` axes of its layout (``dimension_numbers``' out spec), or that
    layout without its ``N`` axis (rank ``n + 1``, unbatched), or leading
    batch axes in front of the whole layout (rank > ``n + 2``): they fold into
    ``N`` around the primitive and come back, in front, on the result.
    """
    op = "conv_transpose"
    y = check_array(op, "y", y)
    w = check_array(op, "w", w)
    same_dtype(op, ("y", "w"), y, w)
    if w.ndim not in (3, 4, 5):
        raise ValueError(
            f"{op}: w must have rank 3, 4 or 5 (O, I and 1, 2 or 3 spatial dims), got y shape {tuple(y.shape)} "
            f"and w shape {tuple(w.shape)}"
        )
    n = w.ndim - 2
    if y.ndim < n + 1:
        raise ValueError(
            f"{op}: y must have rank {n + 1} (unbatched), {n + 2} (the layout's axes) or more (leading batch "
            f"axes) for a w of rank {w.ndim} ({n} spatial dims), got y shape {tuple(y.shape)} and w shape "
            f"{tuple(w.shape)}"
        )
    tk = _static_bool(op, "transpose_kernel", transpose_kernel)
    circular = _padding_mode_arg(op, padding_mode)
    dn = _dimension_numbers(op, dimension_numbers, n, w.shape)
    g = check_int(op, "feature_group_count", feature_group_count, minimum=1)
    if y.ndim == n + 1:
        batch, layout = None, (*y.shape[: dn.out_spec[0]], 1, *y.shape[dn.out_spec[0] :])
    else:
        batch, layout = tuple(y.shape[: y.ndim - n - 2]), tuple(y.shape[y.ndim - n - 2 :])
    if min(w.shape) >= 1:
        _check_channels(op, layout, w.shape, dn, dimension_numbers, g, tk)
    y_cf = tuple(layout[i] for i in dn.out_spec)
    y_cf = (math.prod(batch or ()) * y_cf[0], *y_cf[1:])
    w_given = tuple(w.shape[i] for i in dn.rhs_spec)
    if not tk and w_given[0] % g:
        raise ValueError(
            f"{op}: feature_group_count={g} must divide w's O axis {w_given[0]} (the result's channels with "
            f"transpose_kernel=False); accepted values are the divisors of {w_given[0]}"
        )
    w_cf = w_given if tk else (g * w_given[1], w_given[0] // g, *w_given[2:])

    # The result's axes: channels-first index j -> position in the returned array.
    b = len(batch) if batch is not None else 0
    rank = y.ndim
    if batch is None:
        position = [p - (p > dn.lhs_spec[0]) for p in dn.lhs_spec]
    else:
        position = [b + p for p in dn.lhs_spec]
    want = _output_size_arg(op, output_size, n, rank)
    spatial_want = want if want is None or len(want) == n else tuple(want[position[2 + a]] for a in range(n))
    geom = transpose_geometry(
        op, y_cf, w_cf, strides, padding, output_padding, rhs_dilation, g, output_size=spatial_want
    )
    c_x = geom.x_shape[1]
    if want is not None and len(want) == rank:
        expect = list(want)
        for i, v in enumerate(batch or ()):
            expect[i] = v
        if batch is not None:
            expect[position[0]] = layout[dn.out_spec[0]]
        expect[position[1]] = c_x
        if tuple(expect) != want:
            raise ValueError(
                f"{op}: output_size {want} as the result's full shape must keep its batch and channel entries: "
                f"the result is {tuple(expect)} for those spatial sizes (its channels are {c_x}); or pass the "
                f"{n} spatial sizes alone"
            )
    if bias is not None:
        bias = check_array(op, "bias", bias)
        same_dtype(op, ("y", "bias"), y, bias)
        if tuple(bias.shape) != (c_x,):
            what = "w's I axis times feature_group_count" if tk else "w's O axis"
            raise ValueError(
                f"{op}: 'bias' must have shape ({c_x},), one entry per channel of the result ({what}), got shape "
                f"{tuple(bias.shape)}"
            )
    out_dtype = _element_type(op, preferred_element_type)
    dtype = out_dtype or jax.dtypes.canonicalize_dtype(y.dtype).name
    wide = (circular or bias is not None) and jnp.dtype(dtype).itemsize == 2
    numerics = dict(
        precision=_precision_arg(op, precision),
        out_dtype="float32" if wide else out_dtype,
        cpu_path=_cpu_path_arg(op, cpu_path),
    )
    wrap = None
    prim: ConvGeometry | None = geom.replace(**numerics)
    if circular:
        wrap = tuple((size, lo) for size, (lo, _) in zip(geom.x_shape[2:], geom.padding))
        if min(geom.y_shape[2:]) == 0:
            prim = None
        else:
            full = tuple(arithmetic.transpose_input_length(o, k, s, d, 0, 0, 0) for o, k, s, d in _axes(geom))
            check_limit(op, "circular padding's full result", full)
            prim = geom.replace(x_shape=(*geom.x_shape[:2], *full), padding=((0, 0),) * n, **numerics)

    if prim is not None:
        _check_forced_path(op, prim)
    y_arr, w_arr = jnp.asarray(y), jnp.asarray(w)
    if batch is None:
        y_arr = jnp.expand_dims(y_arr, dn.out_spec[0])
    perm = (*range(b), *(b + i for i in dn.out_spec))
    if perm != tuple(range(y_arr.ndim)):
        y_arr = jnp.transpose(y_arr, perm)
    if batch is not None:
        y_arr = y_arr.reshape(y_cf)  # the leading batch axes fold into N
    if tuple(dn.rhs_spec) != tuple(range(w.ndim)):
        w_arr = jnp.transpose(w_arr, dn.rhs_spec)
    if not tk:
        w_arr = _forward_kernel(w_arr, g)
    return TransposeCall(
        y=y_arr,
        w=w_arr,
        bias=None if bias is None else jnp.asarray(bias),
        geom=prim,
        wrap=wrap,
        x_shape=geom.x_shape,
        batch=None if batch is None else (*batch, layout[dn.out_spec[0]]),
        back=tuple(int(i) for i in np.argsort(dn.lhs_spec)),
        n_axis=int(dn.lhs_spec[0]),
        dtype=dtype,
        wide=wide,
    )


def _axes(geom: ConvGeometry):
    return ((geom.y_shape[2 + a], geom.w_shape[2 + a], geom.stride[a], geom.dilation[a]) for a in range(geom.ndim))

"""The gate of lax's vocabulary: ``conv_transpose``'s arguments, 1-3 spatial dims.

Strides, ``'SAME'``/``'VALID'``/pairs padding, dimension numbers, precision and
``preferred_element_type`` as ``lax.conv_general_dilated`` takes them, checked
once at trace time (pure Python on static values) into a ``ConvGeometry``;
``conv_transpose_sizes`` validates with the same checks.
"""

from __future__ import annotations

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
    "bind_conv_transpose",
    "default_dimension_numbers",
    "padding_arg",
    "spatial_ints",
    "transpose_geometry",
]

_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}


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
    """``'SAME'`` / ``'VALID'`` (any case), an int, or ``n`` pairs ``(lo, hi)`` of ints >= 0."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"{op}: 'padding' as a string must be 'SAME' or 'VALID', got {padding!r}")
        return mode
    if is_index(padding):
        pairs = ((int(padding), int(padding)),) * n
    elif isinstance(padding, (tuple, list)) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(is_index(v) for v in p) for p in padding
    ):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise TypeError(
            f"{op}: 'padding' must be 'SAME', 'VALID', an int or a sequence of {n} (lo, hi) pairs of ints, "
            f"got {got(padding)}"
        )
    if len(pairs) != n:
        raise ValueError(f"{op}: 'padding' needs {n} (lo, hi) pairs (one per spatial axis), got {padding!r}")
    if any(v < 0 for p in pairs for v in p):
        raise ValueError(f"{op}: every padding must be >= 0, got {padding!r}")
    check_limit(op, "'padding'", [v for p in pairs for v in p])
    return pairs


def _dimension_numbers(op: str, dn: Any, ndim: int, y_shape, w_shape) -> lax.ConvDimensionNumbers:
    if dn is None:
        dn = default_dimension_numbers(ndim - 2)
    try:
        return lax.conv_dimension_numbers(tuple(y_shape), tuple(w_shape), dn)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(
            f"{op}: invalid 'dimension_numbers' {dn!r} for rank-{ndim} operands: {e}; e.g. "
            f"{default_dimension_numbers(ndim - 2)!r} (channels-first) or "
            f"{('N' + _SPATIAL[ndim - 2] + 'C', _SPATIAL[ndim - 2] + 'IO', 'N' + _SPATIAL[ndim - 2] + 'C')!r}"
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


def _cpu_path_arg(op: str, cpu_path: Any, strides, dilation) -> str | None:
    from jax_conv_bpi._src.lowering.dispatch import CPU_PATHS

    if cpu_path is None:
        return None
    if not isinstance(cpu_path, str) or cpu_path not in CPU_PATHS:
        raise ValueError(f"{op}: 'cpu_path' must be None or one of {CPU_PATHS}, got {cpu_path!r}")
    if cpu_path == "flipped_conv" and set(strides) != {1}:
        raise ValueError(f"{op}: cpu_path 'flipped_conv' needs stride 1 on every axis, got strides {strides}")
    if cpu_path == "lhs_dilated" and set(strides) != {1} and set(dilation) != {1}:
        raise ValueError(
            f"{op}: cpu_path 'lhs_dilated' with strides {strides} and dilation {dilation}: XLA CPU may abort the "
            f"process on strided + dilated lhs-dilated convolutions; choose another path"
        )
    return cpu_path


def transpose_geometry(
    op: str,
    y_cf: Sequence[int],
    w_cf: Sequence[int],
    strides: Any,
    padding: Any,
    output_padding: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
) -> ConvGeometry:
    """The geometry of ``conv_transpose`` from channels-first shapes of ``y`` and ``w`` (``arithmetic`` eq. (7))."""
    n = len(y_cf) - 2
    s = spatial_ints(op, "strides", strides, n, minimum=1)
    d = spatial_ints(op, "rhs_dilation", rhs_dilation, n, minimum=1)
    p_out = spatial_ints(op, "output_padding", output_padding, n, minimum=0)
    pads = padding_arg(op, padding, n)
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
    sizes, pairs = [], []
    for a in range(n):
        o, k = y_cf[2 + a], w_cf[2 + a]
        limit = max(s[a], d[a])
        if p_out[a] >= limit:
            raise ValueError(
                f"{op}: output_padding {p_out[a]} on spatial axis {a} must be < max(stride, dilation) = {limit} "
                f"(stride {s[a]}, dilation {d[a]}); got output_padding {output_padding!r}"
            )
        if pads == "SAME":
            if p_out[a]:
                raise ValueError(
                    f"{op}: output_padding must be 0 with padding='SAME' (it fixes the size to y's size times the "
                    f"stride); for other sizes pass explicit (lo, hi) pairs, got output_padding {output_padding!r}"
                )
            size = o * s[a]
            lo, hi = arithmetic.same_padding(size, k, s[a], d[a])
        else:
            lo, hi = pads[a] if isinstance(pads, tuple) else (0, 0)  # not SAME: VALID or the pairs
            size = arithmetic.transpose_input_length(o, k, s[a], d[a], lo, hi, p_out[a])
        if size < 1:
            raise ValueError(
                f"{op}: spatial axis {a}: y size {o}, kernel {k}, stride {s[a]}, dilation {d[a]}, padding {(lo, hi)} "
                f"and output_padding {p_out[a]} give an input size of {size}; it must be >= 1 (less padding)"
            )
        sizes.append(size)
        pairs.append((lo, arithmetic.cropped_high(size, o, k, s[a], d[a], lo, hi)))
    x = (y_cf[0], g * w_cf[1], *sizes)
    check_limit(op, "result shape", x)
    return ConvGeometry(tuple(x), tuple(w_cf), tuple(y_cf), s, d, tuple(pairs), g)


def bind_conv_transpose(
    y: Any,
    w: Any,
    strides: Any,
    padding: Any,
    *,
    output_padding: Any,
    rhs_dilation: Any,
    feature_group_count: Any,
    dimension_numbers: Any,
    precision: Any,
    preferred_element_type: Any,
    cpu_path: Any,
) -> tuple[jax.Array, jax.Array, ConvGeometry, tuple[int, ...]]:
    """Validate ``conv_transpose``; return channels-first ``y``, ``w``, the geometry and the result's permutation."""
    op = "conv_transpose"
    y = check_array(op, "y", y)
    w = check_array(op, "w", w)
    same_dtype(op, ("y", "w"), y, w)
    if y.ndim not in (3, 4, 5) or w.ndim != y.ndim:
        raise ValueError(
            f"{op}: y and w must both have rank 3, 4 or 5 (1, 2 or 3 spatial dims), got y shape {tuple(y.shape)} "
            f"and w shape {tuple(w.shape)}"
        )
    dn = _dimension_numbers(op, dimension_numbers, y.ndim, y.shape, w.shape)
    y_cf = tuple(y.shape[i] for i in dn.out_spec)
    w_cf = tuple(w.shape[i] for i in dn.rhs_spec)
    geom = transpose_geometry(op, y_cf, w_cf, strides, padding, output_padding, rhs_dilation, feature_group_count)
    geom = geom.replace(
        precision=_precision_arg(op, precision),
        out_dtype=_element_type(op, preferred_element_type),
        cpu_path=_cpu_path_arg(op, cpu_path, geom.stride, geom.dilation),
    )
    y_arr, w_arr = jnp.asarray(y), jnp.asarray(w)
    if tuple(dn.out_spec) != tuple(range(y.ndim)):
        y_arr = jnp.transpose(y_arr, dn.out_spec)
    if tuple(dn.rhs_spec) != tuple(range(w.ndim)):
        w_arr = jnp.transpose(w_arr, dn.rhs_spec)
    return y_arr, w_arr, geom, tuple(int(i) for i in np.argsort(dn.lhs_spec))

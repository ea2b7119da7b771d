"""The three operators as JAX primitives, with their rules, and the functions.

MindSpore's convolution family is closed under differentiation: with
``x`` the input, ``w`` the weight and ``y = conv2d(x, w)``,

    conv2d(x, w)                -> y      (MindSpore Conv2D)
    backprop_input(y, w)        -> x      (Conv2DBackpropInput, this project)
    backprop_filter(y, x)       -> w      (Conv2DBackpropFilter)

all share one ``ConvGeometry`` and each is bilinear. The transpose of each
w.r.t. either argument is one of the other two:

    conv2d:          ct_y -> x: backprop_input(ct_y, w)   ct_y -> w: backprop_filter(ct_y, x)
    backprop_input:  ct_x -> y: conv2d(ct_x, w)           ct_x -> w: backprop_filter(y, ct_x)
    backprop_filter: ct_w -> y: conv2d(x, ct_w)           ct_w -> x: backprop_input(y, ct_w)

So each is a primitive with a bilinear JVP (``ad.defbilinear``), those
transposes as its custom backward, a batching rule that re-binds the same
primitives, an abstract-eval rule, and per-platform lowerings through lax
(``mlir.lower_fun``). Every derivative of any order stays inside this family,
which is why forward mode, reverse mode and their compositions all work, and
why no derivative ever goes through XLA's own transpose of an lhs-dilated
convolution (the source of the CPU aborts on strided + dilated shapes).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _args, _formulations
from ._args import ConvGeometry

__all__ = [
    "backprop_filter_p",
    "backprop_input_p",
    "conv2d",
    "conv2d_backprop_filter",
    "conv2d_backprop_input",
    "conv2d_p",
]

conv2d_p = Primitive("mindspore_conv2d")
backprop_input_p = Primitive("conv2d_backprop_input")
backprop_filter_p = Primitive("conv2d_backprop_filter")

# For each primitive: which of (x, w, y) its two operands and its result are.
_ROLES = {
    conv2d_p: ("x", "w", "y"),
    backprop_input_p: ("y", "w", "x"),
    backprop_filter_p: ("y", "x", "w"),
}


def _shape(geom: ConvGeometry, role: str) -> tuple[int, ...]:
    return {"x": geom.x_shape, "w": geom.w_shape, "y": geom.y_shape}[role]


# -- evaluation -------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _jitted(prim: Primitive, geom: ConvGeometry, platform: str):
    """The primitive alone under ``jax.jit``, for eager calls.

    On CPU this one compilation gets ``_formulations.cpu_compiler_options()``
    (XLA's non-YNNPACK convolution backend): it holds only this primitive's
    computation, so nothing else is affected and no global flag is set.
    """
    fn = functools.partial(prim.bind, geom=geom)
    options = _formulations.cpu_compiler_options() if platform == "cpu" else {}
    return jax.jit(fn, compiler_options=options) if options else jax.jit(fn)


def _platform(*args) -> str:
    """Platform an eager call runs on: its operands' device, else the default device's."""
    for a in args:
        devices = getattr(a, "devices", None)
        if callable(devices):
            try:
                return next(iter(devices())).platform
            except Exception:  # deleted or abstract arrays: fall back to the default
                break
    default = jax.config.jax_default_device
    if default is not None and not isinstance(default, str):
        return default.platform
    return jax.default_backend() if default is None else str(default)


def _impl(prim: Primitive, a, b, *, geom: ConvGeometry):
    return _jitted(prim, geom, _platform(a, b))(a, b)


def _abstract_eval(prim: Primitive, a, b, *, geom: ConvGeometry):
    return jax.core.ShapedArray(_shape(geom, _ROLES[prim][2]), a.dtype)


# -- reverse mode: the custom backward as transposes ------------------------


def _conv2d_t_x(ct, x, w, *, geom):
    return backprop_input_p.bind(ct, w, geom=geom)


def _conv2d_t_w(ct, x, w, *, geom):
    return backprop_filter_p.bind(ct, x, geom=geom)


def _bpi_t_y(ct, y, w, *, geom):
    return conv2d_p.bind(ct, w, geom=geom)


def _bpi_t_w(ct, y, w, *, geom):
    return backprop_filter_p.bind(y, ct, geom=geom)


def _bpf_t_y(ct, y, x, *, geom):
    return conv2d_p.bind(x, ct, geom=geom)


def _bpf_t_x(ct, y, x, *, geom):
    return backprop_input_p.bind(y, ct, geom=geom)


# -- vmap -------------------------------------------------------------------


def _batch_rule(prim: Primitive, args, dims, *, geom: ConvGeometry):
    """Batch by re-binding the same primitive on a bigger geometry.

    * Only data operands (x or y, never w) batched and a data result: the
      vmapped axis folds into the batch N.
    * Otherwise every operand gets the axis (broadcast where unbatched) and it
      folds into the channels, as B times as many groups: channel block
      ``b * g + j`` of the new operator is group ``j`` of instance ``b``.
    """
    roles = _ROLES[prim]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    x, w, y = geom.x_shape, geom.w_shape, geom.y_shape
    res = _shape(geom, roles[2])
    w_batched = any(r == "w" and d is not None for r, d in zip(roles, dims))
    if roles[2] != "w" and not w_batched:
        folded = [a if d is None else _fold_batch(a, d, size) for a, d in zip(args, dims)]
        new = geom.with_shapes((size * x[0], *x[1:]), w, (size * y[0], *y[1:]))
        return prim.bind(*folded, geom=new).reshape(size, *res), 0

    def fold(a, d, role):
        a = jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        if role == "w":
            return a.reshape(size * a.shape[1], *a.shape[2:])
        return jnp.swapaxes(a, 0, 1).reshape(a.shape[1], size * a.shape[2], *a.shape[3:])

    folded = [fold(a, d, r) for a, d, r in zip(args, dims, roles)]
    new = geom.with_shapes(
        (x[0], size * x[1], *x[2:]), (size * w[0], *w[1:]), (y[0], size * y[1], *y[2:]), group=size * geom.group
    )
    out = prim.bind(*folded, geom=new)
    if roles[2] == "w":
        return out.reshape(size, *res), 0
    return jnp.swapaxes(out.reshape(res[0], size, *res[1:]), 0, 1), 0


def _fold_batch(a, d, size):
    a = jnp.moveaxis(a, d, 0)
    return a.reshape(size * a.shape[1], *a.shape[2:])


# -- registration -----------------------------------------------------------

_DEFAULT = {
    conv2d_p: _formulations.conv2d_default,
    backprop_input_p: _formulations.backprop_input_default,
    backprop_filter_p: _formulations.backprop_filter_default,
}
_CPU = {  # per-geometry dispatchers (docs/performance.md)
    conv2d_p: _formulations.cpu_conv2d,
    backprop_input_p: _formulations.cpu_backprop_input,
    backprop_filter_p: _formulations.cpu_backprop_filter,
}
_TRANSPOSES = {
    conv2d_p: (_conv2d_t_x, _conv2d_t_w),
    backprop_input_p: (_bpi_t_y, _bpi_t_w),
    backprop_filter_p: (_bpf_t_y, _bpf_t_x),
}

for _p in _ROLES:
    _p.def_impl(functools.partial(_impl, _p))
    _p.def_abstract_eval(functools.partial(_abstract_eval, _p))
    ad.defbilinear(_p, *_TRANSPOSES[_p])
    batching.primitive_batchers[_p] = functools.partial(_batch_rule, _p)
    mlir.register_lowering(_p, mlir.lower_fun(_DEFAULT[_p], multiple_results=False))
    mlir.register_lowering(_p, mlir.lower_fun(_CPU[_p], multiple_results=False), platform="cpu")


# -- public functions -------------------------------------------------------


def conv2d_backprop_input(
    dout: jax.Array,
    weight: jax.Array,
    input_size: Any,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore ``ops.Conv2DBackpropInput``: the input gradient of ``conv2d``.

    Also called transposed convolution. Returns ``dx`` of shape ``input_size``
    such that ``dx = vjp of conv2d(x, weight) w.r.t. x, applied to dout``.

    Args:
      dout: ``(N, C_out, Ho, Wo)`` (NCHW) or ``(N, Ho, Wo, C_out)`` (NHWC).
      weight: ``(C_out, C_in/group, KH, KW)`` (NCHW) or ``(C_out, KH, KW, C_in/group)`` (NHWC).
      input_size: the shape of the result, in the data format's order: a
        tuple/list of 4 ints or a concrete 1-D integer array. It must be
        static under ``jax.jit``.
      stride, dilation: int, ``(h, w)`` or ``(1, 1, h, w)``.
      pad_mode: ``"valid"``, ``"same"`` or ``"pad"`` (any letter case).
      pad: int or ``(top, bottom, left, right)``, used in ``pad`` mode.
      pad_list: in ``pad`` mode, a 4-tuple of ints >= 0 that replaces ``pad``.
      group: number of channel groups.
      data_format: ``"NCHW"`` or ``"NHWC"``.

    Returns:
      An array of shape ``input_size`` and ``dout``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> dout = jnp.ones((10, 32, 30, 30))
      >>> weight = jnp.ones((32, 32, 3, 3))
      >>> dx = jcb.conv2d_backprop_input(dout, weight, (10, 32, 32, 32))
      >>> dx.shape, float(dx[0, 0, 0, 0]), float(dx[0, 0, 2, 2])
      ((10, 32, 32, 32), 32.0, 288.0)
    """
    attrs = _args.normalize_attrs(
        "conv2d_backprop_input",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_backprop_input(attrs, dout, weight, input_size)


def conv2d(
    x: jax.Array,
    weight: jax.Array,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore ``ops.Conv2D``: a 2-D cross-correlation with MindSpore's padding.

    ``conv2d_backprop_input`` is exactly its VJP w.r.t. ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> y = jcb.conv2d(jnp.ones((1, 2, 7, 8)), jnp.ones((4, 2, 3, 3)), stride=2, pad_mode="same")
      >>> y.shape, float(y[0, 0, 1, 1])
      ((1, 4, 4, 4), 18.0)
    """
    attrs = _args.normalize_attrs(
        "conv2d",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_conv2d(attrs, x, weight)


def conv2d_backprop_filter(
    dout: jax.Array,
    x: jax.Array,
    weight_shape: Any,
    *,
    stride: int | tuple[int, ...] = 1,
    pad_mode: str = "valid",
    pad: int | tuple[int, int, int, int] = 0,
    pad_list: tuple[int, int, int, int] | None = None,
    dilation: int | tuple[int, ...] = 1,
    group: int = 1,
    data_format: str = "NCHW",
) -> jax.Array:
    """MindSpore ``ops.Conv2DBackpropFilter``: the weight gradient of ``conv2d``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> dw = jcb.conv2d_backprop_filter(jnp.ones((1, 4, 3, 3)), jnp.ones((1, 2, 5, 5)), (4, 2, 3, 3))
      >>> dw.shape, float(dw[0, 0, 0, 0])
      ((4, 2, 3, 3), 9.0)
    """
    attrs = _args.normalize_attrs(
        "conv2d_backprop_filter",
        pad_mode=pad_mode,
        pad=pad,
        pad_list=pad_list,
        stride=stride,
        dilation=dilation,
        group=group,
        data_format=data_format,
    )
    return apply_backprop_filter(attrs, dout, x, weight_shape)


def apply_backprop_input(attrs: _args.ConvAttrs, dout, weight, input_size) -> jax.Array:
    """Validated call of the input-gradient primitive (shared by class and function)."""
    dout, weight, geom = _args.bind_backprop_input(attrs, dout, weight, input_size)
    return _args.from_nchw(backprop_input_p.bind(dout, weight, geom=geom), attrs.data_format)


def apply_conv2d(attrs: _args.ConvAttrs, x, weight) -> jax.Array:
    x, weight, geom = _args.bind_conv2d(attrs, x, weight)
    return _args.from_nchw(conv2d_p.bind(x, weight, geom=geom), attrs.data_format)


def apply_backprop_filter(attrs: _args.ConvAttrs, dout, x, weight_shape) -> jax.Array:
    dout, x, geom = _args.bind_backprop_filter(attrs, dout, x, weight_shape)
    return _args.from_nchw(backprop_filter_p.bind(dout, x, geom=geom), attrs.data_format)

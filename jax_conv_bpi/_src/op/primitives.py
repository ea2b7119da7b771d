"""The three convolutions as JAX primitives, with their rules, for 1-3 spatial dims.

The convolution family is closed under differentiation. With ``x`` the input,
``w`` the weight and ``y = conv(x, w)`` (all sharing one ``ConvGeometry``):

    conv_p(x, w)             -> y     (MindSpore Conv2D / Conv3D, lax.conv_general_dilated)
    backprop_input_p(y, w)   -> x     (the transposed convolution)
    backprop_filter_p(y, x)  -> w     (the weight gradient)

Transpose rules as algebra
--------------------------
Write ``C(x, w)`` for the forward convolution: a bilinear map, so for fixed
``w`` it is a linear map ``C_w: x -> y`` and for fixed ``x`` a linear map
``C_x: w -> y``. By definition

    backprop_input(y, w)  = C_w^T y        backprop_filter(y, x) = C_x^T y.

Each primitive is bilinear, so its JVP is the sum of the two partial
linear maps (``ad.defbilinear``) and reverse mode needs the transpose of each
partial map, which follow from ``<C(x, w), y> = <x, C_w^T y> = <w, C_x^T y>``:

    conv:            ct_y -> x:  C_w^T ct_y     = backprop_input(ct_y, w)
                     ct_y -> w:  C_x^T ct_y     = backprop_filter(ct_y, x)
    backprop_input:  ct_x -> y:  (C_w^T)^T ct_x = conv(ct_x, w)
                     ct_x -> w:  <C_w^T y, ct_x> = <w, C_ct_x^T y>  =>  backprop_filter(y, ct_x)
    backprop_filter: ct_w -> y:  (C_x^T)^T ct_w = conv(x, ct_w)
                     ct_w -> x:  <C_x^T y, ct_w> = <y, C(x, ct_w)> = <x, C_ct_w^T y>  =>  backprop_input(y, ct_w)

Every derivative of every order therefore stays inside the family: forward
and reverse mode and their compositions all work, and no derivative goes
through XLA's own transpose of an lhs-dilated convolution.

Batching re-binds the same primitives on a bigger geometry (a batch of the
data operands folds into N; a batched weight folds into the channels as more
groups). Lowerings: one portable form (``portable.DEFAULT``) and one CPU
dispatcher (``dispatch.cpu_lowering``) per primitive, through
``mlir.lower_fun``. Under sharding (``sharding_rules``, ``sharding_compat``): the abstract
evaluation carries the result's sharding over explicit mesh axes, the
lowerings run per shard, and ``bind`` matches the operands' ``shard_map``
varying axes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jax_conv_bpi._src.base import validate
from jax_conv_bpi._src.base.geometry import OPERAND_NAMES, ConvGeometry
from jax_conv_bpi._src.lowering import dispatch, portable
from jax_conv_bpi._src.lowering import options as compiler_options
from jax_conv_bpi._src.native import kernels
from jax_conv_bpi._src.op import sharding_compat, sharding_rules

__all__ = ["backprop_filter_p", "backprop_input_p", "conv_p"]


class _ConvPrimitive(Primitive):
    """A primitive whose two operands vary over the same ``shard_map`` axes when it is bound.

    As ``lax`` does for its binary primitives: an invariant weight meeting a
    per-shard ``dout`` is cast to varying, so the result varies and reverse
    mode sums the weight's cotangent over the shards.
    """

    def bind(self, *args, **params):
        return super().bind(*sharding_compat.match_varying(*args), **params)


conv_p = _ConvPrimitive("conv_forward")
backprop_input_p = _ConvPrimitive("conv_backprop_input")
backprop_filter_p = _ConvPrimitive("conv_backprop_filter")

# For each primitive: its role, which of (x, w, y) its two operands and its result are.
_ROLE = {conv_p: "conv", backprop_input_p: "backprop_input", backprop_filter_p: "backprop_filter"}
_OPERANDS: dict[Primitive, tuple[str, str, str]] = {
    conv_p: ("x", "w", "y"),
    backprop_input_p: ("y", "w", "x"),
    backprop_filter_p: ("y", "x", "w"),
}


def _shape(geom: ConvGeometry, role: str) -> tuple[int, ...]:
    return {"x": geom.x_shape, "w": geom.w_shape, "y": geom.y_shape}[role]


# -- evaluation -------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _jitted(prim: Primitive, geom: ConvGeometry, platform: str):
    """The primitive alone under ``jax.jit``, for eager calls.

    On CPU this one compilation gets ``cpu_compiler_options()``: it holds only
    this primitive's computation, so nothing else is affected.
    """
    fn = functools.partial(prim.bind, geom=geom)
    options = compiler_options.cpu_compiler_options() if platform == "cpu" else {}
    return jax.jit(fn, compiler_options=options) if options else jax.jit(fn)


def _platform(*args) -> str:
    """Platform an eager call runs on: its operands' device, else the default device's."""
    for a in args:
        devices: Callable[[], Iterable[Any]] | None = getattr(a, "devices", None)  # jax.Array.devices
        if callable(devices):
            try:
                return next(iter(devices())).platform
            except Exception:  # deleted or abstract arrays: fall back to the default
                break
    default = jax.config.jax_default_device  # pyright: ignore[reportAttributeAccessIssue]  # config options are attributes set at run time
    if default is not None and not isinstance(default, str):
        return default.platform
    return jax.default_backend() if default is None else str(default)


def _impl(prim: Primitive, a, b, *, geom: ConvGeometry):
    return _jitted(prim, geom, _platform(a, b))(a, b)


def _abstract_eval(prim: Primitive, a, b, *, geom: ConvGeometry):
    """Result shape, dtype and sharding (``sharding_rules``), after checking the operands against the geometry.

    Every entry point's primitives pass here, so two more checks are made
    once for all of them, at trace time: a result too large to allocate
    (``validate.check_allocatable``: XLA's failed allocation may abort the
    process) and a forced input-gradient path that does not serve the
    geometry (``dispatch.check_forced_path``) raise a ``ValueError``.
    """
    roles = _OPERANDS[prim]
    for pos, (aval, role) in enumerate(zip((a, b), roles[:2])):
        want = _shape(geom, role)
        if tuple(aval.shape) != want:
            raise ValueError(
                f"{prim.name}: operand {pos} (the {OPERAND_NAMES[role]}) has shape {tuple(aval.shape)}, but the geometry "
                f"expects {want} (channels-first); bind the primitive with operands of the geometry's shapes"
            )
        if not jnp.issubdtype(aval.dtype, jnp.floating):
            raise TypeError(
                f"{prim.name}: operand {pos} (the {OPERAND_NAMES[role]}) must be floating, got {aval.dtype}"
            )
    if a.dtype != b.dtype:
        raise TypeError(
            f"{prim.name}: both operands must have the same dtype, got {a.dtype} ({OPERAND_NAMES[roles[0]]}) and "
            f"{b.dtype} ({OPERAND_NAMES[roles[1]]}); cast one of them (no implicit promotion)"
        )
    dtype = portable.out_dtype(geom, a)
    validate.check_allocatable(
        prim.name, f"result (the {OPERAND_NAMES[roles[2]]}, channels-first)", _shape(geom, roles[2]), dtype
    )
    if prim is backprop_input_p and geom.cpu_path is not None:
        try:
            dispatch.check_forced_path(geom)
        except ValueError as e:
            raise ValueError(f"{prim.name}: {e}") from None
    plan = sharding_rules.plan(prim.name, roles, a, b, geom)
    if plan is None:
        return jax.core.ShapedArray(_shape(geom, roles[2]), dtype)
    like = a if sharding_compat.mesh_and_spec(a) is not None else b
    return sharding_compat.result_aval(_shape(geom, roles[2]), dtype, like, plan.mesh, plan.out_partitions)


# -- reverse mode: the custom backward as transposes ------------------------
# The cotangent may arrive in the result dtype (``preferred_element_type``);
# each transpose computes in the primal operands' dtype and returns the
# dtype of the operand it is the cotangent of.


def _numerics(geom: ConvGeometry, dtype) -> ConvGeometry:
    return geom.replace(out_dtype=None if geom.out_dtype is None else jnp.dtype(dtype).name)


def _cast(ct, like):
    return ct.astype(like.aval.dtype if hasattr(like, "aval") else like.dtype)


def _conv_t_x(ct, x, w, *, geom):
    return backprop_input_p.bind(_cast(ct, w), w, geom=_numerics(geom, x.aval.dtype))


def _conv_t_w(ct, x, w, *, geom):
    return backprop_filter_p.bind(_cast(ct, x), x, geom=_numerics(geom, w.aval.dtype))


def _bpi_t_y(ct, y, w, *, geom):
    return conv_p.bind(_cast(ct, w), w, geom=_numerics(geom, y.aval.dtype))


def _bpi_t_w(ct, y, w, *, geom):
    return backprop_filter_p.bind(y, _cast(ct, y), geom=_numerics(geom, w.aval.dtype))


def _bpf_t_y(ct, y, x, *, geom):
    return conv_p.bind(x, _cast(ct, x), geom=_numerics(geom, y.aval.dtype))


def _bpf_t_x(ct, y, x, *, geom):
    return backprop_input_p.bind(y, _cast(ct, y), geom=_numerics(geom, x.aval.dtype))


# -- vmap -------------------------------------------------------------------


def _batch_rule(prim: Primitive, args, dims, *, geom: ConvGeometry):
    """Batch by re-binding the same primitive on a bigger geometry.

    * Only data operands (x or y, never w) batched and a data result: the
      vmapped axis folds into the batch N.
    * Otherwise every operand gets the axis (broadcast where unbatched) and it
      folds into the channels, as B times as many groups: channel block
      ``b * g + j`` of the new operator is group ``j`` of instance ``b``.
    * A batch of size 0 has nothing to compute: zeros of the batched shape.
    """
    roles = _OPERANDS[prim]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    res = _shape(geom, roles[2])
    if size == 0:
        unbatched = (jax.core.ShapedArray(_shape(geom, r), a.dtype) for a, r in zip(args, roles[:2]))
        aval = _abstract_eval(prim, *unbatched, geom=geom)
        return jnp.zeros((0, *res), aval.dtype), 0
    x, w, y = geom.x_shape, geom.w_shape, geom.y_shape
    w_batched = any(r == "w" and d is not None for r, d in zip(roles, dims))
    if roles[2] != "w" and not w_batched:
        folded = [a if d is None else _fold_batch(a, d, size) for a, d in zip(args, dims)]
        new = geom.replace(x_shape=(size * x[0], *x[1:]), y_shape=(size * y[0], *y[1:]))
        return prim.bind(*folded, geom=new).reshape(size, *res), 0

    def fold(a, d, role):
        a = jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        if role == "w":
            return a.reshape(size * a.shape[1], *a.shape[2:])
        return jnp.swapaxes(a, 0, 1).reshape(a.shape[1], size * a.shape[2], *a.shape[3:])

    folded = [fold(a, d, r) for a, d, r in zip(args, dims, roles)]
    new = geom.replace(
        x_shape=(x[0], size * x[1], *x[2:]),
        w_shape=(size * w[0], *w[1:]),
        y_shape=(y[0], size * y[1], *y[2:]),
        group=size * geom.group,
    )
    out = prim.bind(*folded, geom=new)
    if roles[2] == "w":
        return out.reshape(size, *res), 0
    return jnp.swapaxes(out.reshape(res[0], size, *res[1:]), 0, 1), 0


def _fold_batch(a, d, size):
    a = jnp.moveaxis(a, d, 0)
    return a.reshape(size * a.shape[1], *a.shape[2:])


# -- registration -----------------------------------------------------------


def _lowered(prim, formulation):
    return mlir.lower_fun(sharding_rules.partitioned(prim.name, _OPERANDS[prim], formulation), multiple_results=False)


def _cpu_lowering(prim, role):
    """The CPU dispatcher's lowering; the native kernel's variant where it applies and fits the program."""
    plain = _lowered(prim, dispatch.cpu_lowering[role])
    if role not in dispatch.cpu_lowering_native:
        return plain
    native = _lowered(prim, dispatch.cpu_lowering_native[role])

    def rule(ctx, *args, geom: ConvGeometry):
        wanted = dispatch.wants_native(role, geom, [a.dtype for a in ctx.avals_in])
        return (native if wanted and kernels.usable(ctx) else plain)(ctx, *args, geom=geom)

    return rule


_TRANSPOSES = {
    conv_p: (_conv_t_x, _conv_t_w),
    backprop_input_p: (_bpi_t_y, _bpi_t_w),
    backprop_filter_p: (_bpf_t_y, _bpf_t_x),
}

for _p, _role in _ROLE.items():
    _p.def_impl(functools.partial(_impl, _p))
    _p.def_abstract_eval(functools.partial(_abstract_eval, _p))
    ad.defbilinear(_p, *_TRANSPOSES[_p])
    batching.primitive_batchers[_p] = functools.partial(_batch_rule, _p)
    mlir.register_lowering(_p, _lowered(_p, portable.DEFAULT[_role]))
    mlir.register_lowering(_p, _cpu_lowering(_p, _role), platform="cpu")
sharding_compat.register_replication_rules(*_ROLE)

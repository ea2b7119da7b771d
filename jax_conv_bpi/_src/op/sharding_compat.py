"""Version shims for JAX's sharding in types, in one place (used by ``sharding_rules`` and ``primitives``).

JAX 0.4.36 (the lowest version pyproject claims) has no mesh axis types: its
abstract values carry no sharding the op must honour, and every function here
is then a no-op (``TYPED`` is False) but one: ``register_replication_rules``,
which gives the primitives the table entries its ``shard_map(check_rep=True)``
needs.
From JAX 0.6 abstract values carry two things a custom primitive must
propagate itself:

* the sharding over ``Explicit`` mesh axes (``jax.make_mesh``'s default from
  JAX 0.9), read with ``jax.typeof(x).sharding``;
* inside ``shard_map``, the manual axes a value varies over (``check_vma``):
  called ``aval.vma`` up to JAX 0.9 and ``aval.mat.varying`` from 0.10; cast
  with ``jax.lax.pvary`` up to 0.10 and ``jax.lax.pcast(..., to="varying")``
  from 0.8.2.

Tested on JAX 0.4.36 and 0.10.2. When the lowest supported JAX has axis types,
``TYPED`` becomes True and the fallbacks below can go.
"""

from __future__ import annotations

import jax
import jax.core
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "TYPED",
    "explicit_axes",
    "match_varying",
    "mesh_and_spec",
    "partition_spec",
    "register_replication_rules",
    "reshard",
    "result_aval",
    "shard_map",
]

TYPED = hasattr(jax.sharding, "AxisType") and hasattr(jax, "typeof")
"""Whether this JAX has mesh axis types (sharding in abstract values)."""


def _aval(x):
    return jax.typeof(x) if TYPED else jax.core.get_aval(x)  # pyright: ignore[reportAttributeAccessIssue]  # JAX < 0.10 only (removed in 0.10)


def _varying(aval) -> frozenset:
    """The manual mesh axes ``aval`` varies over (empty outside ``shard_map`` or with ``check_vma=False``)."""
    mat = getattr(aval, "mat", None)  # JAX >= 0.10
    if mat is not None:
        return frozenset(getattr(mat, "varying", ()))
    return frozenset(getattr(aval, "vma", ()))  # JAX 0.6 - 0.9


def match_varying(a, b):
    """``a`` and ``b`` cast to vary over the union of their manual axes.

    What ``lax`` does for its own binary primitives: a weight that is the same
    on every shard (invariant) meets a per-shard ``dout`` (varying), so the
    result varies and, under reverse mode, the weight's cotangent is summed
    over the shards (the transpose of the cast is a ``psum``).
    """
    if not TYPED:
        return a, b
    va, vb = _varying(_aval(a)), _varying(_aval(b))
    if va == vb:
        return a, b
    union = va | vb
    return _to_varying(a, union - va), _to_varying(b, union - vb)


def _to_varying(x, axes: frozenset):
    if not axes:
        return x
    names = tuple(sorted(axes, key=str))
    if hasattr(jax.lax, "pcast"):  # JAX >= 0.8.2
        return jax.lax.pcast(x, names, to="varying")
    return jax.lax.pvary(x, names)  # pyright: ignore[reportAttributeAccessIssue]  # JAX 0.6.1 - 0.8.1 only


def mesh_and_spec(aval):
    """``(mesh, partitions)`` of ``aval``'s sharding in types, or ``None`` when it has no mesh.

    ``partitions`` has one entry per axis, each a tuple of the explicit mesh
    axes that axis is split over (``()``: not split). Auto axes never appear
    in types; manual axes (inside ``shard_map``) neither.
    """
    if not TYPED:
        return None
    sharding = getattr(aval, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.mesh.empty:
        return None
    spec = tuple(sharding.spec) + (None,) * (len(aval.shape) - len(sharding.spec))
    return sharding.mesh, tuple(() if p is None else (p,) if isinstance(p, str) else tuple(p) for p in spec)


def explicit_axes(mesh) -> frozenset:
    """Names of the mesh's ``Explicit`` axes."""
    explicit = jax.sharding.AxisType.Explicit
    return frozenset(n for n, t in zip(mesh.axis_names, mesh.axis_types) if t == explicit)


def partition_spec(partitions) -> P:
    """A ``PartitionSpec`` from ``mesh_and_spec``'s partitions."""
    return P(*(None if not p else p[0] if len(p) == 1 else tuple(p) for p in partitions))


def result_aval(shape, dtype, like, mesh=None, partitions=None):
    """The primitive's result: ``shape`` and ``dtype``, sharded as ``partitions`` over ``mesh`` when given,
    varying over the manual axes of ``like`` (an operand, after ``match_varying``)."""
    if not TYPED or mesh is None:
        return jax.core.ShapedArray(shape, dtype)
    sharding = NamedSharding(mesh, partition_spec(partitions))
    return like.update(shape=tuple(shape), dtype=dtype, weak_type=False, sharding=sharding)


def shard_map(f, *, mesh, in_specs, out_specs, axis_names):
    """``jax.shard_map`` manual over ``axis_names`` only (the experimental one, with ``auto=``, where JAX
    has axis types but no ``jax.shard_map`` yet: JAX 0.5 - 0.6.0, not tested)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, axis_names=set(axis_names))
    from jax.experimental.shard_map import shard_map as experimental_shard_map

    auto = frozenset(mesh.axis_names) - frozenset(axis_names)
    return experimental_shard_map(f, mesh, in_specs, out_specs, check_rep=False, auto=auto)  # pyright: ignore[reportCallIssue]  # JAX 0.5 - 0.6.0 only: `auto=` is gone in later JAX


def register_replication_rules(*prims) -> None:
    """Give ``prims`` the replication rules of JAX's own binary primitives, for JAX before varying types.

    There (JAX 0.4.36 among them) ``jax.experimental.shard_map``'s ``check_rep``
    looks each primitive up in a table and refuses one it does not know. The
    standard rules are the ones ``lax`` registers for its convolution: the
    result is replicated over the mesh axes both operands are, and an operand
    replicated over more axes is first broadcast, whose transpose is the
    ``psum`` that sums a replicated weight's cotangent over the shards. Later
    JAX reads the varying axes from the types instead (``match_varying``) and
    has no such table: nothing to do.
    """
    try:
        import jax.experimental.shard_map as legacy
    except ImportError:  # pragma: no cover - every supported JAX has the module
        return
    check = getattr(legacy, "register_standard_check", None)
    rewrite = getattr(legacy, "register_standard_rewrite", None)
    if check is None or rewrite is None:
        return
    for prim in prims:
        check(prim)
        rewrite(prim)


def reshard(x, mesh, partitions):
    """``jax.sharding.reshard`` of ``x`` onto ``partitions`` over ``mesh``."""
    return jax.sharding.reshard(x, NamedSharding(mesh, partition_spec(partitions)))

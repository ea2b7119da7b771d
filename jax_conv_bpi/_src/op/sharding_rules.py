"""The three primitives under sharding in types: their sharding rule and their partitioned lowering.

Under ``Explicit`` mesh axes a primitive's abstract value carries its result's
sharding, and the lowering must produce exactly that sharding without
gathering an operand. Each operand's first two axes are one of

    N  the batch        I  the input channels (C_in)        O  the output channels (C_out)

(``x = (N, I, *spatial)``, ``y = (N, O, *spatial)``, ``w = (O, I/g, *kernel)``),
so the rule is an einsum's: a letter sharded on one operand is sharded the
same way wherever it appears, the result keeps the sharding of its two
letters, and a letter the result lacks is contracted, its shards summed with
one ``psum``:

    conv(x, w) -> y            I contracted     batch-sharded x -> batch-sharded y
    backprop_input(y, w) -> x  O contracted     batch-sharded y -> batch-sharded x
    backprop_filter(y, x) -> w N contracted     batch-sharded y, x -> replicated w (one all-reduce)

The lowering runs the ordinary formulation on each shard (``shard_map`` over
the explicit axes, with the per-shard geometry), so no formulation ever sees a
sharded operand: a batch-sharded operand is never gathered, whatever reshapes
the formulation does. Where ``lax.conv_general_dilated`` needs an
``out_sharding`` (a sharded contracted channel axis), these primitives give the
reduced result: replicated over the contracted channel axis, batch sharding
kept. Not supported, with an error that says what to do: sharded spatial or
kernel axes, sharded channels with ``group > 1``, and one letter sharded
differently on the two operands. Auto axes never appear in types (XLA's
partitioner places those), nor do ``shard_map``'s manual axes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax

from jax_conv_bpi._src.base.geometry import OPERAND_NAMES, ConvGeometry
from jax_conv_bpi._src.lowering import portable
from jax_conv_bpi._src.op import sharding_compat

__all__ = ["Plan", "partitioned", "plan"]

LETTERS = {"x": ("N", "I"), "w": ("O", "I"), "y": ("N", "O")}
_WHAT = {"N": "batch", "I": "input-channel", "O": "output-channel"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one primitive call is partitioned over the explicit axes of ``mesh``.

    ``in_partitions`` / ``out_partitions``: per array axis, the mesh axes it is
    split over; ``reduce_axes``: the mesh axes the per-shard results are summed
    over; ``local``: the geometry of one shard.
    """

    mesh: Any
    in_partitions: tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]
    out_partitions: tuple[tuple[str, ...], ...]
    reduce_axes: tuple[str, ...]
    local: ConvGeometry

    @property
    def sharded(self) -> bool:
        return any(p for parts in self.in_partitions for p in parts)


def _fail(name: str, msg: str):
    raise ValueError(
        f"{name}: {msg}. Under explicit mesh axes this op shards the batch and (with group=1) the channels; "
        "reshard the operands first (jax.sharding.reshard), or use a mesh with AxisType.Auto or shard_map"
    )


def plan(name: str, roles: tuple[str, str, str], a, b, geom: ConvGeometry) -> Plan | None:
    """The partitioning of ``name(a, b)`` (abstract values whose roles are ``roles[:2]``, result ``roles[2]``).

    ``None`` when neither operand has a mesh in its type (no axis types, or no
    sharded argument in sight): nothing to partition.
    """
    typed = [sharding_compat.mesh_and_spec(v) for v in (a, b)]
    meshes = [t[0] for t in typed if t is not None]
    if not meshes:
        return None
    mesh = meshes[0]
    if any(m != mesh for m in meshes[1:]):
        _fail(name, f"the operands live on different meshes ({meshes[0]} and {meshes[1]})")
    letters: dict[str, tuple[str, ...]] = {}
    for t, role in zip(typed, roles[:2]):
        if t is None:
            continue
        parts = t[1]
        for axis, p in enumerate(parts[2:]):
            if p:
                kind = "kernel" if role == "w" else "spatial"
                _fail(name, f"the {OPERAND_NAMES[role]}'s {kind} axis {axis} is sharded over mesh axes {p}")
        for letter, p in zip(LETTERS[role], parts[:2]):
            if not p:
                continue
            have = letters.setdefault(letter, p)
            if have != p:
                _fail(name, f"the {_WHAT[letter]} axis is sharded over {have} on one operand and {p} on the other")
    owners: dict[str, str] = {}
    for letter, p in letters.items():
        for ax in p:
            if owners.setdefault(ax, letter) != letter:
                _fail(name, f"mesh axis {ax!r} shards both the {_WHAT[owners[ax]]} and the {_WHAT[letter]} axes")
    if geom.group != 1 and ("I" in letters or "O" in letters):
        _fail(name, f"channels are sharded with group={geom.group}")
    nd = geom.ndim

    def partitions(role):
        return tuple(letters.get(letter, ()) for letter in LETTERS[role]) + ((),) * nd

    count = {letter: math.prod(mesh.shape[ax] for ax in p) for letter, p in letters.items()}
    sizes = {"N": geom.x_shape[0], "I": geom.x_shape[1], "O": geom.y_shape[1]}
    for letter, k in count.items():
        if sizes[letter] % k:
            _fail(name, f"the {_WHAT[letter]} size {sizes[letter]} is not divisible by its {k} shards")
    n, i, o = (sizes[letter] // count.get(letter, 1) for letter in "NIO")
    local = geom.replace(
        x_shape=(n, i, *geom.x_shape[2:]),
        y_shape=(n, o, *geom.y_shape[2:]),
        w_shape=(o, geom.w_shape[1] // count.get("I", 1), *geom.w_shape[2:]),
    )
    out_letters = LETTERS[roles[2]]
    reduce_axes = tuple(ax for letter, p in letters.items() if letter not in out_letters for ax in p)
    return Plan(mesh, (partitions(roles[0]), partitions(roles[1])), partitions(roles[2]), reduce_axes, local)


def partitioned(name: str, roles: tuple[str, str, str], lowering):
    """``lowering`` (a formulation ``(a, b, *, geom)``) run per shard when the operands are sharded in types."""

    @functools.wraps(lowering)
    def lowered(a, b, *, geom: ConvGeometry):
        p = plan(name, roles, jax.typeof(a), jax.typeof(b), geom) if sharding_compat.TYPED else None
        if p is None or not p.sharded:
            return lowering(a, b, geom=geom)
        dtype = portable.out_dtype(geom, a)
        local = p.local
        if p.reduce_axes and dtype.itemsize < 4:  # sum the shards in float32, round once (as unsharded)
            local = local.replace(out_dtype="float32")

        def shard(a, b):
            out = lowering(a, b, geom=local)
            return jax.lax.psum(out, p.reduce_axes).astype(dtype) if p.reduce_axes else out

        specs = [sharding_compat.partition_spec(parts) for parts in p.in_partitions]
        # A letter sharded on one operand only: slice the other one the same way (no communication).
        a, b = (_fit(v, parts, p.mesh) for v, parts in zip((a, b), p.in_partitions))
        return sharding_compat.shard_map(
            shard,
            mesh=p.mesh,
            in_specs=tuple(specs),
            out_specs=sharding_compat.partition_spec(p.out_partitions),
            axis_names=sharding_compat.explicit_axes(p.mesh),
        )(a, b)

    return lowered


def _fit(v, partitions, mesh):
    typed = sharding_compat.mesh_and_spec(jax.typeof(v))
    have = typed[1] if typed is not None else ((),) * len(partitions)
    return v if have == partitions else sharding_compat.reshard(v, mesh, partitions)

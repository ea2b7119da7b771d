"""CPU formulations of the input gradient (transposed convolution), for 1-3 spatial dims.

None uses lhs dilation: XLA CPU aborts the process on some strided + dilated
lhs-dilated convolutions.

Phase decomposition
-------------------
On one axis, row ``o`` of ``dout`` and tap ``i`` of the kernel land on row
``r = o*s + i*d`` of the padded transposed output, i.e. on input row
``r - lo``. Splitting ``r = q*s + rho`` gives ``s`` phases; tap ``i`` with
``i*d = a*s + rho`` feeds phase ``rho`` at ``q = o + a``. Each phase is a plain
(true) correlation of ``dout`` with its own taps, and the output interleaves
the phases. In N-D a phase is one ``rho`` per axis, so the phases with taps
are the product of each axis's phases with taps; the others are zeros. Only
phases with taps are computed (``phase_split`` lists no others), and the
interleave places zero blocks for whole runs of empty phases, so kernel 1
under stride 300 costs one phase, not 90,000. The paths differ in how they
compute a phase: one matmul for every tap (``gemm``), one matmul per phase
(``phase_gemm``), one convolution per phase (``phase_conv``), per-tap
multiply-adds (``direct``), or all phases as one convolution (``subpixel``).

Program size
------------
``overlap_add`` and ``interleave`` unroll one term per tap and per phase with
taps, so a program, and its compile time, would grow with the kernel and (up
to the kernel) with the product of the strides: a 16x16x16 kernel under
stride 16 was 4,096 phases. ``unrolled_terms`` counts them; beyond
``UNROLLED_MAX_TERMS`` ``gemm``, ``direct`` and ``phase_gemm`` compute every
tap's (or phase's) planes in one op and ``col2im`` assembles them with a few
gathers per axis, and ``phase_conv`` is refused (``dispatch.refusal``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv_bpi._src.base import arithmetic
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import portable as L
from jax_conv_bpi._src.lowering import xla_cpu
from jax_conv_bpi._src.native import kernels

__all__ = ["PATHS"]

_SPATIAL_LETTERS = "hwd"
_KERNEL_LETTERS = "ijk"


def phase_split(k: int, s: int, d: int) -> dict[int, tuple[tuple[int, int], ...]]:
    """Phases ``rho`` with at least one tap, each with its taps ``(i, a)``, ``i * d = a * s + rho``, increasing ``i``."""
    phases: dict[int, list[tuple[int, int]]] = {}
    for i in range(k):
        a, rho = divmod(i * d, s)
        phases.setdefault(rho, []).append((i, a))
    return {rho: tuple(phases[rho]) for rho in sorted(phases)}


@dataclasses.dataclass(frozen=True)
class AxisPlan:
    """One axis: phase rows ``[q0, q1)`` and the phases with taps.

    ``[q0 * s, q1 * s)`` covers padded rows ``[lo, lo + size)``; the interleave
    is cropped to them afterwards.
    """

    q0: int
    q1: int
    stride: int
    phases: dict[int, tuple[tuple[int, int], ...]]

    @property
    def length(self) -> int:
        return self.q1 - self.q0


def plans(geom: ConvGeometry) -> list[AxisPlan]:
    out = []
    for a in range(geom.ndim):
        size, _, k, s, d, (lo, _) = geom.axis(a)
        out.append(AxisPlan(lo // s, -(-(size + lo) // s), s, phase_split(k, s, d)))
    return out


def interleave(phase, geom: ConvGeometry, axis_plans: list[AxisPlan], dtype):
    """Assemble the cropped input gradient from ``phase(taps)`` (N, C, *lengths) per non-empty phase.

    ``taps`` is one tuple of ``(i, a)`` per axis. The phases are laid out as
    (N, C, L_0, s_0, L_1, s_1, ...), with one zero block per run of empty
    phases on each axis, then reshaped to (N, C, L_0 * s_0, ...) and cropped.
    """
    nd = geom.ndim
    lead = tuple(geom.x_shape[:2])
    lengths = [p.length for p in axis_plans]

    def build(a: int, taps: tuple):
        if a == nd:
            return phase(taps)
        tail = []
        for b in range(a + 1, nd):
            tail += [lengths[b], axis_plans[b].stride]
        piece_shape = (*lead, *lengths[: a + 1], 1, *tail)
        pieces, nxt = [], 0
        for rho, t in axis_plans[a].phases.items():
            if rho > nxt:
                pieces.append(jnp.zeros(piece_shape[: 3 + a] + (rho - nxt,) + piece_shape[4 + a :], dtype))
            pieces.append(jnp.expand_dims(build(a + 1, (*taps, t)), 3 + a))
            nxt = rho + 1
        s = axis_plans[a].stride
        if nxt < s:
            pieces.append(jnp.zeros(piece_shape[: 3 + a] + (s - nxt,) + piece_shape[4 + a :], dtype))
        return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=3 + a)

    full = build(0, ())
    full = full.reshape(*lead, *(lengths[a] * axis_plans[a].stride for a in range(nd)))
    starts = [geom.padding[a][0] - axis_plans[a].q0 * axis_plans[a].stride for a in range(nd)]
    idx = (slice(None), slice(None)) + tuple(slice(st, st + n) for st, n in zip(starts, geom.x_shape[2:]))
    return full[idx]


UNROLLED_MAX_TERMS = 128
"""Unrolled terms a formulation may emit before its program, and compile time, are too large (``unrolled_terms``).

Above it ``gemm``, ``direct`` and ``phase_gemm`` compute every tap's (or
phase's) planes in one op and assemble them with ``col2im`` (a few ops per
axis); ``phase_conv``, whose point is one convolution per phase, is refused
(``dispatch.refusal``). Measured compile times (XLA's default options, a busy
2-core machine): about 2.5 ms per ``overlap_add`` term, 15-27 ms per
``phase_gemm`` phase, 10-17 ms per ``phase_conv`` phase, about 4 ms per
``direct`` tap and output channel of its group; a 16x16x16 kernel unrolled took
29 s to compile (``gemm``), 0.4 s through ``col2im``.
"""
PER_PHASE_OP = 4
"""A per-phase matmul or convolution, in ``unrolled_terms``' terms."""
DIRECT_MAX_GROUP_OUTPUTS = 16
"""``direct`` adds a group's output channels with unrolled adds (``xla_cpu.small_sum``) up to this many."""


def phase_count(geom: ConvGeometry) -> int:
    """The phases with at least one tap (the product over the axes of each axis's)."""
    return math.prod(len(phase_split(*geom.axis(a)[2:5])) for a in range(geom.ndim))


def gemm_in_place(geom: ConvGeometry) -> bool:
    """``gemm``'s special case: every tap its own phase, unshifted (kernel equal to the stride, no dilation, 1 group)."""
    return geom.kernel == geom.stride and set(geom.dilation) == {1} and geom.group == 1


def unrolled_terms(name: str, geom: ConvGeometry) -> int:
    """The terms formulation ``name`` unrolls for ``geom`` (0: a program of a fixed number of ops).

    ``gemm``: one shifted add per tap and one interleave piece per phase with
    taps (none in its in-place case); ``direct``: one multiply-add per tap and
    output channel of its group, one piece per phase; ``phase_gemm``: a matmul
    and a piece per phase, one shifted add per tap; ``phase_conv``: a
    convolution and a piece per phase. A matmul or convolution counts
    ``PER_PHASE_OP`` terms (its compile time against a shifted add's).
    """
    taps, phases = math.prod(geom.kernel), phase_count(geom)
    if name == "gemm":
        return 0 if gemm_in_place(geom) else taps + phases
    if name == "direct":
        return taps * (geom.w_shape[0] // geom.group) + phases
    if name == "phase_gemm":
        return taps + (PER_PHASE_OP + 1) * phases
    if name == "phase_conv":
        return (PER_PHASE_OP + 1) * phases
    return 0


def unrolled(name: str, geom: ConvGeometry) -> bool:
    """Formulation ``name`` unrolls its taps and phases for ``geom`` (else one op for all: ``col2im``)."""
    return unrolled_terms(name, geom) <= UNROLLED_MAX_TERMS


def _shift(x, starts, lengths):
    """``x[start_a : start_a + length_a]`` on every spatial axis, zero-filled outside (starts may be < 0)."""
    cfg = [(0, 0, 0), (0, 0, 0)] + [(-st, st + n - x.shape[2 + a], 0) for a, (st, n) in enumerate(zip(starts, lengths))]
    if all(c == (0, 0, 0) for c in cfg):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def overlap_add(phase_terms, geom: ConvGeometry, dtype):
    """Phases as sums of shifted per-tap terms.

    ``phase_terms(taps)`` returns ``tap(idx)``: the (N, C_in, *out) term of
    kernel tap ``idx`` (one index per axis) of that phase, so a caller can
    compute one phase's terms at a time.
    """
    axis_plans = plans(geom)
    lengths = [p.length for p in axis_plans]

    def phase(taps):
        tap = phase_terms(taps)
        total = None
        for combo in itertools.product(*taps):
            idx = tuple(i for i, _ in combo)
            starts = [p.q0 - a for p, (_, a) in zip(axis_plans, combo)]
            term = _shift(tap(idx), starts, lengths)
            total = term if total is None else total + term
        return total

    return interleave(phase, geom, axis_plans, dtype)


def axis_tables(plan: AxisPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis's phases with taps as dense ``(R, T)`` tables, and where each phase goes.

    ``index[r, j]``: tap ``i`` of the ``j``-th tap of the ``r``-th phase with
    taps (``-1``: none, the phase has fewer than ``T``); ``offset[r, j]``: its
    row offset ``a``; ``slot[rho]``: the row among the ``R`` of phase ``rho``
    (``R``: a phase without taps).
    """
    phases = list(plan.phases.values())
    width = max(map(len, phases))
    index = np.full((len(phases), width), -1, np.int32)
    offset = np.zeros((len(phases), width), np.int32)
    for r, taps in enumerate(phases):
        for j, (i, a) in enumerate(taps):
            index[r, j], offset[r, j] = i, a
    slot = np.full(plan.stride, len(phases), np.int32)
    slot[list(plan.phases)] = np.arange(len(phases), dtype=np.int32)
    return index, offset, slot


def _pad_axis(x, axis: int, lo: int, hi: int):
    """``lo`` / ``hi`` zeros before / after ``axis`` (negative: a crop)."""
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def col2im(planes, geom: ConvGeometry, *, per_phase: bool = False):
    """The cropped input gradient from every tap's plane at once: a few ops per axis, whatever the stride or kernel.

    ``planes`` is (N, C_in, P_0, o_0, P_1, o_1, ...): on each axis ``P`` planes
    of ``dout``'s rows, one per tap (``P = k``), or with ``per_phase`` one per
    entry of ``axis_tables``' ``(R, T)`` table (``P = R * T``, the planes of
    missing taps zeros). Axis by axis, input row ``t`` is padded row ``r = t +
    lo``, of phase ``r % s`` and phase row ``q = r // s``, and sums ``plane[p,
    q - a]`` over its phase's taps. That is one gather of the ``(L, R, T)``
    entries (phase row, phase with taps, tap of the phase; missing ones read
    an appended zero plane), a sum over ``T``, one gather placing the ``R``
    phases among the ``s`` (zeros for phases without taps), a reshape to ``L *
    s`` rows and a window to the input's rows. The indices are computed in the
    program from the ``(R, T)`` tables, so neither the program nor its
    constants grow with the stride, the kernel or the sizes; the work is the
    planes' and the result's size (``overlap_add`` unrolls one shifted add per
    tap and one piece per phase instead).
    """
    out = planes
    for ax, plan in enumerate(plans(geom)):
        pos = 2 + ax
        planes_ax, rows_ax = out.shape[pos], out.shape[pos + 1]
        index, offset, slot = axis_tables(plan)
        if per_phase:
            plane = np.arange(index.size, dtype=np.int32).reshape(index.shape)
        else:
            plane = index
        rows = jnp.arange(plan.q0, plan.q1, dtype=jnp.int32)[:, None, None] - offset  # (L, R, T)
        valid = (index >= 0) & (rows >= 0) & (rows < rows_ax)
        lead = (slice(None),) * pos
        # (..., L, R, T, ...): entry (l, r, j) is plane[r, j] at row q0 + l - offset[r, j], or a zero plane
        padded = _pad_axis(out, pos, 0, 1)
        taps = (jnp.where(valid, plane, planes_ax), jnp.where(valid, rows, 0))
        phases = padded.at[lead + taps].get(mode="promise_in_bounds").sum(axis=pos + 2)  # (..., L, R, ...)
        if len(index) < plan.stride:  # phases without taps: zero rows
            phases = _pad_axis(phases, pos + 1, 0, 1).at[lead + (slice(None), slot)].get(mode="promise_in_bounds")
        shape = phases.shape
        full = phases.reshape(*shape[:pos], shape[pos] * shape[pos + 1], *shape[pos + 2 :])
        start = geom.padding[ax][0] - plan.q0 * plan.stride
        out = _pad_axis(full, pos, -start, start + geom.x_shape[pos] - full.shape[pos])
    return out


def _gemm_operands(dout, w, geom: ConvGeometry):
    g = geom.group
    n, c_out, *o = geom.y_shape
    _, c_in_g, *k = geom.w_shape
    return dout.reshape(n, g, c_out // g, *o), w.reshape(g, c_out // g, c_in_g, *k)


def _gemm_spec(nd: int, interleaved: bool = False) -> str:
    """The per-tap planes' matmul: (N, g, C_out/g, *out) x (g, C_out/g, C_in/g, *kernel) -> (N, g, C_in/g, ...).

    The result's tail is ``*kernel, *out``, or with ``interleaved`` ``k_0, o_0, k_1, o_1, ...`` (``col2im``'s layout).
    """
    sp, kl = _SPATIAL_LETTERS[:nd], _KERNEL_LETTERS[:nd]
    tail = "".join(kl[a] + sp[a] for a in range(nd)) if interleaved else kl + sp
    return f"ngo{sp},goc{kl}->ngc{tail}"


def backprop_input_gemm(dout, w, *, geom: ConvGeometry):
    """One matmul for every tap of the kernel (``C_out`` contracted), then an overlap-add.

    The matmul's result holds one (N, C_in, *out) plane per tap, about
    ``prod(kernel) / prod(stride)`` times the input gradient's size; each
    phase is the sum of its taps' shifted planes. For a kernel equal to the
    stride (U-Net / V-Net ``k2s2``, 1x1 kernels at stride 1) every phase is one
    unshifted tap: one matmul plus a transpose. Meant for few taps per phase.
    """
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    acc = L.acc_dtype(dout.dtype)
    nd = geom.ndim
    n, c_out, *o = geom.y_shape
    c_in = geom.x_shape[1]
    k = geom.kernel
    if gemm_in_place(geom):
        # Tap idx is phase idx, unshifted: one (C_in*K, N*pixels) matmul
        # contracting the weight's leading axis, both operands in place, then
        # one transpose.
        z = lax.dot_general(
            w.reshape(c_out, c_in * math.prod(k)),
            dout.reshape(n, c_out, math.prod(o)),
            (((0,), (1,)), ((), ())),
            precision=geom.precision,
            preferred_element_type=acc,
        )
        z = z.reshape(c_in, *k, n, *o)
        perm = [nd + 1, 0] + [ax for a in range(nd) for ax in (nd + 2 + a, 1 + a)]
        full = z.transpose(perm).reshape(n, c_in, *(o[a] * k[a] for a in range(nd)))
        starts = [lo for lo, _ in geom.padding]
        return L.window(full, starts, geom.x_shape[2:]).astype(L.out_dtype(geom, dout))
    d5, w5 = _gemm_operands(dout, w, geom)
    if not unrolled("gemm", geom):
        z = L.einsum(_gemm_spec(nd, interleaved=True), d5, w5, geom)
        return col2im(z.reshape(n, c_in, *z.shape[3:]), geom).astype(L.out_dtype(geom, dout))
    z = L.einsum(_gemm_spec(nd), d5, w5, geom).reshape(n, c_in, *k, *o)
    lead = (slice(None), slice(None))
    return overlap_add(lambda taps: lambda idx: z[lead + idx], geom, acc).astype(L.out_dtype(geom, dout))


def backprop_input_phase_gemm(dout, w, *, geom: ConvGeometry):
    """Per phase, one matmul for that phase's taps, then its overlap-add.

    Like ``gemm`` but only one phase's per-tap planes are live at a time (the
    many-tap ``k7s2`` stem with few input channels). Beyond
    ``UNROLLED_MAX_TERMS`` the phases are one batched matmul instead: the
    weight gathered into each axis's ``(R, T)`` phase table (zeros where a
    phase has fewer than ``T`` taps), then ``col2im``.
    """
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    acc = L.acc_dtype(dout.dtype)
    nd = geom.ndim
    n, _, *o = geom.y_shape
    d5, w5 = _gemm_operands(dout, w, geom)
    lead = (slice(None), slice(None))
    if not unrolled("phase_gemm", geom):
        for a, plan in enumerate(plans(geom)):
            index = axis_tables(plan)[0].ravel()
            padded = _pad_axis(w5, 3 + a, 0, 1)  # tap k: zeros, for the table's missing taps
            w5 = jnp.take(padded, np.where(index >= 0, index, geom.kernel[a]), axis=3 + a)
        z = L.einsum(_gemm_spec(nd, interleaved=True), d5, w5, geom)
        z = z.reshape(n, geom.x_shape[1], *z.shape[3:])
        return col2im(z, geom, per_phase=True).astype(L.out_dtype(geom, dout))

    def phase_terms(taps):
        ids = [[i for i, _ in t] for t in taps]
        wp = w5
        for a, sel in enumerate(ids):
            wp = jnp.take(wp, np.asarray(sel), axis=3 + a)
        z = L.einsum(_gemm_spec(nd), d5, wp, geom).reshape(n, geom.x_shape[1], *map(len, ids), *o)
        pos = [{i: p for p, i in enumerate(sel)} for sel in ids]
        return lambda idx: z[lead + tuple(pos[a][i] for a, i in enumerate(idx))]

    return overlap_add(phase_terms, geom, acc).astype(L.out_dtype(geom, dout))


def backprop_input_direct(dout, w, *, geom: ConvGeometry):
    """Per-tap fused multiply-add, no convolution and no matmul.

    Every tap is ``dout`` times a per-channel weight, summed over the few
    output channels of its group, shifted into its phase. XLA fuses each
    phase into one loop: the form for depthwise and small groups, where XLA
    CPU's grouped convolution (``feature_group_count``) is very slow. Beyond
    ``UNROLLED_MAX_TERMS`` every tap's plane is one broadcast multiply-add,
    assembled by ``col2im``.
    """
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    acc = L.acc_dtype(dout.dtype)
    g, nd = geom.group, geom.ndim
    n, c_out, *o = geom.y_shape
    _, c_in_g, *k = geom.w_shape
    og = c_out // g
    if not unrolled("direct", geom):
        if og > DIRECT_MAX_GROUP_OUTPUTS:  # a forced direct over many channels: contract them as gemm does
            z = L.einsum(_gemm_spec(nd, interleaved=True), *_gemm_operands(dout, w, geom), geom)
            return col2im(z.reshape(n, g * c_in_g, *z.shape[3:]), geom).astype(L.out_dtype(geom, dout))
        # (N, g, og, 1, [1, o_a] per axis) x (g, og, C_in/g, [k_a, 1] per axis), summed over og
        d_shape = [n, g, og, 1] + [v for a in range(nd) for v in (1, o[a])]
        w_shape = [1, g, og, c_in_g] + [v for a in range(nd) for v in (k[a], 1)]
        planes = dout.astype(acc).reshape(d_shape) * w.astype(acc).reshape(w_shape)
        planes = xla_cpu.small_sum(planes, 2).reshape(n, g * c_in_g, *planes.shape[4:])
        return col2im(planes, geom).astype(L.out_dtype(geom, dout))
    d = dout.astype(acc).reshape(n, g, og, 1, *o)
    w5 = w.astype(acc).reshape(g, og, c_in_g, *k)

    def tap(idx):
        t = d * w5[(slice(None),) * 3 + idx][(None, ...) + (None,) * nd]
        t = xla_cpu.small_sum(t, 2)  # og is at most DIRECT_MAX_CHANNEL_PRODUCT
        return t.reshape(n, g * c_in_g, *o)

    return overlap_add(lambda taps: tap, geom, acc).astype(L.out_dtype(geom, dout))


def backprop_input_phase_conv(dout, w, *, geom: ConvGeometry):
    """One stride-1 convolution per non-empty phase, each with only its own taps.

    No wasted taps when the kernel is not a multiple of the stride (``k3s2``,
    ``k7s2``), no work at all for empty phases (1x1 kernel under a stride).
    A phase's taps are evenly spaced (``d / gcd(d, s)`` apart), so each phase
    is an ordinary dilated correlation with a reversed tap order.
    """
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    acc = L.acc_dtype(dout.dtype)
    axis_plans = plans(geom)
    o = geom.y_shape[2:]

    def axis_conv(taps, plan: AxisPlan, out: int):
        idx = [i for i, _ in reversed(taps)]
        a_min, a_max = taps[0][1], taps[-1][1]
        e = taps[1][1] - taps[0][1] if len(taps) > 1 else 1
        lo = a_max - plan.q0
        return idx, e, (lo, plan.length + (a_max - a_min) - lo - out)

    def phase(taps):
        specs = [axis_conv(t, p, n) for t, p, n in zip(taps, axis_plans, o)]
        v = w
        for a, (ids, _, _) in enumerate(specs):
            v = jnp.take(v, np.asarray(ids), axis=2 + a)
        pos, crops = L.split_negative([p for _, _, p in specs])
        return xla_cpu.conv(
            L.crop(dout, crops),
            L.grouped_transpose(v, geom.group),
            geom,
            padding=pos,
            rhs_dilation=[e for _, e, _ in specs],
            groups=geom.group,
        )

    return interleave(phase, geom, axis_plans, acc).astype(L.out_dtype(geom, dout))


def phase_table(k: int, s: int, d: int) -> tuple[int, np.ndarray]:
    """Dense (s, A) table of the sub-pixel form: ``table[rho][A-1-a] = i``; ``k`` marks "no tap"."""
    taps = ((k - 1) * d) // s + 1
    table = np.full((s, taps), k, dtype=np.int64)
    for rho, phase in phase_split(k, s, d).items():
        for i, a in phase:
            table[rho, taps - 1 - a] = i
    return taps, table


def subpixel_geometry(geom: ConvGeometry) -> ConvGeometry:
    """The stride-1 convolution inside ``subpixel``: ``dout`` with the phases' taps, ``C_in * prod(stride)`` outputs."""
    a_len = [phase_table(k, st, d)[0] for k, st, d in zip(geom.kernel, geom.stride, geom.dilation)]
    n, c_in, *_ = geom.x_shape
    o = geom.y_shape[2:]
    return ConvGeometry(
        x_shape=geom.y_shape,
        w_shape=(c_in * math.prod(geom.stride), geom.w_shape[0] // geom.group, *a_len),
        y_shape=(n, c_in * math.prod(geom.stride), *(o[a] + a_len[a] - 1 for a in range(geom.ndim))),
        stride=(1,) * geom.ndim,
        dilation=(1,) * geom.ndim,
        padding=tuple((t - 1, t - 1) for t in a_len),
        group=geom.group,
        precision=geom.precision,
    )


def _subpixel(dout, w, geom: ConvGeometry, conv):
    """``subpixel`` with its stride-1 convolution ``conv(dout, v, sub)`` (``sub``: ``subpixel_geometry``)."""
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    nd, g = geom.ndim, geom.group
    n, c_in, *_ = geom.x_shape
    c_out, c_in_g, *_ = geom.w_shape
    s = geom.stride
    tables = [phase_table(k, st, d) for k, st, d in zip(geom.kernel, s, geom.dilation)]
    a_len = [t for t, _ in tables]
    wext = jnp.pad(w, [(0, 0), (0, 0)] + [(0, 1)] * nd)  # tap index k -> 0
    index = []
    for a, (_, table) in enumerate(tables):
        shape = [1] * (2 * nd)
        shape[2 * a], shape[2 * a + 1] = table.shape
        index.append(table.reshape(shape))
    v = wext[(slice(None), slice(None), *index)]  # (C_out, C_in/g, s0, A0, s1, A1, ...)
    v = v.reshape(g, c_out // g, c_in_g, *v.shape[2:])
    perm = [0, 2] + [3 + 2 * a for a in range(nd)] + [1] + [4 + 2 * a for a in range(nd)]
    v = v.transpose(perm).reshape(c_in * math.prod(s), c_out // g, *a_len)
    sub = subpixel_geometry(geom)
    out = conv(dout, v, sub)
    q = sub.y_shape[2:]
    out = out.reshape(n, c_in, *s, *q)
    perm = [0, 1] + [ax for a in range(nd) for ax in (2 + nd + a, 2 + a)]
    out = out.transpose(perm).reshape(n, c_in, *(q[a] * s[a] for a in range(nd)))
    return L.window(out, [lo for lo, _ in geom.padding], geom.x_shape[2:]).astype(L.out_dtype(geom, dout))


def backprop_input_subpixel(dout, w, *, geom: ConvGeometry):
    """Input gradient as one stride-1 convolution plus a pixel interleave.

    Output phase ``(rho_0, rho_1, ...)`` of the full transposed convolution is
    a plain (true) convolution of ``dout`` with the taps of that phase. All
    phases are one convolution with ``C_in * prod(stride)`` output channels
    (taps a phase lacks are zeros); a reshape interleaves them and a window
    cuts the input's rows (zero-filled below the last covered row).
    """

    def conv(dout, v, sub):
        return xla_cpu.conv(dout, v, geom, padding=sub.padding, groups=sub.group)

    return _subpixel(dout, w, geom, conv)


def backprop_input_subpixel_native(dout, w, *, geom: ConvGeometry):
    """``subpixel`` with its convolution by the native kernel (ungrouped, float32; ``dispatch`` picks it
    where that convolution is direct: ``native.rules.direct``)."""
    if geom.group != 1:
        raise ValueError(f"the native sub-pixel input gradient needs 1 group, got {geom.group}")
    return _subpixel(dout, w, geom, lambda dout, v, sub: kernels.conv_forward(dout, v, geom=sub))


def _flipped_padding(geom: ConvGeometry) -> tuple[tuple[int, int], ...]:
    """Stride 1: the ``(lo, hi)`` padding (negative: a crop) of the flipped correlation that gives the input gradient."""
    return tuple(arithmetic.lhs_dilated_padding(*geom.axis(a)[:5], geom.padding[a][0]) for a in range(geom.ndim))


def backprop_input_flipped_conv(dout, w, *, geom: ConvGeometry):
    """Stride 1 only: the flipped correlation of ``backprop_input_default`` (no lhs dilation).

    Through ``xla_cpu.conv`` (off YNNPACK in 1-D / 2-D, depth-folded in 3-D).
    """
    if set(geom.stride) != {1}:
        raise ValueError(f"the flipped_conv path needs stride 1 on every axis, got {geom.stride}")
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    pos, crops = L.split_negative(_flipped_padding(geom))
    w_flipped = L.flip_transpose_weight(w, geom.group)
    out = xla_cpu.conv(dout, w_flipped, geom, padding=pos, rhs_dilation=geom.dilation, groups=geom.group, off_ynn=True)
    return L.crop(out, crops).astype(L.out_dtype(geom, dout))


def backprop_input_native(dout, w, *, geom: ConvGeometry):
    """Stride 1, ungrouped, float32: ``flipped_conv``'s correlation by the native kernel's forward convolution.

    Its padding may be negative (a crop): the kernel reads from any offset and
    writes exactly the input's size. Not in ``PATHS``, which lists the pure-XLA
    forms (``dispatch.wants_native``, ``kernels.usable``).
    """
    if set(geom.stride) != {1} or geom.group != 1:
        raise ValueError(f"the native input gradient needs stride 1 and 1 group, got {geom.stride}, {geom.group}")
    if L.zero_result(geom):
        return L.zeros(geom.x_shape, geom, dout)
    w_flipped = L.flip_transpose_weight(w, 1)
    correlation = ConvGeometry(
        x_shape=geom.y_shape,
        w_shape=tuple(w_flipped.shape),
        y_shape=geom.x_shape,
        stride=geom.stride,
        dilation=geom.dilation,
        padding=_flipped_padding(geom),
    )
    return kernels.conv_forward(dout, w_flipped, geom=correlation).astype(L.out_dtype(geom, dout))


PATHS = {
    "lhs_dilated": L.backprop_input_default,
    "flipped_conv": backprop_input_flipped_conv,
    "subpixel": backprop_input_subpixel,
    "phase_conv": backprop_input_phase_conv,
    "gemm": backprop_input_gemm,
    "phase_gemm": backprop_input_phase_gemm,
    "direct": backprop_input_direct,
}
"""Every input-gradient formulation by name; each takes ``(dout, w, *, geom)``.

``lhs_dilated`` is the GPU/TPU form; on CPU it is safe only without dilation
under a stride. ``flipped_conv`` needs stride 1. The others accept every geometry.
"""

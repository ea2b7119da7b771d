"""Every CPU formulation in 1-D and 3-D against the float64 N-D references.

The grid is written in ``conv_transpose``'s vocabulary (``y`` and ``w`` shapes,
strides, ``(lo, hi)`` padding, ``output_padding``, dilation, groups); the
result size and the forward padding it implies (a negative ``hi`` for an
``output_padding`` of at least the stride) come from PyTorch's rule in
``tests/support``, not from the library. Per rank, it covers stride 1,
strides, dilations, strided + dilated, groups, depthwise and channel
multipliers, asymmetric and negative-``hi`` padding, ``output_padding >=
stride`` with ``dilation > stride``, a zero batch, a zero-size ``y``, a kernel
equal to the stride and a 1-wide kernel under a stride.

* every input-gradient path of ``cpu_input_grad.PATHS``, called directly on
  the geometry, and through ``jcb.conv_transpose(..., cpu_path=name)``;
* the dispatched ``conv_transpose`` and its VJP (the forward convolution and
  the weight gradient through the CPU dispatcher);
* every forward and weight-gradient path of ``cpu_dense``.

``flipped_conv`` is stride-1 only; ``lhs_dilated`` is left out where a stride
meets a dilation (XLA CPU may abort the process there, see ``test_hazard.py``).
Each test compiles one program holding all geometries of its rank.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import cpu_dense, cpu_input_grad
from jax_conv_bpi._src.native import kernels
from jax_conv_bpi._src.op.args import transpose_geometry

from .support import (
    ND_CASES,
    assert_close,
    compile_and_run,
    random_arrays,
    ref_conv,
    ref_filter,
    ref_input_grad,
)

PATHS = sorted(cpu_input_grad.PATHS)


def applicable(name: str, geom: ConvGeometry) -> bool:
    if name == "flipped_conv":
        return set(geom.stride) == {1}
    if name == "lhs_dilated":  # strided + dilated lhs-dilated convolutions can abort XLA CPU
        return set(geom.stride) == {1} or set(geom.dilation) == {1}
    return True


@functools.cache
def inputs(rank: int) -> dict[str, tuple[np.ndarray, ...]]:
    """float32 (y, w, x) per case (x: the forward input / the VJP's cotangent), seeded by the case's position."""
    return {
        cid: tuple(random_arrays(17 * rank + k, c.y, c.w, c.geom.x_shape, dtype=np.float32))
        for k, (cid, c) in enumerate(ND_CASES[rank].items())
    }


def _f64(a):
    return np.asarray(a, np.float64)


# ---------------------------------------------------------------------------
# The grid is what it claims
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_grid_covers_every_feature(rank):
    geoms = {cid: c.geom for cid, c in ND_CASES[rank].items()}
    assert all(g.ndim == rank for g in geoms.values())

    def some(pred):
        return [cid for cid, g in geoms.items() if pred(g)]

    stride1 = lambda g: set(g.stride) == {1}  # noqa: E731
    strided = lambda g: max(g.stride) > 1  # noqa: E731
    dilated = lambda g: max(g.dilation) > 1  # noqa: E731
    assert some(stride1) and some(strided) and some(lambda g: dilated(g) and stride1(g))
    assert some(lambda g: strided(g) and dilated(g))
    assert some(lambda g: 1 < g.group < g.x_shape[1]) and some(lambda g: g.group == g.x_shape[1] > 1)
    assert some(lambda g: g.w_shape[0] > g.group == g.x_shape[1])  # channel multiplier
    assert some(lambda g: any(lo != hi for lo, hi in g.padding))
    neg = some(lambda g: min(hi for _, hi in g.padding) < 0)
    assert neg and some(lambda g: strided(g) and min(hi for _, hi in g.padding) < 0)
    for cid in neg:  # negative hi only from output_padding >= stride, which needs dilation > stride
        c = ND_CASES[rank][cid]
        assert any(p >= s and d > s for p, s, d in zip(c.output_padding, c.stride, c.dilation)), cid
    assert some(lambda g: g.y_shape[0] == 0) and some(lambda g: 0 in g.y_shape[2:])
    assert some(lambda g: g.kernel == g.stride and strided(g))
    assert some(lambda g: set(g.kernel) == {1} and strided(g))
    assert some(lambda g: max(lo for lo, _ in g.padding) >= max(g.kernel))
    for name in PATHS:  # every path runs on most of the grid
        assert len(some(functools.partial(applicable, name))) >= 4, name


@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_gate_builds_the_same_geometry(rank):
    """``conv_transpose``'s gate gives the geometry of PyTorch's size rule (no value computed here is the gate's)."""
    for cid, c in ND_CASES[rank].items():
        got = transpose_geometry("t", c.y, c.w, c.stride, c.padding, c.output_padding, c.dilation, c.group)
        assert got == c.geom, cid


# ---------------------------------------------------------------------------
# Input-gradient paths: direct call and through the public function
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_input_grad_path(rank, name):
    """Path ``name`` called on the geometry and forced through ``conv_transpose(cpu_path=name)``."""
    chosen = [cid for cid, c in ND_CASES[rank].items() if applicable(name, c.geom)]
    path = cpu_input_grad.PATHS[name]
    data = inputs(rank)

    def program(args):
        out = {}
        for cid in chosen:
            c, (y, w) = ND_CASES[rank][cid], args[cid]
            out[cid] = (path(y, w, geom=c.geom), c.call(y, w, cpu_path=name))
        return out

    outs = compile_and_run(program, {cid: data[cid][:2] for cid in chosen})
    for cid in chosen:
        c = ND_CASES[rank][cid]
        y, w, _ = data[cid]
        expected = ref_input_grad(c.geom, _f64(y), _f64(w))
        assert expected.shape == c.geom.x_shape
        direct, public = outs[cid]
        assert direct.dtype == public.dtype == np.float32, cid
        assert_close(direct, expected, f"{name} {rank}-D {cid}: path")
        assert_close(public, expected, f"{name} {rank}-D {cid}: conv_transpose(cpu_path={name!r})")


@pytest.mark.parametrize("name", ["direct", "gemm", "phase_gemm"])
@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_input_grad_path_all_taps_at_once(rank, name, monkeypatch):
    """The forms past ``UNROLLED_MAX_TERMS`` (every tap's or phase's planes in one op, ``col2im``), on the whole grid.

    The bound set to 0 makes every geometry take them: the same references as the unrolled forms.
    """
    monkeypatch.setattr(cpu_input_grad, "UNROLLED_MAX_TERMS", 0)
    cases = ND_CASES[rank]
    assert not any(cpu_input_grad.unrolled(name, c.geom) for c in cases.values() if c.geom.kernel != c.geom.stride)
    path = cpu_input_grad.PATHS[name]
    data = inputs(rank)

    def program(args):
        return {cid: (path(*args[cid], geom=c.geom), c.call(*args[cid], cpu_path=name)) for cid, c in cases.items()}

    outs = compile_and_run(program, {cid: data[cid][:2] for cid in cases})
    for cid, c in cases.items():
        y, w, _ = data[cid]
        expected = ref_input_grad(c.geom, _f64(y), _f64(w))
        for got, how in zip(outs[cid], ("path", f"conv_transpose(cpu_path={name!r})")):
            assert_close(got, expected, f"{name} (all taps at once) {rank}-D {cid}: {how}")


def test_lhs_dilated_and_flipped_conv_are_refused_where_they_do_not_apply():
    c = ND_CASES[1]["s2_d2"]
    y, w = (np.zeros(s, np.float32) for s in (c.y, c.w))
    for name in ("lhs_dilated", "flipped_conv"):
        with pytest.raises(ValueError, match="cpu_path"):
            c.call(y, w, cpu_path=name)
    with pytest.raises(ValueError, match="stride"):
        cpu_input_grad.PATHS["flipped_conv"](y, w, geom=ND_CASES[1]["s2_k4_p1_op1"].geom)


@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_dispatched_conv_transpose_and_its_vjp(rank):
    """The dispatcher's choice, and the VJP w.r.t. ``y`` (forward conv) and ``w`` (weight gradient)."""
    data = inputs(rank)

    def program(args):
        out = {}
        for cid, (y, w, x) in args.items():
            res, pull = jax.vjp(ND_CASES[rank][cid].call, y, w)
            out[cid] = (res, *pull(x))
        return out

    outs = compile_and_run(program, data)
    for cid, c in ND_CASES[rank].items():
        y, w, x = (_f64(a) for a in data[cid])
        # <conv_transpose(y, w), x> = <y, conv(x, w)> = <w, backprop_filter(y, x)>
        expected = (ref_input_grad(c.geom, y, w), ref_conv(c.geom, x, w), ref_filter(c.geom, y, x))
        for what, got, want in zip(("result", "d/dy", "d/dw"), outs[cid], expected):
            assert got.dtype == np.float32
            assert_close(got, want, f"{rank}-D {cid}: {what}", scale_atol=2e-5)


# ---------------------------------------------------------------------------
# Forward and weight-gradient paths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rank", sorted(ND_CASES))
def test_forward_and_filter_paths(rank):
    data = inputs(rank)

    def program(args):
        out = {}
        for cid, (y, w, x) in args.items():
            g = ND_CASES[rank][cid].geom
            out[cid] = (
                {name: p(x, w, geom=g) for name, p in cpu_dense.CONV_PATHS.items()},
                {name: p(y, x, geom=g) for name, p in cpu_dense.BACKPROP_FILTER_PATHS.items()},
            )
        return out

    outs = compile_and_run(program, data)
    for cid, c in ND_CASES[rank].items():
        y, w, x = (_f64(a) for a in data[cid])
        conv_ref, filt_ref = ref_conv(c.geom, x, w), ref_filter(c.geom, y, x)
        assert conv_ref.shape == c.geom.y_shape and filt_ref.shape == c.geom.w_shape
        convs, filters = outs[cid]
        assert set(convs) == set(cpu_dense.CONV_PATHS) and set(filters) == set(cpu_dense.BACKPROP_FILTER_PATHS)
        for name, got in convs.items():
            assert_close(got, conv_ref, f"{rank}-D {cid}: conv path {name}")
        for name, got in filters.items():
            assert_close(got, filt_ref, f"{rank}-D {cid}: filter path {name}", scale_atol=2e-5)


_ONE_D = [  # (y, w, stride, padding, dilation, group): the 1-D suite's kinds of layer, small
    ((2, 8, 9), (8, 4, 16), 8, (4, 4), 1, 1),  # HiFi-GAN k16 s8 p4
    ((2, 6, 11), (6, 3, 4), 2, (1, 1), 1, 1),  # HiFi-GAN k4 s2 p1
    ((1, 32, 7), (32, 1, 16), 8, (0, 0), 1, 1),  # Conv-TasNet decoder, one output channel
    ((2, 24, 10), (24, 4, 3), 1, (2, 0), 2, 3),  # stride 1, dilated, grouped
]


def _hlo_op_counts(fn, *args) -> dict[str, int]:
    """Ops of the optimised CPU program, without the layout-only ``bitcast`` / ``reshape`` / ``copy``."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    counts: dict[str, int] = {}
    for op in re.findall(r"= \S+ ([a-z][\w-]*)\(", text):
        if op not in ("bitcast", "reshape", "copy", "parameter", "tuple", "get-tuple-element"):
            counts[op] = counts.get(op, 0) + 1
    return counts


@pytest.mark.parametrize("case", range(len(_ONE_D)))
def test_one_d_compiles_to_the_two_d_program_of_height_1(case):
    """1-D is never slower than 2-D of height 1: on CPU both compile to the same operations.

    For the op, every operation; for the gradient of a loss through it w.r.t.
    ``y`` (which adds the forward convolution) the convolutions, matmuls and
    native kernel calls (the loss's own elementwise code fuses differently per
    rank). The weight
    gradient is the exception: outside ``direct``, 1-D runs XLA's own 1-D
    backward-filter convolution (one convolution, no matmul), which was faster,
    or the native kernel where it is loaded.
    """
    y_shape, w_shape, s, pad, d, g = _ONE_D[case]
    y, w = (jnp.asarray(a) for a in random_arrays(case, y_shape, w_shape, dtype=np.float32))

    def one(y, w):
        return jcb.conv_transpose(y, w, s, [pad], rhs_dilation=d, feature_group_count=g)

    def two(y, w):
        return jcb.conv_transpose(y, w, (1, s), [(0, 0), pad], rhs_dilation=(1, d), feature_group_count=g)

    def loss(f, argnums):
        return jax.grad(lambda y, w: (f(y, w) ** 2).sum(), argnums=argnums)

    def heavy(fn, *args):
        return {op: n for op, n in _hlo_op_counts(fn, *args).items() if op in ("convolution", "dot", "custom-call")}

    y2, w2 = y[:, :, None], w[:, :, None]
    assert _hlo_op_counts(one, y, w) == _hlo_op_counts(two, y2, w2)
    by_y = [heavy(loss(f, 0), *a) for f, a in ((one, (y, w)), (two, (y2, w2)))]
    assert by_y[0] == by_y[1] and by_y[0], by_y
    # d/dw = the weight gradient of y and the op's cotangent: the op's program plus one convolution,
    # or plus the native kernel's custom call where it is loaded (ungrouped float32, test_native.py)
    by_w = heavy(loss(one, 1), y, w)
    op_only = heavy(one, y, w)
    native = jax.jit(loss(one, 1)).lower(y, w).as_text().count(kernels.TARGET)
    assert native == (1 if kernels.load()[0] and g == 1 else 0), native
    grown = "custom-call" if native else "convolution"
    extra = {grown: op_only.get(grown, 0) + 1}
    assert by_w == {**op_only, **extra}, (by_w, op_only)
    np.testing.assert_array_equal(np.asarray(one(y, w)), np.asarray(two(y2, w2))[:, :, 0])

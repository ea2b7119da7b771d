"""``jcb.conv_transpose``, the JAX-native N-D transposed convolution, against independent oracles.

Oracles (none of them is this library):

* ``jax.vjp`` w.r.t. ``x`` of ``lax.conv_general_dilated`` (the docstring's
  definition), and ``jax.linear_transpose`` of the same forward convolution,
  with lax's own ``'SAME'`` / ``'VALID'`` handling: the string is passed to lax
  as it is. For an ``output_padding`` of at least the stride (possible only
  when the dilation is larger), the forward convolution would have more
  outputs than ``y``; the oracle is then the forward convolution sliced to
  its first ``y``-sized outputs (the operator ``arithmetic`` eq. (7) describes);
* ``reference.conv_transpose_nd``, float64 NumPy loops, for every case;
* ``lax.conv_transpose(..., transpose_kernel=True)`` where the docstring claims
  equality.

XLA CPU may abort the process on lhs-dilated convolutions of strided *and*
dilated geometries (see ``test_hazard.py``); lax's VJP and ``lax.conv_transpose``
are such convolutions, so in this process they only run where no axis has both
a stride and a dilation above 1. Those cases use the float64 reference, and the
``lax.conv_transpose`` comparison of strided + dilated shapes runs in a child
process.

The result size is PyTorch's rule, written here from the docstring:
``(o - 1) * s - lo - hi + d * (k - 1) + 1 + output_padding`` per axis
(``o * s`` for ``'SAME'``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jax_conv_bpi as jcb

from .support import (
    assert_close,
    compile_and_run,
    enable_x64,
    lhs_dilated_convolutions,
    random_arrays,
    reference,
    requires_cpu,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
HIGHEST = lax.Precision.HIGHEST


def channels_first(nd: int) -> tuple[str, str, str]:
    sp = SPATIAL[nd]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def channels_last(nd: int) -> tuple[str, str, str]:
    sp = SPATIAL[nd]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _layout_shape(spec: str, sizes: dict) -> tuple[int, ...]:
    return tuple(sizes[ch] for ch in spec)


def _to_cf(a, spec: str, cf: str):
    """An array laid out as ``spec`` in the channels-first order ``cf`` (same letters)."""
    return np.transpose(np.asarray(a), [spec.index(ch) for ch in cf])


def _from_cf(a, spec: str, cf: str):
    return np.transpose(np.asarray(a), [cf.index(ch) for ch in spec])


@dataclasses.dataclass(frozen=True)
class Case:
    """One ``conv_transpose(y, w, strides, padding, ...)`` call; shapes in the layouts of ``dn``."""

    name: str
    y_sp: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...] | int
    padding: object  # as passed: 'SAME', 'VALID', an int or (lo, hi) pairs
    output_padding: tuple[int, ...] | int = 0
    dilation: tuple[int, ...] | int = 1
    group: int = 1
    c_out: int = 4  # y's channels, w's O
    c_in: int = 4  # the result's channels
    batch: int = 1
    dn: tuple[str, str, str] | None = None  # None: the default (channels-first)

    @property
    def nd(self) -> int:
        return len(self.y_sp)

    @property
    def s(self):
        return _per_axis(self.strides, self.nd)

    @property
    def d(self):
        return _per_axis(self.dilation, self.nd)

    @property
    def op(self):
        return _per_axis(self.output_padding, self.nd)

    @property
    def specs(self) -> tuple[str, str, str]:
        return self.dn or channels_first(self.nd)

    @property
    def lax_safe(self) -> bool:
        """No axis with both a stride and a dilation above 1 (XLA CPU's hazard)."""
        return not any(s > 1 and d > 1 for s, d in zip(self.s, self.d))

    @property
    def x_sp(self) -> tuple[int, ...]:
        """PyTorch's rule; ``o * s - output_padding`` for 'SAME' / 'SAME_LOWER'."""
        if self.padding in ("SAME", "SAME_LOWER"):
            return tuple(o * s - p for o, s, p in zip(self.y_sp, self.s, self.op))
        return tuple(
            (o - 1) * s - lo - hi + d * (k - 1) + 1 + p
            for o, k, s, d, (lo, hi), p in zip(self.y_sp, self.kernel, self.s, self.d, self.forward_pairs, self.op)
        )

    @property
    def forward_pairs(self) -> tuple[tuple[int, int], ...]:
        """The forward convolution's (lo, hi) padding; for the strings lax's own pairs for the size ``x_sp``."""
        if self.padding in ("SAME", "SAME_LOWER"):
            ek = [d * (k - 1) + 1 for k, d in zip(self.kernel, self.d)]
            return tuple(tuple(p) for p in lax.padtype_to_pads(self.x_sp, ek, self.s, self.padding))
        if self.padding == "VALID":
            return ((0, 0),) * self.nd
        if isinstance(self.padding, int):
            return ((self.padding, self.padding),) * self.nd
        return tuple(tuple(p) for p in self.padding)

    @property
    def shapes(self):
        """(y, w, x) shapes in the layouts of ``dn``."""
        letters = [ch for ch in self.specs[0] if ch not in "NC"]
        y = {"N": self.batch, "C": self.c_out, **dict(zip(letters, self.y_sp))}
        w = {"O": self.c_out, "I": self.c_in // self.group, **dict(zip(letters, self.kernel))}
        x = {"N": self.batch, "C": self.c_in, **dict(zip(letters, self.x_sp))}
        lhs, rhs, out = self.specs
        return _layout_shape(out, y), _layout_shape(rhs, w), _layout_shape(lhs, x)

    def kwargs(self) -> dict:
        kw = dict(output_padding=self.output_padding, rhs_dilation=self.dilation, feature_group_count=self.group)
        if self.dn is not None:
            kw["dimension_numbers"] = self.dn
        return kw

    def ours(self, y, w, **extra):
        return jcb.conv_transpose(y, w, self.strides, self.padding, **self.kwargs(), **extra)

    # -- the oracles --

    def lax_forward(self, w):
        """The forward convolution of lax, sliced to ``y``'s size (only differs for output_padding >= stride)."""
        lhs, rhs, out = self.specs
        padding = self.padding if isinstance(self.padding, str) else self.forward_pairs
        letters = [ch for ch in lhs if ch not in "NC"]

        def fwd(x):
            res = lax.conv_general_dilated(
                x,
                w,
                self.s,
                padding,
                rhs_dilation=self.d,
                feature_group_count=self.group,
                dimension_numbers=self.specs,
                precision=HIGHEST,
            )
            for letter, o in zip(letters, self.y_sp):
                res = lax.slice_in_dim(res, 0, o, axis=out.index(letter))
            return res

        return fwd

    def lax_vjp(self, y, w):
        x0 = jnp.zeros(self.shapes[2], y.dtype)
        return jax.vjp(self.lax_forward(w), x0)[1](y)[0]

    def lax_linear_transpose(self, y, w):
        x_spec = jax.ShapeDtypeStruct(self.shapes[2], y.dtype)
        return jax.linear_transpose(self.lax_forward(w), x_spec)(y)[0]

    def reference(self, y, w) -> np.ndarray:
        """float64 NumPy reference, in the layout of the result."""
        lhs, rhs, out = self.specs
        sp = "".join(ch for ch in lhs if ch not in "NC")
        cf_y, cf_w, cf_x = "NC" + sp, "OI" + sp, "NC" + sp
        x = reference.conv_transpose_nd(
            _to_cf(y, out, cf_y), _to_cf(w, rhs, cf_w), self.x_sp, self.s, self.d, self.forward_pairs, self.group
        )
        return _from_cf(x, lhs, cf_x)

    def inputs(self, seed=0, dtype=np.float32):
        y_shape, w_shape, _ = self.shapes
        return random_arrays(seed, y_shape, w_shape, dtype=dtype)


# ---------------------------------------------------------------------------
# 1. The grid
# ---------------------------------------------------------------------------

GRID = [
    # -- 1-D --
    Case("1d-s1-valid", (5,), (3,), 1, "VALID"),
    Case("1d-s2-asym-op1-g2", (4,), (3,), 2, [(1, 0)], output_padding=1, group=2, batch=2),
    Case("1d-s3-k4-asym-op2-last", (3,), (4,), 3, [(0, 2)], output_padding=2, dn=channels_last(1)),
    Case("1d-s4-k2-op3", (3,), (2,), 4, [(0, 0)], output_padding=3, c_in=2),
    Case("1d-s2-int-op1-last-g2", (4,), (3,), 2, 1, output_padding=1, group=2, dn=channels_last(1)),
    Case("1d-s2-same-k4", (4,), (4,), 2, "SAME"),
    Case("1d-s3-same-k2-last", (3,), (2,), 3, "SAME", dn=channels_last(1)),
    Case("1d-s2-same-k3-g2", (5,), (3,), 2, "SAME", group=2),  # odd total padding: lo < hi
    Case("1d-s1-same-k2-last", (4,), (2,), 1, "SAME", dn=channels_last(1)),  # odd total padding, even kernel
    Case("1d-s2-valid-k2-g4", (5,), (2,), 2, "VALID", group=4),
    Case("1d-d3-cropped-op2-g2", (4,), (2,), 1, [(2, 0)], output_padding=2, dilation=3, group=2),
    Case("1d-d2-same-g2-last", (5,), (3,), 1, "SAME", dilation=2, group=2, dn=channels_last(1)),
    Case("1d-s2-d2-op1", (4,), (3,), 2, [(1, 1)], output_padding=1, dilation=2),  # reference only
    Case("1d-s3-d2-same-last", (3,), (3,), 3, "SAME", dilation=2, dn=channels_last(1)),  # reference only
    Case("1d-s2-d3-op2-g2", (3,), (2,), 2, [(0, 1)], output_padding=2, dilation=3, group=2),  # reference only
    # -- 2-D --
    Case(
        "2d-s2-int-op1-g2-nhwc", (3, 4), (3, 3), 2, 1, output_padding=1, group=2, batch=2, dn=("NHWC", "HWIO", "NHWC")
    ),
    Case("2d-same-s23-k43", (2, 3), (4, 3), (2, 3), "SAME"),
    Case(
        "2d-mixed-layout-asym",
        (3, 2),
        (2, 3),
        (1, 2),
        [(1, 0), (0, 2)],
        output_padding=(0, 1),
        dn=("NHWC", "OIHW", "NCHW"),
    ),
    Case("2d-s2-d2-asym", (3, 3), (2, 3), 2, [(0, 1), (1, 1)], output_padding=(1, 0), dilation=2),  # ref only
    # -- 3-D --
    Case(
        "3d-s212-asym-op-g2",
        (2, 3, 2),
        (3, 2, 2),
        (2, 1, 2),
        [(1, 0), (0, 1), (1, 1)],
        output_padding=(1, 0, 1),
        group=2,
        batch=2,
    ),
    Case("3d-s2-same-k234-last", (2, 2, 3), (2, 3, 4), 2, "SAME", dn=channels_last(3)),
    Case("3d-valid-s123", (2, 3, 2), (2, 2, 3), (1, 2, 3), "VALID", c_in=2),
    Case("3d-unet-int1-op1-last", (2, 2, 2), (3, 3, 3), 2, 1, output_padding=1, dn=channels_last(3)),
    Case(
        "3d-d121-op010-g2",
        (3, 2, 3),
        (2, 2, 2),
        1,
        [(0, 0), (1, 1), (0, 1)],
        output_padding=(0, 1, 0),
        dilation=(1, 2, 1),
        group=2,
    ),
    Case(
        "3d-s321-d113-cropped",
        (2, 2, 3),
        (2, 2, 2),
        (3, 2, 1),
        [(0, 1), (1, 0), (1, 1)],
        output_padding=(2, 1, 2),
        dilation=(1, 1, 3),
        c_in=2,
        c_out=2,
    ),
    Case(
        "3d-s211-d212-g2-last",
        (2, 3, 2),
        (2, 2, 2),
        (2, 1, 1),
        [(1, 0), (0, 0), (0, 1)],
        output_padding=(1, 0, 1),
        dilation=(2, 1, 2),
        group=2,
        dn=channels_last(3),
    ),  # reference only
    Case("3d-s2-d2-same", (2, 2, 2), (2, 2, 3), 2, "SAME", dilation=2, c_in=2),  # reference only
]


BY_NAME = {c.name: c for c in GRID}
assert len(BY_NAME) == len(GRID)


def _ids(cases):
    return [pytest.param(c, id=c.name) for c in cases]


def test_grid_covers_what_it_claims():
    """The grid's own bookkeeping: every feature is present, the sizes are positive and give back ``y``."""
    assert {c.nd for c in GRID} == {1, 2, 3}
    assert any(not c.lax_safe for c in GRID if c.nd == 1) and any(not c.lax_safe for c in GRID if c.nd == 3)
    for c in GRID:
        assert min(c.x_sp) >= 1, c.name
        assert all(0 <= p < max(s, d) for p, s, d in zip(c.op, c.s, c.d)), c.name
        # Each axis' forward convolution of the x size has at least y's size of outputs (exactly when p < s).
        for x, o, k, s, d, (lo, hi), p in zip(c.x_sp, c.y_sp, c.kernel, c.s, c.d, c.forward_pairs, c.op):
            assert reference.output_size(x, k, s, d, lo, hi) == o + p // s, c.name


@pytest.mark.parametrize("case", _ids(GRID))
def test_grid_float32(case):
    """Shape and values against lax's VJP, lax's linear transpose (where safe) and the float64 reference."""
    y, w = case.inputs()
    fns = {"ours": case.ours}
    if case.lax_safe:
        fns.update(vjp=case.lax_vjp, linear_transpose=case.lax_linear_transpose)
    got = compile_and_run(lambda y, w: {k: f(y, w) for k, f in fns.items()}, y, w)
    want = case.reference(y, w)
    assert got["ours"].shape == case.shapes[2] == want.shape
    assert got["ours"].dtype == np.float32
    assert np.max(np.abs(want)) > 0
    assert_close(got["ours"], want, "ours vs reference", rtol=1e-5, scale_atol=1e-5)
    for oracle in set(fns) - {"ours"}:
        assert_close(got[oracle], want, f"{oracle} vs reference (the oracle itself)", rtol=1e-5, scale_atol=1e-5)
        assert_close(got["ours"], got[oracle], f"ours vs {oracle}", rtol=1e-5, scale_atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_grid_float64(nd):
    """Every grid case of a rank, strided + dilated included, in float64: the reference to ~1e-12."""
    _check_float64([c for c in GRID if c.nd == nd], seed=5)


def _check_float64(cases, seed: int) -> None:
    """``cases`` in float64, compiled as one program: each equals its float64 reference to ~1e-12."""
    with enable_x64(True):
        args = [c.inputs(seed=seed, dtype=np.float64) for c in cases]
        got = compile_and_run(lambda args: [c.ours(*a) for c, a in zip(cases, args)], args)
        for c, a, g in zip(cases, args, got):
            assert g.dtype == np.float64, c.name
            assert_close(g, c.reference(*a), c.name, rtol=1e-12, scale_atol=1e-12)
    assert not jax.config.jax_enable_x64


# ---------------------------------------------------------------------------
# 2. lax.conv_transpose(..., transpose_kernel=True) with 'SAME' / 'VALID'
# ---------------------------------------------------------------------------
#
# What holds (checked below, every rank):
# * 'SAME': equal for every kernel, stride and dilation tried, including a
#   kernel below the stride and even kernels;
# * 'VALID': equal when the kernel *extent* (k - 1) * d + 1 is at least the
#   stride (so also k < s with a dilation, e.g. k 2, s 3, d 2). Below that lax
#   returns s - extent more trailing entries per axis, all zero (rows under no
#   window), and ``output_padding = s - extent`` gives lax's result exactly.


def _lax_ct(y, w, s, pad, d, dn):
    return lax.conv_transpose(
        y, w, s, pad, rhs_dilation=d, dimension_numbers=dn, transpose_kernel=True, precision=HIGHEST
    )


def _ct_inputs(seed, nd, k, y_sp, dn, c_out=3, c_in=2):
    sizes_y = {"N": 2, "C": c_out, **dict(zip(SPATIAL[nd], y_sp))}
    sizes_w = {"O": c_out, "I": c_in, **dict(zip(SPATIAL[nd], k))}
    return random_arrays(seed, _layout_shape(dn[2], sizes_y), _layout_shape(dn[1], sizes_w), dtype=np.float32)


# (kernel, stride, dilation) per axis; y's spatial size; layout
_K_S_1D = [((k,), (s,), (1,)) for k in (1, 2, 3, 4, 5) for s in (1, 2, 3)] + [((k,), (1,), (2,)) for k in (2, 3, 4)]
LAX_CT = {
    1: [(kd, (4,), channels_first(1)) for kd in _K_S_1D] + [(((4,), (2,), (1,)), (3,), channels_last(1))],
    2: [
        (((2, 3), (2, 2), (1, 1)), (3, 2), channels_first(2)),  # k == s, k > s odd
        (((4, 1), (3, 2), (1, 1)), (2, 3), ("NHWC", "HWIO", "NHWC")),  # k > s even; k < s (SAME only)
        (((3, 3), (1, 1), (2, 1)), (3, 4), channels_first(2)),  # dilated, stride 1
    ],
    3: [
        (((2, 3, 4), (2, 2, 3), (1, 1, 1)), (2, 2, 2), channels_first(3)),  # k == s, k > s odd and even
        (((3, 2, 1), (2, 2, 1), (1, 1, 1)), (2, 3, 2), channels_last(3)),
        (((1, 2, 3), (3, 1, 1), (1, 2, 2)), (2, 2, 3), channels_first(3)),  # k < s (SAME only); dilated
    ],
}


def _extent(k, d):
    return (k - 1) * d + 1


@pytest.mark.parametrize("pad", ["SAME", "VALID"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_equals_lax_conv_transpose(nd, pad):
    """Where it holds: 'SAME' always, 'VALID' when every kernel extent is at least the stride."""
    combos = [
        (kd, y_sp, dn)
        for kd, y_sp, dn in LAX_CT[nd]
        if pad == "SAME" or all(_extent(k, d) >= s for k, s, d in zip(*kd))
    ]
    assert combos
    assert not any(s > 1 and d > 1 for (_, st, dl), _, _ in combos for s, d in zip(st, dl))  # XLA CPU's hazard
    args = [_ct_inputs(i, nd, kd[0], y_sp, dn) for i, (kd, y_sp, dn) in enumerate(combos)]

    def run(args):
        out = []
        for ((_, s, d), _, dn), (y, w) in zip(combos, args):
            ours = jcb.conv_transpose(y, w, s, pad, rhs_dilation=d, dimension_numbers=dn)
            out.append((ours, _lax_ct(y, w, s, pad, d, dn)))
        return out

    for (kd, y_sp, dn), (ours, theirs) in zip(combos, compile_and_run(run, args)):
        what = f"kernel, stride, dilation {kd}, y {y_sp}, {dn}"
        assert ours.shape == theirs.shape, what
        if pad == "SAME":
            lhs = dn[0]
            assert [ours.shape[lhs.index(ch)] for ch in lhs if ch not in "NC"] == [
                o * s for o, s in zip(y_sp, kd[1])
            ], what
        assert_close(ours, theirs, what, rtol=1e-5, scale_atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_valid_with_a_kernel_extent_below_the_stride_differs_from_lax(nd):
    """lax's 'VALID' adds ``s - extent`` zero entries at the end; ``output_padding`` reproduces them."""
    combos = [(kd, y_sp, dn) for kd, y_sp, dn in LAX_CT[nd] if any(_extent(k, d) < s for k, s, d in zip(*kd))]
    assert combos
    args = [_ct_inputs(10 + i, nd, kd[0], y_sp, dn) for i, (kd, y_sp, dn) in enumerate(combos)]

    def run(args):
        out = []
        for ((k, s, d), _, dn), (y, w) in zip(combos, args):
            op = tuple(max(si - _extent(ki, di), 0) for ki, si, di in zip(k, s, d))
            plain = jcb.conv_transpose(y, w, s, "VALID", rhs_dilation=d, dimension_numbers=dn)
            padded = jcb.conv_transpose(y, w, s, "VALID", output_padding=op, rhs_dilation=d, dimension_numbers=dn)
            out.append((plain, padded, _lax_ct(y, w, s, "VALID", d, dn)))
        return out

    for (kd, y_sp, dn), (plain, padded, theirs) in zip(combos, compile_and_run(run, args)):
        what = f"kernel, stride, dilation {kd}, y {y_sp}"
        lhs = dn[0]
        sp_axes = [lhs.index(ch) for ch in lhs if ch not in "NC"]
        extra = [max(s - _extent(k, d), 0) for k, s, d in zip(*kd)]
        assert [theirs.shape[a] - plain.shape[a] for a in sp_axes] == extra, what
        assert_close(padded, theirs, what, rtol=1e-5, scale_atol=1e-5)
        crop = tuple(slice(0, n) for n in plain.shape)
        assert_close(plain, theirs[crop], what, rtol=1e-5, scale_atol=1e-5)
        rest = np.asarray(theirs).copy()
        rest[crop] = 0
        assert not rest.any(), what  # the extra entries of lax are zeros


# Strided + dilated: lax.conv_transpose is an lhs-dilated convolution of exactly XLA CPU's hazard,
# so lax runs in a child process (an abort there fails this test instead of killing pytest).
_SD_CHILD = r"""
import json, sys
import numpy as np
import jax
from jax import lax
cases = json.loads(sys.argv[1])
data = np.load(sys.argv[2])
def run(args):  # one program for every case
    return [
        lax.conv_transpose(y, w, s, pad, rhs_dilation=d, dimension_numbers=tuple(dn), transpose_kernel=True,
                           precision=lax.Precision.HIGHEST)
        for (pad, s, d, dn), (y, w) in zip(cases, args)
    ]
args = [(data[f"{i}_y"], data[f"{i}_w"]) for i in range(len(cases))]
out = {str(i): np.asarray(r) for i, r in enumerate(jax.jit(run)(args))}
np.savez(sys.argv[3], **out)
print("ok", len(out))
"""

# (nd, kernel, stride, dilation, y spatial)
_SD_COMBOS = [
    (1, (2,), (2,), (2,), (4,)),
    (1, (2,), (3,), (2,), (3,)),  # k < s, extent 3 == s
    (1, (3,), (2,), (2,), (3,)),
    (1, (4,), (3,), (2,), (3,)),
    (2, (2, 3), (2, 3), (3, 2), (3, 2)),
    (3, (2, 1, 3), (2, 2, 2), (2, 1, 2), (2, 2, 2)),  # a 1-wide axis: extent 1 < s (SAME only)
]


def test_equals_lax_conv_transpose_strided_and_dilated(tmp_path):
    """The same findings with a stride and a dilation on one axis: 'SAME' always, 'VALID' for extent >= stride."""
    cases, arrays, ours = [], {}, []
    for nd, k, s, d, y_sp in _SD_COMBOS:
        for pad in ("SAME", "VALID"):
            if pad == "VALID" and any(_extent(ki, di) < si for ki, si, di in zip(k, s, d)):
                continue
            dn = channels_first(nd)
            y, w = _ct_inputs(len(cases), nd, k, y_sp, dn)
            arrays.update({f"{len(cases)}_y": y, f"{len(cases)}_w": w})
            ours.append((jcb.conv_transpose(y, w, s, pad, rhs_dilation=d), (nd, k, s, d, pad)))
            cases.append((pad, s, d, dn))
    np.savez(tmp_path / "in.npz", **arrays)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _SD_CHILD, json.dumps(cases), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode} (-6 is SIGABRT):\n{proc.stderr[-3000:]}"
    theirs = np.load(tmp_path / "out.npz")
    for i, (got, what) in enumerate(ours):
        assert_close(got, theirs[str(i)], str(what), rtol=1e-5, scale_atol=1e-5)


# ---------------------------------------------------------------------------
# 3. cpu_path
# ---------------------------------------------------------------------------

PATH_CASES = [
    Case("1d-s2-asym-op1-g2", (5,), (3,), 2, [(1, 0)], output_padding=1, group=2, c_in=6, c_out=4),
    Case("1d-s3-k5-last", (3,), (5,), 3, [(2, 1)], output_padding=2, c_in=3, c_out=5, dn=channels_last(1)),
    Case(
        "3d-s212-asym-op-g2",
        (2, 3, 2),
        (3, 2, 2),
        (2, 1, 2),
        [(1, 0), (0, 1), (1, 1)],
        output_padding=(1, 0, 0),
        group=2,
        c_in=4,
        c_out=6,
    ),
]
STRIDE1_PATH_CASES = [
    Case("1d-s1-d2-op1-g2", (5,), (3,), 1, [(1, 2)], output_padding=1, dilation=2, group=2),
    Case("3d-s1-d121", (2, 3, 2), (2, 2, 2), 1, [(0, 1), (1, 0), (0, 0)], dilation=(1, 2, 1), c_in=3, c_out=2),
]


@requires_cpu
@pytest.mark.parametrize("case", _ids(PATH_CASES + STRIDE1_PATH_CASES))
def test_every_cpu_path_matches_the_reference(case):
    names = [n for n in jcb.CPU_PATHS if n != "flipped_conv" or set(case.s) == {1}]
    assert len(names) == len(jcb.CPU_PATHS) - (set(case.s) != {1})
    y, w = case.inputs(seed=3)
    got = compile_and_run(lambda y, w: {n: case.ours(y, w, cpu_path=n) for n in names}, y, w)
    want = case.reference(y, w)
    for n in names:
        assert_close(got[n], want, f"cpu_path={n}", rtol=1e-5, scale_atol=1e-5)


@requires_cpu
@pytest.mark.parametrize("case", _ids(PATH_CASES))
def test_a_forced_cpu_path_is_the_one_lowered(case):
    """Only 'lhs_dilated' lowers to an lhs-dilated convolution (CPU)."""
    y, w = case.inputs()
    for name in jcb.CPU_PATHS:
        if name == "flipped_conv":
            continue
        text = jax.jit(functools.partial(case.ours, cpu_path=name)).lower(y, w).as_text()
        assert (lhs_dilated_convolutions(text) > 0) == (name == "lhs_dilated"), name


@pytest.mark.parametrize("bad", ["nope", "GEMM", "", 3])
def test_an_unknown_cpu_path_names_the_valid_ones(bad):
    y, w = BY_NAME["1d-s2-asym-op1-g2"].inputs()
    with pytest.raises(ValueError, match="'cpu_path'") as info:
        BY_NAME["1d-s2-asym-op1-g2"].ours(y, w, cpu_path=bad)
    assert all(name in str(info.value) for name in jcb.CPU_PATHS), str(info.value)
    assert repr(bad) in str(info.value)


def test_cpu_paths_that_cannot_take_the_geometry_are_refused():
    y, w = np.ones((1, 2, 4), np.float32), np.ones((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="flipped_conv.*stride 1") as info:
        jcb.conv_transpose(y, w, 2, "VALID", cpu_path="flipped_conv")
    # the gate names the entry point, and the dispatcher's check the paths that do serve the geometry
    assert str(info.value).startswith("conv_transpose:"), str(info.value)
    assert "'gemm'" in str(info.value) and "cpu_path=None" in str(info.value), str(info.value)
    with pytest.raises(ValueError, match="lhs_dilated.*abort"):
        jcb.conv_transpose(y, w, 2, "VALID", rhs_dilation=2, cpu_path="lhs_dilated")


# ---------------------------------------------------------------------------
# 4. precision and preferred_element_type
# ---------------------------------------------------------------------------

PRECISIONS = [
    None,
    lax.Precision.DEFAULT,
    lax.Precision.HIGH,
    lax.Precision.HIGHEST,
    "default",
    "high",
    "highest",
    "fastest",
    "bfloat16",
    "tensorfloat32",
    "float32",
    ("highest", "default"),
    (lax.Precision.HIGHEST, lax.Precision.DEFAULT),
]


def test_precision_accepts_what_lax_accepts():
    case = BY_NAME["1d-s2-asym-op1-g2"]
    y, w = case.inputs()
    x0 = jnp.zeros(case.shapes[2], jnp.float32)
    for p in PRECISIONS:
        # lax takes it too ...
        jax.eval_shape(
            lambda x, p=p: lax.conv_general_dilated(x, w, (2,), [(1, 0)], precision=p, feature_group_count=2), x0
        )
    got = compile_and_run(lambda y, w: [case.ours(y, w, precision=p) for p in PRECISIONS], y, w)
    want = case.reference(y, w)
    for p, g in zip(PRECISIONS, got):
        # ... and every value gives the float32 result on CPU (the precision is a hint there).
        assert_close(g, want, f"precision={p!r}", rtol=1e-5, scale_atol=1e-5)


@pytest.mark.parametrize(
    "bad, exc",
    [("bogus", ValueError), ("HIGHEST", ValueError), (3, TypeError), (("highest",), TypeError)],
)
def test_precision_rejects_what_lax_rejects(bad, exc):
    y, w = BY_NAME["1d-s1-valid"].inputs()
    with pytest.raises(ValueError):  # lax
        lax.conv_general_dilated(jnp.zeros((1, 4, 7)), w, (1,), "VALID", precision=bad)
    with pytest.raises(exc, match="'precision'"):
        BY_NAME["1d-s1-valid"].ours(y, w, precision=bad)


@pytest.mark.parametrize("case", _ids([BY_NAME["1d-s2-asym-op1-g2"], BY_NAME["3d-s212-asym-op-g2"]]))
def test_preferred_element_type_float32_from_bfloat16(case):
    y, w = (a.astype(jnp.bfloat16) for a in case.inputs(seed=4))
    got = compile_and_run(lambda y, w: (case.ours(y, w, preferred_element_type=jnp.float32), case.ours(y, w)), y, w)
    wide, narrow = got
    assert wide.dtype == np.float32 and narrow.dtype == jnp.bfloat16
    # float32 accumulation of the exact bfloat16 inputs, not rounded to bfloat16 at the end.
    want = case.reference(np.asarray(y, np.float32), np.asarray(w, np.float32))
    assert_close(wide, want, "preferred float32", rtol=1e-5, scale_atol=1e-5)
    assert_close(narrow, want, "bfloat16", rtol=1e-2, scale_atol=1e-2)
    assert np.max(np.abs(np.asarray(narrow, np.float64) - want)) > np.max(np.abs(np.asarray(wide, np.float64) - want))


@pytest.mark.parametrize("bad", [jnp.int32, "int8", "complex64"])
def test_preferred_element_type_must_be_floating(bad):
    y, w = BY_NAME["1d-s1-valid"].inputs()
    with pytest.raises(TypeError, match="'preferred_element_type'"):
        BY_NAME["1d-s1-valid"].ours(y, w, preferred_element_type=bad)


# ---------------------------------------------------------------------------
# 5. Errors
# ---------------------------------------------------------------------------

Y1, W1 = np.ones((1, 4, 5), np.float32), np.ones((4, 2, 3), np.float32)
Y3, W3 = np.ones((1, 4, 2, 2, 2), np.float32), np.ones((4, 2, 2, 2, 2), np.float32)


def _call(y=Y1, w=W1, strides=2, padding="VALID", **kw):
    return lambda: jcb.conv_transpose(y, w, strides, padding, **kw)


ERRORS = {
    # output_padding: 0 <= p < max(stride, dilation), 0 with SAME
    "op-equal-stride": (_call(output_padding=2), ValueError, r"output_padding 2 .*max\(stride, dilation\) = 2"),
    "op-equal-dilation": (_call(strides=1, output_padding=3, rhs_dilation=3), ValueError, r"output_padding 3 .* = 3"),
    "op-3d-one-axis": (
        _call(Y3, W3, strides=(2, 1, 3), output_padding=(1, 1, 0)),
        ValueError,
        r"output_padding 1 on spatial axis 1 must be < max\(stride, dilation\) = 1",
    ),
    "op-negative": (_call(output_padding=-1), ValueError, r"'output_padding' must be >= 0"),
    "op-with-same": (
        _call(padding="SAME", output_padding=2),
        ValueError,
        r"output_padding 2 on spatial axis 0 must be < stride 2 with padding 'SAME' .* 9\.\.10 here",
    ),
    "op-with-same-lower-3d": (
        _call(Y3, W3, strides=(1, 3, 2), padding="same_lower", output_padding=(0, 1, 2)),
        ValueError,
        r"output_padding 2 on spatial axis 2 must be < stride 2 with padding 'SAME_LOWER'",
    ),
    # counts per rank
    "strides-count-1d": (_call(strides=(2, 2)), ValueError, r"'strides' needs 1 entries .* got 2"),
    "strides-count-3d": (_call(Y3, W3, strides=(2, 2)), ValueError, r"'strides' needs 3 entries .* got 2"),
    "dilation-count-3d": (_call(Y3, W3, rhs_dilation=(1, 2)), ValueError, r"'rhs_dilation' needs 3 entries"),
    "op-count-3d": (_call(Y3, W3, output_padding=(1, 1)), ValueError, r"'output_padding' needs 3 entries"),
    "padding-count-1d": (_call(padding=[(1, 1), (1, 1)]), ValueError, r"'padding' needs 1 \(lo, hi\) pairs"),
    "padding-count-3d": (_call(Y3, W3, padding=[(1, 1)]), ValueError, r"'padding' needs 3 \(lo, hi\) pairs"),
    # values
    "padding-negative": (_call(padding=[(-1, 0)]), ValueError, r"every padding must be >= 0, got \[\(-1, 0\)\]"),
    "padding-negative-int": (_call(padding=-1), ValueError, r"every padding must be >= 0"),
    "padding-bad-string": (
        _call(padding="FULL"),
        ValueError,
        r"'padding' as a string must be 'SAME', 'SAME_LOWER' or 'VALID', got 'FULL'",
    ),
    "padding-triple": (
        _call(padding=[(1, 1, 1)]),
        TypeError,
        r"'padding' must be 'SAME', 'SAME_LOWER', 'VALID', an int or",
    ),
    "strides-zero": (_call(strides=0), ValueError, r"every entry of 'strides' must be >= 1, got 0"),
    "strides-float": (_call(strides=2.0), TypeError, r"'strides' must be an int or a sequence of 1 ints"),
    "dilation-zero": (_call(rhs_dilation=(0,)), ValueError, r"every entry of 'rhs_dilation' must be >= 1"),
    "result-too-small": (
        _call(np.ones((1, 4, 1), np.float32), np.ones((4, 2, 1), np.float32), strides=1, padding=[(1, 1)]),
        ValueError,
        r"input size of -1; it must be >= 1",
    ),
    # channels and groups
    "groups-not-dividing": (
        _call(feature_group_count=3),
        ValueError,
        r"feature_group_count=3 must divide w's output channels 4",
    ),
    "groups-zero": (_call(feature_group_count=0), ValueError, r"'feature_group_count' must be an int >= 1"),
    "groups-bool": (_call(feature_group_count=True), TypeError, r"'feature_group_count' must be a Python int"),
    "w-O-mismatch": (
        _call(w=np.ones((5, 2, 3), np.float32)),
        ValueError,
        r"y has 4 channels but w has 5 output channels \(O\)",
    ),
    "w-O-mismatch-channels-last": (
        _call(np.ones((1, 5, 4), np.float32), np.ones((3, 2, 5), np.float32), dimension_numbers=("NWC", "WIO", "NWC")),
        ValueError,
        r"y has 4 channels but w has 5 output channels",
    ),
    # ranks
    "rank-0-spatial": (_call(np.ones((1, 4), np.float32), np.ones((4, 2), np.float32)), ValueError, r"rank 3, 4 or 5"),
    "rank-4-spatial": (
        _call(np.ones((1, 4, 2, 2, 2, 2), np.float32), np.ones((4, 2, 1, 1, 1, 1), np.float32)),
        ValueError,
        r"w must have rank 3, 4 or 5 \(O, I and 1, 2 or 3 spatial dims\), got y shape \(1, 4, 2, 2, 2, 2\)",
    ),
    "rank-mismatch": (
        _call(Y1, W3),
        ValueError,
        r"y must have rank 4 \(unbatched\), 5 .* got y shape \(1, 4, 5\) and w shape \(4, 2, 2, 2, 2\)",
    ),
    "bad-dimension-numbers": (
        _call(dimension_numbers=("NCHW", "OIHW", "NCHW")),
        ValueError,
        r"invalid 'dimension_numbers'",
    ),
    # types of the arrays
    "y-list": (_call(y=Y1.tolist()), TypeError, r"'y' must be a JAX or NumPy array, got list"),
    "y-scalar": (_call(y=1.0), TypeError, r"'y' must be a JAX or NumPy array, got float"),
    "y-none": (_call(y=None), TypeError, r"'y' must be a JAX or NumPy array, got NoneType"),
    "w-list": (_call(w=W1.tolist()), TypeError, r"'w' must be a JAX or NumPy array, got list"),
    "y-int": (_call(y=Y1.astype(np.int32)), TypeError, r"'y' must have a floating dtype .* got int32"),
    "dtype-mismatch": (_call(w=W1.astype(np.float16)), TypeError, r"'y' and 'w' must have the same dtype"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_name_the_argument(name):
    fn, exc, pattern = ERRORS[name]
    with pytest.raises(exc, match=pattern) as info:
        fn()
    assert str(info.value).startswith("conv_transpose: "), str(info.value)


def test_numpy_and_jax_arrays_are_both_accepted():
    case = BY_NAME["2d-s2-int-op1-g2-nhwc"]  # NHWC, groups, output_padding
    y, w = case.inputs(seed=9)
    want = case.reference(y, w)
    for a, b in ((y, w), (jnp.asarray(y), jnp.asarray(w)), (y, jnp.asarray(w)), (jnp.asarray(y), w)):
        got = case.ours(a, b)
        assert isinstance(got, jax.Array)
        assert_close(got, want, f"{type(a).__name__}, {type(b).__name__}", rtol=1e-5, scale_atol=1e-5)


# ---------------------------------------------------------------------------
# 6. conv_transpose_sizes
# ---------------------------------------------------------------------------

# (y_size, kernel_size, strides, padding, rhs_dilation)
SIZES = [
    ((16,), 3, 2, [(1, 1)], 1),  # the docstring's example: [31, 32]
    ((8, 8), 4, 2, "SAME", 1),
    ((5,), 3, 3, "VALID", 1),
    ((4,), 2, 1, [(0, 2)], 3),  # dilation > stride: output_padding up to 2
    ((4, 3), (2, 3), (1, 2), 1, (3, 1)),
    ((3, 2, 4), (3, 1, 2), (2, 3, 1), [(1, 0), (0, 0), (2, 1)], (1, 1, 2)),
    ((2,), 5, 2, "SAME", 2),
    ((3, 1), (1, 2), (3, 2), "VALID", 1),
    ((0,), 3, 2, "VALID", 1),  # an empty y: the result is zeros of a positive size
]


def _formula(o, k, s, d, lo, hi, p):
    return (o - 1) * s - lo - hi + d * (k - 1) + 1 + p


def _reachable(y_size, kernel, strides, padding, dilation):
    """Per axis, every size some output_padding in [0, max(s, d)) makes conv_transpose produce (shapes only)."""
    nd = len(y_size)
    k, s, d = (_per_axis(v, nd) for v in (kernel, strides, dilation))
    y = jax.ShapeDtypeStruct((1, 2, *y_size), jnp.float32)
    w = jax.ShapeDtypeStruct((2, 1, *k), jnp.float32)
    seen = [set() for _ in range(nd)]
    by_op = {}
    for op in itertools.product(*(range(max(sa, da)) for sa, da in zip(s, d))):
        try:
            out = jax.eval_shape(
                lambda y, w, op=op: jcb.conv_transpose(
                    y, w, strides, padding, output_padding=op, rhs_dilation=dilation
                ),
                y,
                w,
            )
        except ValueError:
            continue
        by_op[op] = out.shape[2:]
        for a in range(nd):
            seen[a].add(out.shape[2 + a])
    return seen, by_op


def _sizes_id(cfg):
    return "-".join(re.sub(r"[^0-9A-Za-z]+", "_", str(v)).strip("_") for v in cfg)


@pytest.mark.parametrize("cfg", SIZES, ids=_sizes_id)
def test_conv_transpose_sizes_are_exactly_the_reachable_sizes(cfg):
    y_size, kernel, strides, padding, dilation = cfg
    ranges = jcb.conv_transpose_sizes(y_size, kernel, strides, padding, rhs_dilation=dilation)
    assert isinstance(ranges, tuple) and len(ranges) == len(y_size)
    assert all(isinstance(r, range) and r.step == 1 for r in ranges)
    seen, by_op = _reachable(*cfg)
    assert [set(r) for r in ranges] == seen
    # Every size conv_transpose gave is the formula's for its output_padding (o * s for 'SAME').
    nd = len(y_size)
    k, s, d = (_per_axis(v, nd) for v in (kernel, strides, dilation))
    if padding == "VALID":
        pairs = ((0, 0),) * nd
    elif isinstance(padding, int):
        pairs = ((padding, padding),) * nd
    else:
        pairs = padding
    for op, shape in by_op.items():
        for a in range(nd):
            if padding == "SAME":  # Equinox's rule: the size is y's times the stride, minus output_padding
                assert op[a] < s[a] and shape[a] == y_size[a] * s[a] - op[a]
            else:
                assert shape[a] == _formula(y_size[a], k[a], s[a], d[a], *pairs[a], op[a]), (op, a)


@pytest.mark.parametrize("cfg", [c for c in SIZES if c[3] != "SAME"], ids=_sizes_id)
def test_conv_transpose_sizes_output_padding_rule(cfg):
    """The docstring: size ``n`` is ``output_padding = n - n0``, ``n0`` the size of output_padding 0."""
    y_size, kernel, strides, padding, dilation = cfg
    ranges = jcb.conv_transpose_sizes(y_size, kernel, strides, padding, rhs_dilation=dilation)
    nd = len(y_size)
    k, s, d = (_per_axis(v, nd) for v in (kernel, strides, dilation))
    pairs = (
        ((0, 0),) * nd if padding == "VALID" else ((padding, padding),) * nd if isinstance(padding, int) else padding
    )
    n0 = [_formula(y_size[a], k[a], s[a], d[a], *pairs[a], 0) for a in range(nd)]
    for r, start in zip(ranges, n0):
        assert r.start == max(start, 1)  # r.start is n0 unless n0 < 1
    y = jax.ShapeDtypeStruct((1, 2, *y_size), jnp.float32)
    w = jax.ShapeDtypeStruct((2, 1, *k), jnp.float32)
    for sizes in itertools.product(*ranges):
        op = tuple(size - start for size, start in zip(sizes, n0))
        out = jax.eval_shape(
            lambda y, w, op=op: jcb.conv_transpose(y, w, strides, padding, output_padding=op, rhs_dilation=dilation),
            y,
            w,
        )
        assert out.shape[2:] == sizes


def test_conv_transpose_sizes_rule_when_the_smallest_size_is_clamped():
    """n0 = (1 - 1) * 3 - 2 + 0 + 1 = -1: only size 1 is reachable, with output_padding 1 - n0 = 2."""
    (r,) = jcb.conv_transpose_sizes((1,), 1, 3, [(1, 1)])
    assert list(r) == [1]
    assert _reachable((1,), 1, 3, [(1, 1)], 1)[0] == [{1}]
    out = jcb.conv_transpose(
        np.ones((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32), 3, [(1, 1)], output_padding=2
    )
    assert out.shape == (1, 1, 1)


def test_conv_transpose_sizes_same_with_an_empty_y():
    ranges = jcb.conv_transpose_sizes((0,), 3, 2, "SAME")
    assert ranges == (range(0),)
    assert [set(r) for r in ranges] == _reachable((0,), 3, 2, "SAME", 1)[0]


# ---------------------------------------------------------------------------
# 7. Static configuration under jit
# ---------------------------------------------------------------------------


def test_jit_of_a_partial_traces_only_the_arrays():
    case = BY_NAME["1d-s2-int-op1-last-g2"]  # channels-last, groups, int padding, output_padding
    f = functools.partial(
        jcb.conv_transpose,
        strides=case.strides,
        padding=case.padding,
        output_padding=case.output_padding,
        feature_group_count=case.group,
        dimension_numbers=case.dn,
    )
    y, w = case.inputs(seed=1)
    jaxpr = jax.make_jaxpr(f)(y, w)
    assert len(jaxpr.jaxpr.invars) == 2
    assert [v.aval.shape for v in jaxpr.jaxpr.invars] == [y.shape, w.shape]
    jitted = jax.jit(f)
    for seed in (1, 2):  # one program, two sets of values
        y, w = case.inputs(seed=seed)
        assert_close(jitted(y, w), case.reference(y, w), f"seed {seed}", rtol=1e-5, scale_atol=1e-5)


def test_static_argnames_and_traced_configuration():
    y, w = BY_NAME["1d-s2-asym-op1-g2"].inputs()
    want = BY_NAME["1d-s2-asym-op1-g2"].reference(y, w)
    f = jax.jit(jcb.conv_transpose, static_argnames=("strides", "padding", "output_padding", "feature_group_count"))
    got = f(y, w, strides=2, padding=((1, 0),), output_padding=1, feature_group_count=2)
    assert_close(got, want, "static_argnames", rtol=1e-5, scale_atol=1e-5)
    # A traced configuration is refused with a TypeError that names it.
    with pytest.raises(TypeError, match="'strides' must be an int or a sequence"):
        jax.jit(jcb.conv_transpose)(y, w, 2, ((1, 0),))
    with pytest.raises(TypeError, match="'output_padding'"):
        jax.jit(lambda y, w, p: jcb.conv_transpose(y, w, 2, ((1, 0),), output_padding=p))(y, w, 1)


def test_eager_call_matches_the_reference():
    case = BY_NAME["3d-s212-asym-op-g2"]  # 3-D, strided, grouped, asymmetric padding, output_padding
    y, w = case.inputs(seed=6)
    assert_close(case.ours(y, w), case.reference(y, w), "eager", rtol=1e-5, scale_atol=1e-5)


# ---------------------------------------------------------------------------
# 8. What PyTorch, TensorFlow, Keras, Flax and Equinox users reach for: output_size, batch axes,
#    circular padding, transpose_kernel=False, 'SAME_LOWER' and 'SAME' with output_padding, bias
# ---------------------------------------------------------------------------
#
# ``Ext`` extends ``Case``'s vocabulary. Its oracles are written here from the docstring's definitions:
# * the float64 NumPy reference in channels-first form (``reference.conv_transpose_nd``, or for circular
#   padding ``circular_reference`` below: every tap's rows ``q * s + i * d - lo`` taken modulo the size),
#   with the forward kernel of a ``transpose_kernel=False`` kernel built here (per group O and I swapped,
#   spatial axes flipped) and the bias added;
# * where no axis has both a stride and a dilation above 1: ``jax.vjp`` of ``lax.conv_general_dilated``
#   (of ``jnp.pad(x, pairs, mode="wrap")`` with ``'VALID'`` for circular padding), the string paddings
#   passed to lax as they are.
# Sizes: PyTorch's rule for pairs and 'VALID'; ``o * s - output_padding`` for 'SAME' / 'SAME_LOWER'.


def circular_reference(y, w, x_spatial, stride, dilation, lows, group):
    """float64: ``x[n, c, (q * s + i * d - lo) mod size] += y[n, o, q] * w[o, c mod (C_in/g), i]`` per axis."""
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    n, c_out, *out_sp = y.shape
    _, c_in_g, *kernel = w.shape
    x = np.zeros((n, group * c_in_g, *x_spatial))
    cog = c_out // group
    for gi in range(group):
        for idx in itertools.product(*(range(k) for k in kernel)):
            contrib = np.einsum(
                "no...,oc->nc...",
                y[:, gi * cog : (gi + 1) * cog],
                w[gi * cog : (gi + 1) * cog][(slice(None), slice(None), *idx)],
            )
            rows = [
                (np.arange(o) * s + i * d - lo) % size
                for o, i, s, d, lo, size in zip(out_sp, idx, stride, dilation, lows, x_spatial)
            ]
            np.add.at(x, (slice(None), slice(gi * c_in_g, (gi + 1) * c_in_g), *np.ix_(*rows)), contrib)
    return x


@dataclasses.dataclass(frozen=True)
class Ext(Case):
    """One call with the new keywords; shapes in the layouts of ``dn``, with ``lead`` batch axes (None: unbatched)."""

    c_in: int = 2  # the result's channels
    batch: int = 2
    lead: tuple[int, ...] | None = ()  # leading batch axes in front of the layout; None: y has no N axis
    circular: bool = False
    tk: bool = True  # transpose_kernel
    by_size: bool = False  # pass output_size (the spatial sizes) instead of output_padding
    bias: bool = False

    @property
    def features(self) -> set[str]:
        f = {"circular"} if self.circular else set()
        f |= {"transpose_kernel"} if not self.tk else set()
        f |= {"output_size"} if self.by_size else set()
        f |= {"bias"} if self.bias else set()
        f |= {"batch_axes"} if self.lead != () else set()
        if self.padding in ("SAME", "SAME_LOWER", "VALID") and any(self.op):
            f.add("string_with_output_padding")
        if self.padding == "SAME_LOWER":
            f.add("same_lower")
        return f

    def _shape(self, spec, sizes):
        shape = _layout_shape(spec, sizes)
        if self.lead is None:
            return tuple(v for ch, v in zip(spec, shape) if ch != "N")
        return (*self.lead, *shape)

    @property
    def shapes(self):
        """(y, w, x) shapes as passed and returned."""
        letters = [ch for ch in self.specs[0] if ch not in "NC"]
        sp = dict(zip(letters, self.y_sp))
        n = 1 if self.lead is None else self.batch
        o_i = (self.c_out, self.c_in // self.group) if self.tk else (self.c_in, self.c_out // self.group)
        w = {"O": o_i[0], "I": o_i[1], **dict(zip(letters, self.kernel))}
        lhs, rhs, out = self.specs
        y = self._shape(out, {"N": n, "C": self.c_out, **sp})
        x = self._shape(lhs, {"N": n, "C": self.c_in, **dict(zip(letters, self.x_sp))})
        return y, _layout_shape(rhs, w), x

    def kwargs(self) -> dict:
        kw = dict(rhs_dilation=self.dilation, feature_group_count=self.group)
        if self.by_size:
            kw["output_size"] = self.x_sp
        else:
            kw["output_padding"] = self.output_padding
        if self.dn is not None:
            kw["dimension_numbers"] = self.dn
        if self.circular:
            kw["padding_mode"] = "circular"
        if not self.tk:
            kw["transpose_kernel"] = False
        return kw

    def ours(self, y, w, b=None):
        return jcb.conv_transpose(y, w, self.strides, self.padding, bias=b, **self.kwargs())

    def inputs(self, seed=0, dtype=np.float32):
        y_shape, w_shape, _ = self.shapes
        y, w, b = random_arrays(seed, y_shape, w_shape, (self.c_in,), dtype=dtype)
        return y, w, (b if self.bias else None)

    # -- conversions to and from one channels-first batch axis (jnp: they run inside the oracles too) --

    def _cf(self, spec):
        sp = "".join(ch for ch in spec if ch not in "NCOI")
        return ("NC" if "N" in spec else "OI") + sp

    def to_cf(self, a, spec):
        """An array of ``spec``'s layout (with this case's batch axes) as (N, C, *spatial), one batch axis."""
        if self.lead is None:
            a = jnp.expand_dims(a, spec.index("N"))
        else:
            a = jnp.reshape(a, (-1, *a.shape[len(self.lead) + 1 :]))  # every layout here has N first
        return jnp.transpose(a, [spec.index(ch) for ch in self._cf(spec)])

    def y_cf(self, y):
        return self.to_cf(y, self.specs[2])

    def w_forward_cf(self, w):
        rhs = self.specs[1]
        w = jnp.transpose(w, [rhs.index(ch) for ch in self._cf(rhs)])
        if self.tk:
            return w
        g, (o, i, *k) = self.group, w.shape  # O: the result's channels, I: y's per group
        w = jnp.reshape(jnp.swapaxes(jnp.reshape(w, (g, o // g, i, *k)), 1, 2), (g * i, o // g, *k))
        return jnp.flip(w, axis=tuple(range(2, 2 + self.nd)))

    def x_from_cf(self, x, b):
        if b is not None:
            x = x + jnp.reshape(b, (-1,) + (1,) * self.nd)
        lhs = self.specs[0]
        x = jnp.transpose(x, [self._cf(lhs).index(ch) for ch in lhs])
        if self.lead is None:
            return jnp.squeeze(x, lhs.index("N"))
        return jnp.reshape(x, (*self.lead, self.batch, *x.shape[1:]))

    def reference(self, y, w, b=None) -> np.ndarray:
        yc, wc = np.asarray(self.y_cf(y), np.float64), np.asarray(self.w_forward_cf(w), np.float64)
        if self.circular:
            lows = [lo for lo, _ in self.forward_pairs]
            x = circular_reference(yc, wc, self.x_sp, self.s, self.d, lows, self.group)
        else:
            x = reference.conv_transpose_nd(yc, wc, self.x_sp, self.s, self.d, self.forward_pairs, self.group)
        with enable_x64(True):
            b64 = None if b is None else np.asarray(b, np.float64)
            return np.asarray(self.x_from_cf(jnp.asarray(x), b64))

    def lax_vjp(self, y, w, b=None):
        """The VJP of lax's forward convolution (of the wrap-padded input for circular padding), sliced to y."""
        yc, wc = self.y_cf(y), self.w_forward_cf(w)
        pad = self.padding if isinstance(self.padding, str) else self.forward_pairs

        def fwd(x):
            if self.circular:
                x = jnp.pad(x, [(0, 0), (0, 0), *self.forward_pairs], mode="wrap")
            out = lax.conv_general_dilated(
                x,
                wc,
                self.s,
                "VALID" if self.circular else pad,
                rhs_dilation=self.d,
                feature_group_count=self.group,
                precision=HIGHEST,
            )
            return out[(slice(None), slice(None), *(slice(0, o) for o in self.y_sp))]

        x0 = jnp.zeros((yc.shape[0], self.c_in, *self.x_sp), yc.dtype)
        return self.x_from_cf(jax.vjp(fwd, x0)[1](yc)[0], b)


NHWC = ("NHWC", "HWIO", "NHWC")
EXT = [
    # output_size (PyTorch's output_size, TensorFlow's output_shape)
    Ext("size-1d-s3-pairs-g2", (4,), (3,), 3, [(1, 0)], output_padding=2, group=2, by_size=True),
    Ext("size-1d-s2-d2-ref", (3,), (3,), 2, [(1, 1)], output_padding=1, dilation=2, by_size=True),
    Ext("size-2d-same-nhwc", (3, 4), (3, 2), (2, 3), "SAME", output_padding=(1, 2), dn=NHWC, by_size=True),
    Ext(
        "size-3d-valid-cropped",
        (2, 2, 3),
        (2, 2, 2),
        1,
        "VALID",
        output_padding=(1, 0, 1),
        dilation=(2, 1, 2),
        by_size=True,
    ),
    # leading batch axes, or none
    Ext("batch-1d-unbatched", (5,), (3,), 2, 1, output_padding=1, lead=None),
    Ext("batch-1d-two-axes-last", (4,), (2,), 3, "VALID", lead=(2, 3), dn=channels_last(1)),
    Ext("batch-2d-unbatched-nhwc-g2", (3, 3), (2, 3), 2, [(0, 1), (1, 0)], lead=None, dn=NHWC, group=2),
    Ext("batch-2d-one-axis", (3, 2), (3, 3), 1, "SAME", lead=(3,)),
    Ext("batch-3d-unbatched", (2, 2, 2), (2, 2, 2), 2, "VALID", lead=None),
    Ext("batch-3d-two-axes-last", (2, 2, 3), (2, 2, 2), (1, 2, 1), 1, lead=(2, 1), dn=channels_last(3)),
    # circular padding
    Ext("circ-1d-same-s2-k4", (5,), (4,), 2, "SAME", circular=True),
    Ext("circ-1d-lo-above-size-g2", (4,), (3,), 2, [(6, 1)], output_padding=1, group=2, circular=True),
    Ext("circ-1d-s2-d3-cropped-ref", (4,), (2,), 2, [(1, 1)], output_padding=2, dilation=3, circular=True),
    Ext("circ-2d-same-lower-nhwc", (3, 4), (3, 4), (2, 1), "SAME_LOWER", output_padding=(1, 0), dn=NHWC, circular=True),
    Ext("circ-2d-valid", (3, 3), (2, 3), (1, 2), "VALID", circular=True),
    Ext(
        "circ-3d-pairs-g2",
        (2, 3, 2),
        (3, 2, 2),
        (2, 1, 2),
        [(1, 1), (0, 1), (2, 0)],
        output_padding=(1, 0, 0),
        group=2,
        circular=True,
    ),
    Ext("circ-3d-same-s2-d2-ref", (2, 2, 2), (2, 2, 2), 2, "SAME", dilation=2, circular=True),
    # transpose_kernel=False
    Ext("tk-1d-same-g2", (5,), (3,), 2, "SAME", group=2, tk=False),
    Ext("tk-1d-s2-d2-g2-ref", (4,), (3,), 2, [(1, 1)], dilation=2, group=2, tk=False),
    Ext("tk-2d-nhwc-pairs", (3, 4), (3, 2), (2, 1), [(1, 0), (0, 1)], output_padding=(1, 0), dn=NHWC, tk=False),
    Ext("tk-3d-valid-d-g2", (2, 3, 2), (2, 2, 2), 1, "VALID", dilation=(1, 2, 1), group=2, tk=False),
    # 'SAME_LOWER', and the strings with output_padding
    Ext("same-1d-op1-k4", (5,), (4,), 2, "SAME", output_padding=1),
    Ext("same-lower-1d-op2-g2", (4,), (3,), 3, "SAME_LOWER", output_padding=2, group=2),
    Ext("same-1d-s2-d2-op1-ref", (4,), (3,), 2, "SAME", output_padding=1, dilation=2),
    Ext("same-lower-2d-nhwc", (3, 2), (2, 4), (2, 3), "SAME_LOWER", output_padding=(1, 1), dn=NHWC),
    Ext("valid-2d-op", (3, 3), (2, 3), 2, "VALID", output_padding=(1, 1)),
    Ext("same-3d-op", (2, 2, 2), (3, 2, 3), (2, 2, 1), "SAME", output_padding=(1, 1, 0)),
    Ext("same-lower-3d-d2", (2, 3, 2), (2, 2, 3), 1, "SAME_LOWER", dilation=(2, 1, 1)),
    # bias
    Ext("bias-1d-last", (5,), (3,), 2, 1, dn=channels_last(1), bias=True),
    Ext(
        "bias-2d-mixed-layout",
        (3, 2),
        (2, 3),
        (1, 2),
        [(1, 0), (0, 2)],
        output_padding=(0, 1),
        dn=("NHWC", "OIHW", "NCHW"),
        bias=True,
    ),
    Ext("bias-3d-g2", (2, 2, 3), (2, 3, 2), (2, 1, 1), 1, output_padding=(1, 0, 0), group=2, bias=True),
    # everything at once
    Ext(
        "all-1d",
        (4,),
        (3,),
        2,
        "SAME_LOWER",
        output_padding=1,
        group=2,
        lead=None,
        circular=True,
        tk=False,
        by_size=True,
        bias=True,
        dn=channels_last(1),
    ),
    Ext(
        "all-2d",
        (3, 2),
        (2, 3),
        (2, 1),
        "SAME",
        output_padding=(1, 0),
        group=2,
        lead=(2,),
        circular=True,
        tk=False,
        by_size=True,
        bias=True,
        dn=NHWC,
    ),
    Ext(
        "all-3d",
        (2, 2, 2),
        (2, 2, 2),
        (1, 2, 1),
        [(1, 0), (0, 1), (1, 1)],
        output_padding=(0, 1, 0),
        lead=(2, 1),
        circular=True,
        tk=False,
        by_size=True,
        bias=True,
    ),
]
EXT_BY_NAME = {c.name: c for c in EXT}
FEATURES = (
    "output_size",
    "batch_axes",
    "circular",
    "transpose_kernel",
    "same_lower",
    "string_with_output_padding",
    "bias",
)


def test_ext_covers_every_feature_in_every_rank():
    assert len(EXT_BY_NAME) == len(EXT)
    for feature in FEATURES:
        for nd in (1, 2, 3):
            assert any(feature in c.features and c.nd == nd for c in EXT), (feature, nd)
            assert any(feature in c.features and c.nd == nd and c.lax_safe for c in EXT), (feature, nd, "lax")
    for c in EXT:
        assert min(c.x_sp) >= 1, c.name
        if c.lead is None:
            assert len(c.shapes[0]) == c.nd + 1, c.name
        if c.padding in ("SAME", "SAME_LOWER"):  # the sizes whose 'SAME' forward gives y's size back
            assert all(-(-x // s) == o for x, s, o in zip(c.x_sp, c.s, c.y_sp)), c.name
    assert any(not c.lax_safe for c in EXT if c.circular) and any(not c.lax_safe for c in EXT if not c.tk)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in EXT])
def test_ext_float32(case):
    """Shape and values against the float64 reference and, where safe, lax's VJP; NumPy and JAX inputs."""
    y, w, b = case.inputs(seed=len(case.name))
    fns = {"ours": case.ours, **({"vjp": case.lax_vjp} if case.lax_safe else {})}
    got = compile_and_run(lambda y, w, b: {k: f(y, w, b) for k, f in fns.items()}, y, w, b)
    want = case.reference(y, w, b)
    assert got["ours"].shape == case.shapes[2] == want.shape
    assert np.max(np.abs(want)) > 0
    assert_close(got["ours"], want, "ours vs reference", rtol=1e-5, scale_atol=1e-5)
    if "vjp" in got:
        assert_close(got["vjp"], want, "lax's vjp vs reference (the oracle itself)", rtol=1e-5, scale_atol=1e-5)
    eager = case.ours(y, w, b)  # NumPy arrays, eagerly
    assert isinstance(eager, jax.Array)
    assert_close(eager, want, "eager, NumPy inputs", rtol=1e-5, scale_atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_ext_float64(nd):
    _check_float64([c for c in EXT if c.nd == nd], seed=3)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_circular_is_the_adjoint_of_the_circularly_padded_forward(nd):
    """<conv_transpose(y), x> == <y, conv(wrap_pad(x))> in float64 NumPy, strided + dilated cases included."""
    cases = [c for c in EXT if c.circular and c.nd == nd]
    assert cases
    for c in cases:
        y, w, _ = c.inputs(seed=11)
        (x,) = random_arrays(12, c.shapes[2])
        with enable_x64(True):
            ours = np.asarray(c.ours(y.astype(np.float64), w.astype(np.float64)))
            xc = np.asarray(c.to_cf(jnp.asarray(x), c.specs[0]))
            wc = np.asarray(c.w_forward_cf(jnp.asarray(w, jnp.float64)))
            yc = np.asarray(c.y_cf(jnp.asarray(y, jnp.float64)))
        padded = np.pad(xc, [(0, 0), (0, 0), *c.forward_pairs], mode="wrap")
        fwd = reference.conv_nd(padded, wc, c.s, c.d, ((0, 0),) * nd, c.group)
        fwd = fwd[(slice(None), slice(None), *(slice(0, o) for o in c.y_sp))]
        lhs, rhs = float(np.vdot(ours, x)), float(np.vdot(yc, fwd))
        assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(rhs)), (c.name, lhs, rhs)


def _lax_ct_any(y, w, s, pad, d, dn, tk):
    return lax.conv_transpose(
        y, w, s, pad, rhs_dilation=d, dimension_numbers=dn, transpose_kernel=tk, precision=HIGHEST
    )


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_transpose_kernel_false_equals_lax_conv_transpose(nd):
    """lax's own transpose_kernel=False ('SAME' always, 'VALID' where every extent reaches the stride); groups: vjp."""
    combos = [
        (kd, y_sp, dn, pad)
        for kd, y_sp, dn in LAX_CT[nd]
        for pad in ("SAME", "VALID")
        if pad == "SAME" or all(_extent(k, d) >= s for k, s, d in zip(*kd))
    ]
    args = []
    for i, ((k, _, _), y_sp, dn, _) in enumerate(combos):
        sizes_y = {"N": 2, "C": 3, **dict(zip(SPATIAL[nd], y_sp))}
        sizes_w = {"O": 2, "I": 3, **dict(zip(SPATIAL[nd], k))}  # I: y's channels
        args.append(random_arrays(i, _layout_shape(dn[2], sizes_y), _layout_shape(dn[1], sizes_w), dtype=np.float32))

    def run(args):
        out = []
        for ((_, s, d), _, dn, pad), (y, w) in zip(combos, args):
            ours = jcb.conv_transpose(y, w, s, pad, rhs_dilation=d, dimension_numbers=dn, transpose_kernel=False)
            out.append((ours, _lax_ct_any(y, w, s, pad, d, dn, False)))
        return out

    for (kd, _, dn, pad), (ours, theirs) in zip(combos, compile_and_run(run, args)):
        assert_close(ours, theirs, f"{pad} {kd} {dn}", rtol=1e-5, scale_atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_keras_same_with_output_padding_is_same_with_that_output_size(nd):
    """Keras' rule (its size ``(o - 1) * s + ek % 2 + q`` and the JAX backend's lax.conv_transpose padding).

    Keras passes ``left = min(ceil(L / 2), ek - 1)``, ``right = L - left`` with ``L = ek + ek % 2 - 2 + q`` to
    ``lax.conv_transpose(..., transpose_kernel=True)``; where its size is above ``(o - 1) * s`` that is
    ``'SAME'`` with ``output_size`` here, and for an even extent with ``q = 0`` the pairs ``(ek // 2, ek // 2)``.
    """
    rng = np.random.default_rng(nd)
    checked = 0
    for k, s, q in itertools.product((1, 2, 3, 4, 5), (1, 2, 3), (0, 1, 2)):
        if q >= s:
            continue
        ks, ss, qs = (k,) * nd, tuple([s] + [1] * (nd - 1)), (q,) + (0,) * (nd - 1)
        y_sp = (3,) * nd
        y = rng.standard_normal((1, 2, *y_sp)).astype(np.float32)
        w = rng.standard_normal((2, 3, *ks)).astype(np.float32)
        pads = []
        for kk, qa in zip(ks, qs):
            length = kk + kk % 2 - 2 + qa
            left = min(length // 2 + length % 2, kk - 1)
            pads.append((left, length - left))
        theirs = lax.conv_transpose(
            y, w, ss, pads, transpose_kernel=True, dimension_numbers=channels_first(nd), precision=HIGHEST
        )
        sizes = [(o - 1) * sa + kk % 2 + qa for o, kk, sa, qa in zip(y_sp, ks, ss, qs)]
        assert list(theirs.shape[2:]) == sizes  # keras' deconv_output_length
        same = [n > (o - 1) * sa for n, o, sa in zip(sizes, y_sp, ss)]
        if all(same):
            ours = jcb.conv_transpose(y, w, ss, "SAME", output_size=sizes)
        else:  # per axis: lax's 'SAME' pairs for that size, or (ek // 2, ek // 2)
            lax_same = lax.padtype_to_pads(sizes, ks, ss, "SAME")
            pairs = [tuple(p) if ok else (kk // 2, kk // 2) for ok, p, kk in zip(same, lax_same, ks)]
            ours = jcb.conv_transpose(y, w, ss, pairs, output_size=sizes)
        assert_close(ours, theirs, f"k {k} s {s} q {q}", rtol=1e-5, scale_atol=1e-5)
        checked += 1
    assert checked > 20


def test_output_size_takes_the_full_result_shape():
    """PyTorch and TensorFlow also take the whole shape: its batch and channel entries must be the result's."""
    case = EXT_BY_NAME["batch-3d-two-axes-last"]  # (B1, B2, N, D, H, W, C)
    y, w, _ = case.inputs()
    full = case.shapes[2]
    got = jcb.conv_transpose(y, w, case.strides, case.padding, output_size=full, dimension_numbers=case.dn)
    assert_close(got, case.reference(y, w), "full shape", rtol=1e-5, scale_atol=1e-5)
    unbatched = EXT_BY_NAME["batch-2d-unbatched-nhwc-g2"]  # (H, W, C)
    y, w, _ = unbatched.inputs()
    kw = dict(dimension_numbers=unbatched.dn, feature_group_count=2)
    got = jcb.conv_transpose(y, w, unbatched.strides, unbatched.padding, output_size=unbatched.shapes[2], **kw)
    assert got.shape == unbatched.shapes[2]
    bad = (*full[:-1], full[-1] + 1)
    with pytest.raises(ValueError, match=r"output_size .* must keep its batch and channel entries: the result is"):
        jcb.conv_transpose(
            y := case.inputs()[0],
            case.inputs()[1],
            case.strides,
            case.padding,
            output_size=bad,
            dimension_numbers=case.dn,
        )
    assert y.shape[-1] == case.c_out


EXT_ERRORS = {
    "size-unreachable": (
        _call(np.ones((1, 4, 16), np.float32), np.ones((4, 2, 3), np.float32), 2, [(1, 1)], output_size=(33,)),
        ValueError,
        r"output_size \(33,\) is not reachable on spatial axis 0: .* give sizes 31\.\.32, got 33; reachable per "
        r"spatial axis: axis 0: 31\.\.32",
    ),
    "size-unreachable-3d-lists-every-axis": (
        _call(Y3, W3, (2, 1, 3), "SAME", output_size=(4, 2, 7)),
        ValueError,
        r"not reachable on spatial axis 2: .* 'SAME' give sizes 4\.\.6, got 7; reachable per spatial axis: axis 0: "
        r"3\.\.4, axis 1: 2\.\.2, axis 2: 4\.\.6",
    ),
    "size-and-output-padding": (
        _call(output_size=(11,), output_padding=1),
        ValueError,
        r"pass output_size or output_padding, not both",
    ),
    "size-count": (_call(output_size=(11, 11)), ValueError, r"'output_size' needs 1 entries .* or 3 .* got 2"),
    "size-float": (_call(output_size=(11.0,)), TypeError, r"'output_size' must be None, 1 ints"),
    "padding-mode": (_call(padding_mode="reflect"), ValueError, r"'padding_mode' must be one of \('zeros', 'circular'"),
    "padding-mode-type": (_call(padding_mode=None), ValueError, r"'padding_mode' must be one of"),
    "transpose-kernel-type": (_call(transpose_kernel=1), TypeError, r"'transpose_kernel' must be a Python bool"),
    "bias-shape": (
        _call(bias=np.ones((4,), np.float32)),
        ValueError,
        r"'bias' must have shape \(2,\), one entry per channel of the result .* got shape \(4,\)",
    ),
    "bias-list": (_call(bias=[0.0, 0.0]), TypeError, r"'bias' must be a JAX or NumPy array"),
    "bias-dtype": (_call(bias=np.ones((2,), np.float16)), TypeError, r"'y' and 'bias' must have the same dtype"),
    "tk-false-channels": (
        _call(w=np.ones((3, 2, 3), np.float32), transpose_kernel=False),
        ValueError,
        r"y has 4 channels but w's I axis 2 times feature_group_count 1 is 2; with transpose_kernel=False",
    ),
    "tk-false-groups": (
        _call(w=np.ones((3, 2, 3), np.float32), transpose_kernel=False, feature_group_count=2),
        ValueError,
        r"feature_group_count=2 must divide w's O axis 3 \(the result's channels with transpose_kernel=False\)",
    ),
    "y-rank-below-unbatched": (
        _call(y=np.ones((5,), np.float32)),
        ValueError,
        r"y must have rank 2 \(unbatched\), 3 \(the layout's axes\) or more",
    ),
}


@pytest.mark.parametrize("name", sorted(EXT_ERRORS))
def test_errors_of_the_new_arguments(name):
    fn, exc, pattern = EXT_ERRORS[name]
    with pytest.raises(exc, match=pattern) as info:
        fn()
    assert str(info.value).startswith("conv_transpose: "), str(info.value)


# issue 30 item 5: a mismatch of y's channels and w's O axis says which layout or convention fits.
HINTS = {
    "channels-last-y-and-hwio-kernel": (
        np.ones((2, 5, 5, 8), np.float32),  # NHWC
        np.ones((3, 3, 4, 8), np.float32),  # HWIO, O = 8
        {},
        r"y has 5 channels but w has 3 output channels \(O\).*the shapes fit "
        r"dimension_numbers=\('NHWC', 'HWIO', 'NHWC'\)",
    ),
    "hwio-kernel-only": (
        np.ones((2, 8, 5, 5), np.float32),  # NCHW
        np.ones((3, 3, 4, 8), np.float32),  # HWIO
        {},
        r"the shapes fit dimension_numbers=\('NCHW', 'HWIO', 'NCHW'\)",
    ),
    "channels-last-3d": (
        np.ones((1, 4, 4, 4, 6), np.float32),
        np.ones((2, 2, 2, 3, 6), np.float32),
        {},
        r"dimension_numbers=\('NDHWC', 'DHWIO', 'NDHWC'\)",
    ),
    "the-I-axis-matches": (
        np.ones((2, 8, 5, 5), np.float32),
        np.ones((4, 8, 3, 3), np.float32),  # OIHW with I = y's channels: lax's transpose_kernel=False layout
        {},
        r"y has 8 channels but w has 4 output channels \(O\).*w's I axis matches y's channels: .* pass "
        r"transpose_kernel=False",
    ),
    "the-O-axis-matches": (
        np.ones((2, 8, 5, 5), np.float32),
        np.ones((8, 4, 3, 3), np.float32),
        {"transpose_kernel": False},
        r"w's I axis 4 times feature_group_count 1 is 4.*w's O axis matches y's channels: .* pass "
        r"transpose_kernel=True",
    ),
    "nothing-fits": (np.ones((1, 5, 7), np.float32), np.ones((3, 2, 3), np.float32), {}, r"\)$"),
}


@pytest.mark.parametrize("name", sorted(HINTS))
def test_channel_mismatch_suggests_what_fits(name):
    y, w, kw, pattern = HINTS[name]
    with pytest.raises(ValueError, match=pattern) as info:
        jcb.conv_transpose(y, w, 2, "SAME", **kw)
    msg = str(info.value)
    if name == "nothing-fits":
        assert "fit" not in msg and "transpose_kernel" not in msg, msg
        return
    # The suggestion works: the same call with it succeeds.
    m = re.search(r"dimension_numbers=(\([^)]*\))(, transpose_kernel=(\w+))?", msg)
    if m:
        kw = {**kw, "dimension_numbers": eval(m[1])}  # noqa: S307 - a tuple of str literals from our message
        if m[3]:
            kw["transpose_kernel"] = m[3] == "True"
    else:
        kw = {**kw, "transpose_kernel": "transpose_kernel=True" in msg}
    assert jcb.conv_transpose(y, w, 2, "SAME", **kw).ndim == y.ndim


def test_new_arguments_are_static_under_jit_and_bias_is_traced():
    case = EXT_BY_NAME["all-2d"]
    y, w, b = case.inputs(seed=5)
    f = functools.partial(jcb.conv_transpose, strides=case.strides, padding=case.padding, **case.kwargs())
    jaxpr = jax.make_jaxpr(lambda y, w, b: f(y, w, bias=b))(y, w, b)
    assert [v.aval.shape for v in jaxpr.jaxpr.invars] == [y.shape, w.shape, b.shape]
    names = (
        "strides",
        "padding",
        "output_size",
        "transpose_kernel",
        "padding_mode",
        "feature_group_count",
        "rhs_dilation",
    )
    jitted = jax.jit(jcb.conv_transpose, static_argnames=(*names, "dimension_numbers"))
    kw = case.kwargs()
    got = jitted(y, w, strides=case.strides, padding=case.padding, bias=b, **kw)
    assert_close(got, case.reference(y, w, b), "static_argnames", rtol=1e-5, scale_atol=1e-5)
    with pytest.raises(TypeError, match="'transpose_kernel' must be a Python bool"):
        jax.jit(lambda y, w, t: jcb.conv_transpose(y, w, 2, "SAME", transpose_kernel=t))(y, w, False)


def test_half_precision_rounds_once_with_the_bias_and_the_fold():
    """bfloat16 with circular padding and a bias: the float32 result of the exact inputs, rounded once."""
    case = EXT_BY_NAME["all-1d"]
    y, w, b = (a.astype(jnp.bfloat16) for a in case.inputs(seed=8))
    got = case.ours(y, w, b)
    assert got.dtype == jnp.bfloat16
    want = case.reference(*(np.asarray(a, np.float32) for a in (y, w, b)))
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(jnp.asarray(want, jnp.bfloat16), np.float32))


def test_conv_transpose_sizes_same_lower_and_same():
    """'SAME' and 'SAME_LOWER': the sizes whose forward 'SAME' convolution has y's size, o * s - output_padding."""
    for pad in ("SAME", "SAME_LOWER"):
        ranges = jcb.conv_transpose_sizes((3, 2), (3, 2), (2, 3), pad)
        assert [list(r) for r in ranges] == [[5, 6], [4, 5, 6]]
        y = jax.ShapeDtypeStruct((1, 2, 3, 2), jnp.float32)
        w = jax.ShapeDtypeStruct((2, 1, 3, 2), jnp.float32)
        for op in itertools.product(range(2), range(3)):
            out = jax.eval_shape(
                lambda y, w, op=op, pad=pad: jcb.conv_transpose(y, w, (2, 3), pad, output_padding=op), y, w
            )
            assert out.shape[2:] == (6 - op[0], 6 - op[1])
            assert all(-(-n // s) == o for n, s, o in zip(out.shape[2:], (2, 3), (3, 2)))

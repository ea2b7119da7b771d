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
        """PyTorch's rule, or ``o * s`` for 'SAME'."""
        if self.padding == "SAME":
            return tuple(o * s for o, s in zip(self.y_sp, self.s))
        pairs = self.forward_pairs
        return tuple(
            (o - 1) * s - lo - hi + d * (k - 1) + 1 + p
            for o, k, s, d, (lo, hi), p in zip(self.y_sp, self.kernel, self.s, self.d, pairs, self.op)
        )

    @property
    def forward_pairs(self) -> tuple[tuple[int, int], ...]:
        """The forward convolution's (lo, hi) padding; for 'SAME' lax's own pairs for the ``o * s`` input."""
        if self.padding == "SAME":
            ek = [d * (k - 1) + 1 for k, d in zip(self.kernel, self.d)]
            return tuple(lax.padtype_to_pads(self.x_sp, ek, self.s, "SAME"))
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
    cases = [c for c in GRID if c.nd == nd]
    with enable_x64(True):
        args = [c.inputs(seed=5, dtype=np.float64) for c in cases]
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
    with pytest.raises(ValueError, match="flipped_conv.*stride 1"):
        jcb.conv_transpose(y, w, 2, "VALID", cpu_path="flipped_conv")
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
        _call(padding="SAME", output_padding=1),
        ValueError,
        r"output_padding must be 0 with padding='SAME'",
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
        r"'padding' as a string must be 'SAME' or 'VALID', got 'FULL'",
    ),
    "padding-triple": (_call(padding=[(1, 1, 1)]), TypeError, r"'padding' must be 'SAME', 'VALID', an int or"),
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
        r"rank 3, 4 or 5 \(1, 2 or 3 spatial dims\), got y shape \(1, 4, 2, 2, 2, 2\)",
    ),
    "rank-mismatch": (_call(Y1, W3), ValueError, r"got y shape \(1, 4, 5\) and w shape \(4, 2, 2, 2, 2\)"),
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
            if padding == "SAME":
                assert op[a] == 0 and shape[a] == y_size[a] * s[a]
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

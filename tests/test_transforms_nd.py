"""JAX transformations of the 1-D and 3-D ``conv_transpose`` against lax's own autodiff.

The oracle is the transposed convolution written as ``jax.vjp`` of plain
``lax.conv_general_dilated`` w.r.t. its input (for an ``output_padding`` of at
least the stride: the forward convolution sliced to ``y``'s size), with the
padding and result size computed here from PyTorch's rule. Every
transformation of it is JAX's own differentiation of a convolution,
independent of this project's rules. No case has a stride and a dilation above
1 on one axis (XLA CPU may abort on lax's transposes there, see
``test_hazard.py``). Values of every dtype are also checked against the
float64 NumPy reference, and ``check_grads`` runs finite differences in float64.

2-D is covered by ``test_transforms.py``; vmap over a size-0 axis by
``test_regressions.py``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax import export, lax

import jax_conv_bpi as jcb

from .support import compile_and_run, default_xla_env, enable_x64, random_arrays, reference, requires_cpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
HIGHEST = lax.Precision.HIGHEST
ALL_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


@dataclasses.dataclass(frozen=True)
class Case:
    """One ``conv_transpose`` call; ``dn`` None is channels-first, else channels-last (``N...C``, ``...IO``)."""

    name: str
    y: tuple[int, ...]  # channels-first (N, C_out, *spatial)
    w: tuple[int, ...]  # (C_out, C_in / g, *kernel)
    strides: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    group: int = 1
    channels_last: bool = False

    @property
    def nd(self):
        return len(self.y) - 2

    @property
    def dn(self):
        sp = "DHW"[3 - self.nd :]
        if self.channels_last:
            return ("N" + sp + "C", sp + "IO", "N" + sp + "C")
        return ("NC" + sp, "OI" + sp, "NC" + sp)

    @property
    def x_sp(self):
        """PyTorch's rule: (o - 1) * s - lo - hi + d * (k - 1) + 1 + output_padding."""
        return tuple(
            (o - 1) * s - lo - hi + d * (k - 1) + 1 + p
            for o, k, s, d, (lo, hi), p in zip(
                self.y[2:], self.w[2:], self.strides, self.dilation, self.pairs, self.output_padding
            )
        )

    def _layout(self, cf_shape, spec):
        """A channels-first shape in ``spec``'s order (channels-first specs are the identity)."""
        n_or_o, c_or_i, *sp = cf_shape
        if not self.channels_last:
            return tuple(cf_shape)
        return (n_or_o, *sp, c_or_i) if spec[0] == "N" else (*sp, c_or_i, n_or_o)

    @property
    def y_shape(self):
        return self._layout(self.y, "N")

    @property
    def w_shape(self):
        return self._layout(self.w, "W")

    @property
    def x_shape(self):
        return self._layout((self.y[0], self.group * self.w[1], *self.x_sp), "N")

    def ours(self, y, w):
        return jcb.conv_transpose(
            y,
            w,
            self.strides,
            self.pairs,
            output_padding=self.output_padding,
            rhs_dilation=self.dilation,
            feature_group_count=self.group,
            dimension_numbers=self.dn if self.channels_last else None,
        )

    def lax_op(self, y, w):
        """jax.vjp w.r.t. x of lax's forward convolution (sliced to y's size), applied to y."""
        out_spec = self.dn[2]
        sp_axes = [out_spec.index(ch) for ch in out_spec if ch not in "NC"]

        def conv(x):
            out = lax.conv_general_dilated(
                x,
                w,
                self.strides,
                self.pairs,
                rhs_dilation=self.dilation,
                feature_group_count=self.group,
                dimension_numbers=self.dn,
                precision=HIGHEST,
            )
            for axis, o in zip(sp_axes, self.y[2:]):
                out = lax.slice_in_dim(out, 0, o, axis=axis)
            return out

        return jax.vjp(conv, jnp.zeros(self.x_shape, y.dtype))[1](y)[0]

    def reference(self, y, w):
        """float64 NumPy reference in the result's layout."""
        if self.channels_last:
            y, w = np.moveaxis(y, -1, 1), np.transpose(w, (self.nd + 1, self.nd, *range(self.nd)))
        x = reference.conv_transpose_nd(y, w, self.x_sp, self.strides, self.dilation, self.pairs, self.group)
        return np.moveaxis(x, 1, -1) if self.channels_last else x

    def inputs(self, seed=0, dtype=np.float32):
        """y, w and a cotangent-shaped weight c for the scalar loss."""
        return random_arrays(seed, self.y_shape, self.w_shape, self.x_shape, dtype=dtype)


CASES = [
    # strided, grouped, asymmetric padding, output_padding; channels-last
    Case("1d-s2-g2-op1-nwc", (2, 4, 5), (4, 3, 3), (2,), ((1, 0),), (1,), (1,), group=2, channels_last=True),
    # dilated with output_padding >= stride (the cropped operator), grouped
    Case("1d-d2-cropped-g2", (1, 4, 4), (4, 1, 3), (1,), ((1, 1),), (1,), (2,), group=2),
    # strided on two axes, grouped, asymmetric padding, output_padding
    Case(
        "3d-s212-g2-op100",
        (1, 4, 2, 3, 2),
        (4, 1, 2, 3, 2),
        (2, 1, 2),
        ((1, 1), (0, 1), (1, 0)),
        (1, 0, 0),
        (1, 1, 1),
        2,
    ),
]


def _ids(cases):
    return [pytest.param(c, id=c.name) for c in cases]


def test_cases_are_what_they_claim():
    for c in CASES:
        assert not any(s > 1 and d > 1 for s, d in zip(c.strides, c.dilation)), c.name  # lax-safe
        assert all(0 <= p < max(s, d) for p, s, d in zip(c.output_padding, c.strides, c.dilation)), c.name
        assert max(c.strides) > 1 or max(c.dilation) > 1, c.name
        assert c.group > 1 and any(p for p in c.output_padding), c.name
        for x, o, k, s, d, (lo, hi), p in zip(
            c.x_sp, c.y[2:], c.w[2:], c.strides, c.dilation, c.pairs, c.output_padding
        ):
            assert reference.output_size(x, k, s, d, lo, hi) == o + p // s, c.name
    assert any(p >= s for c in CASES for p, s in zip(c.output_padding, c.strides))  # a cropped case


# ---------------------------------------------------------------------------
# Transformations, each applied to ours and to the lax oracle
# ---------------------------------------------------------------------------

B = 3


def _stack(seed, n, shape):
    return random_arrays(seed, (n, *shape), dtype=np.float32)[0]


def _loss(op, c):
    """A non-linear scalar loss: the op is bilinear, so higher derivatives need one."""
    return lambda y, w: jnp.sum(jnp.sin(op(y, w)) * c)


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _directions(case, seed):
    return _stack(seed, 1, case.y_shape)[0], _stack(seed + 1, 1, case.w_shape)[0]


def t_jit(op, case, y, w, c):
    return jax.jit(op)(y, w)


def t_grads_123(op, case, y, w, c):
    """Orders 1, 2, 3 w.r.t. (y, w), as gradients of scalar projections of the lower orders."""
    v, u = _directions(case, 3), _directions(case, 5)
    g1 = jax.grad(_loss(op, c), argnums=(0, 1))
    g2 = jax.grad(lambda a, b: _vdot(g1(a, b), v), argnums=(0, 1))
    g3 = jax.grad(lambda a, b: _vdot(g2(a, b), u), argnums=(0, 1))
    return g1(y, w), g2(y, w), g3(y, w)


def t_jvp(op, case, y, w, c):
    t = _directions(case, 7)
    return jax.jvp(op, (y, w), t), jax.jvp(_loss(op, c), (y, w), t)


def t_jacfwd_jacrev(op, case, y, w, c):
    return jax.jacfwd(op, argnums=(0, 1))(y, w), jax.jacrev(op, argnums=(0, 1))(y, w)


def t_hessian(op, case, y, w, c):
    return jax.hessian(_loss(op, c), argnums=(0, 1))(y, w)


TRANSFORMS = {f.__name__[2:]: f for f in (t_jit, t_grads_123, t_jvp, t_jacfwd_jacrev, t_hessian)}


def _assert_tree_close(got, want, what, rtol=1e-5, scale_atol=2e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    leaves = jax.tree.leaves(want)
    scale = max(1.0, max(float(np.max(np.abs(x), initial=0.0)) for x in leaves))
    for i, (a, b) in enumerate(zip(jax.tree.leaves(got), leaves)):
        assert a.shape == b.shape, (what, i, a.shape, b.shape)
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            np.asarray(b, np.float64),
            rtol=rtol,
            atol=scale_atol * scale,
            err_msg=f"{what} {i}",
        )


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("case", _ids(CASES))
def test_transform_matches_lax_autodiff(case, name):
    y, w, c = case.inputs()
    fn = TRANSFORMS[name]
    got = compile_and_run(lambda a, b: fn(case.ours, case, a, b, c), y, w)
    want = compile_and_run(lambda a, b: fn(case.lax_op, case, a, b, c), y, w)
    nonzero = [x for x in jax.tree.leaves(want) if np.any(np.asarray(x) != 0)]
    assert nonzero, "the oracle's result is all zeros"
    _assert_tree_close(got, want, name)


@pytest.mark.parametrize("case", _ids(CASES))
def test_first_order_matches_the_reference(case):
    """The value, and the gradient of <op, c> (the forward conv and the weight gradient), in float64 NumPy."""
    y, w, c = case.inputs(seed=1)
    out, (g_y, g_w) = compile_and_run(
        lambda a, b: (case.ours(a, b), jax.grad(lambda a, b: jnp.vdot(case.ours(a, b), c), argnums=(0, 1))(a, b)), y, w
    )
    np.testing.assert_allclose(out, case.reference(y, w), rtol=1e-5, atol=1e-5 * np.max(np.abs(out)))
    # <op(y, w), c> is linear in y and in w, so <y', grad_y> == <op(y', w), c> and <w', grad_w> == <op(y, w'), c>
    # for any y', w': the gradients checked against the reference along random directions.
    for seed in (2, 3):
        y2 = _stack(seed, 1, case.y_shape)[0]
        w2 = _stack(seed + 10, 1, case.w_shape)[0]
        lhs = float(np.vdot(case.reference(y2, w), c))
        np.testing.assert_allclose(float(np.vdot(y2, g_y)), lhs, rtol=1e-5, atol=1e-5 * abs(lhs) + 1e-5)
        lhs = float(np.vdot(case.reference(y, w2), c))
        np.testing.assert_allclose(float(np.vdot(w2, g_w)), lhs, rtol=1e-5, atol=1e-5 * abs(lhs) + 1e-5)


_HESSIAN_CHILD = r"""
import numpy as np, jax, jax.numpy as jnp
import jax_conv_bpi as jcb
rng = np.random.default_rng(0)
y = jnp.asarray(rng.standard_normal((1, 4, 2, 3, 2)), jnp.float32)
w = jnp.asarray(rng.standard_normal((4, 1, 2, 3, 2)), jnp.float32)
c = jnp.asarray(rng.standard_normal((1, 2, 3, 5, 3)), jnp.float32)

def hessian(op):
    loss = lambda y, w: jnp.sum(jnp.sin(op(y, w)) * c)
    return jax.jit(jax.hessian(loss, argnums=(0, 1)))(y, w)

def lax_op(y, w):
    conv = lambda x: jax.lax.conv_general_dilated(
        x, w, (1, 1, 1), "VALID", feature_group_count=2, precision=jax.lax.Precision.HIGHEST)
    return jax.vjp(conv, jnp.zeros((1, 2, 3, 5, 3), jnp.float32))[1](y)[0]

want = hessian(lax_op)
got = hessian(lambda y, w: jcb.conv_transpose(y, w, 1, "VALID", feature_group_count=2))
for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5 * float(np.max(np.abs(b))))
print("ok")
"""


@requires_cpu
def test_hessian_3d_with_default_compiler_options():
    """In a child process (a crash there fails this test instead of killing pytest), with XLA's defaults.

    jaxlib 0.10's XLA CPU died here with SIGSEGV (in a YNNPACK reduce fusion) while the ``direct``
    forms reduced over a group's channels; they add them with unrolled adds now.
    """
    env = default_xla_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", _HESSIAN_CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"child exited with {proc.returncode} (-11 is SIGSEGV):\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------
# vmap against a Python loop of lax's vjp
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batched", ["y", "w", "both"])
@pytest.mark.parametrize("case", _ids(CASES))
def test_vmap_matches_a_loop_of_lax(case, batched):
    y, w, _ = case.inputs()
    ys, ws = _stack(1, B, case.y_shape), _stack(2, B, case.w_shape)
    axes = {"y": (0, None), "w": (None, 0), "both": (0, 0)}[batched]
    args = (ys if axes[0] == 0 else y, ws if axes[1] == 0 else w)
    got = compile_and_run(jax.vmap(case.ours, in_axes=axes), *args)
    lax_op = jax.jit(case.lax_op)
    want = np.stack([lax_op(ys[i] if axes[0] == 0 else y, ws[i] if axes[1] == 0 else w) for i in range(B)])
    assert got.shape == (B, *case.x_shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.max(np.abs(want))))


# ---------------------------------------------------------------------------
# Finite differences in float64
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _ids(CASES))
def test_check_grads_float64(case):
    with enable_x64(True):
        y, w, c = case.inputs(seed=13, dtype=np.float64)
        loss = _loss(case.ours, jnp.asarray(c))  # eager: faster here than recompiling each jit(jvp(...))
        args = (jnp.asarray(y), jnp.asarray(w))
        assert loss(*args).dtype == jnp.float64
        jax.test_util.check_grads(loss, args, order=2, modes=("fwd", "rev"))
    assert not jax.config.jax_enable_x64


# ---------------------------------------------------------------------------
# jax.export
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _ids(CASES))
def test_export_every_platform_and_round_trip(case):
    y, w, c = case.inputs(seed=4)
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (y, w)]
    grad = jax.grad(_loss(case.ours, c), argnums=(0, 1))
    lax_grad = jax.grad(_loss(case.lax_op, c), argnums=(0, 1))
    for fn, oracle in ((case.ours, case.lax_op), (grad, lax_grad)):
        exp = export.export(jax.jit(fn), platforms=ALL_PLATFORMS)(*specs)
        assert exp.platforms == ALL_PLATFORMS
        restored = export.deserialize(exp.serialize())
        assert restored.in_avals == exp.in_avals and restored.out_avals == exp.out_avals
        got = restored.call(y, w)
        _assert_tree_close(got, jax.jit(oracle)(y, w), "export vs lax")
        jax.tree.map(np.testing.assert_array_equal, got, exp.call(y, w))  # the round trip changes nothing
        _assert_tree_close(got, jax.jit(fn)(y, w), "export vs jit (which may take the native kernels)")


# ---------------------------------------------------------------------------
# dtypes against the float64 reference
# ---------------------------------------------------------------------------

# Error relative to the largest magnitude. Half precision accumulates in float32 and rounds once, so
# its error is at most half an ulp of each value: within one ulp of the largest (2**-10 for float16,
# 2**-7 for bfloat16). Measured: about a third of that. (test_transforms.py checks the rounding in 2-D.)
DTYPES = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 1e-5, "float64": 1e-12}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dtypes_against_the_float64_reference(dtype):
    with enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        args = [tuple(jnp.asarray(a, dt) for a in c.inputs(seed=8)[:2]) for c in CASES]
        got = compile_and_run(lambda args: [c.ours(*a) for c, a in zip(CASES, args)], args)
        for c, (y, w), g in zip(CASES, args, got):
            assert g.dtype == dt, (c.name, g.dtype)
            # the reference of the exact (rounded) inputs: only the op's own error is measured
            want = c.reference(np.asarray(y, np.float64), np.asarray(w, np.float64))
            assert g.shape == want.shape
            err = np.max(np.abs(np.asarray(g, np.float64) - want)) / np.max(np.abs(want))
            assert err <= DTYPES[dtype], (c.name, dtype, err)
    assert not jax.config.jax_enable_x64


# ---------------------------------------------------------------------------
# The keywords users of PyTorch, TensorFlow, Flax and Equinox reach for, under every transformation
# ---------------------------------------------------------------------------
#
# Each case combines several of output_size, leading batch axes (or none), circular padding,
# transpose_kernel=False, 'SAME_LOWER' / 'SAME' with an output size, and a bias (a traced array).
# The oracle is jax.vjp of lax.conv_general_dilated (of jnp.pad(x, pairs, mode="wrap") with 'VALID'
# for circular padding) on channels-first arrays, the forward kernel of a transpose_kernel=False kernel
# built here (per group O and I swapped, spatial axes flipped), plus the bias; sizes and padding pairs
# are written out per case (lax's own 'SAME' / 'SAME_LOWER' pairs via lax.padtype_to_pads).


@dataclasses.dataclass(frozen=True)
class KwCase:
    """One call; ``y_cf``/``x_sp`` channels-first with one batch axis, ``lead`` leading batch axes (None: unbatched)."""

    name: str
    y_cf: tuple[int, ...]  # (N, C_y, *spatial)
    kernel: tuple[int, ...]
    c_x: int
    strides: tuple[int, ...]
    padding: object  # 'SAME', 'SAME_LOWER' or pairs
    x_sp: tuple[int, ...]  # the result's spatial size, passed as output_size
    group: int = 1
    lead: tuple[int, ...] | None = ()
    channels_last: bool = False
    circular: bool = False
    tk: bool = True

    @property
    def nd(self):
        return len(self.kernel)

    @property
    def sp(self):
        return "DHW"[3 - self.nd :]

    @property
    def dn(self):
        if self.channels_last:
            return ("N" + self.sp + "C", self.sp + "IO", "N" + self.sp + "C")
        return ("NC" + self.sp, "OI" + self.sp, "NC" + self.sp)

    @property
    def pairs(self):
        if isinstance(self.padding, str):
            ek = [k for k in self.kernel]  # no dilation in these cases
            return tuple(tuple(p) for p in lax.padtype_to_pads(self.x_sp, ek, self.strides, self.padding))
        return tuple(self.padding)

    def _from_cf_shape(self, cf):
        n, c, *sp = cf
        layout = (n, *sp, c) if self.channels_last else (n, c, *sp)
        return layout[1:] if self.lead is None else (*self.lead, *layout)

    @property
    def y_shape(self):
        return self._from_cf_shape(self.y_cf)

    @property
    def x_shape(self):
        return self._from_cf_shape((self.y_cf[0], self.c_x, *self.x_sp))

    @property
    def w_shape(self):
        o, i = (self.y_cf[1], self.c_x // self.group) if self.tk else (self.c_x, self.y_cf[1] // self.group)
        return (*self.kernel, i, o) if self.channels_last else (o, i, *self.kernel)

    def ours(self, y, w, b):
        return jcb.conv_transpose(
            y,
            w,
            self.strides,
            self.padding,
            output_size=self.x_sp,
            feature_group_count=self.group,
            dimension_numbers=self.dn if self.channels_last else None,
            transpose_kernel=self.tk,
            padding_mode="circular" if self.circular else "zeros",
            bias=b,
        )

    def _to_cf(self, a):
        a = jnp.expand_dims(a, 0) if self.lead is None else jnp.reshape(a, (-1, *a.shape[len(self.lead) + 1 :]))
        return jnp.moveaxis(a, -1, 1) if self.channels_last else a

    def _from_cf(self, a):
        a = jnp.moveaxis(a, 1, -1) if self.channels_last else a
        return a[0] if self.lead is None else jnp.reshape(a, (*self.lead, self.y_cf[0], *a.shape[1:]))

    def lax_op(self, y, w, b):
        yc = self._to_cf(y)
        wc = jnp.transpose(w, (self.nd + 1, self.nd, *range(self.nd))) if self.channels_last else w
        if not self.tk:  # (C_x, C_y / g, *k) -> per group swapped and flipped: (C_y, C_x / g, *k)
            g, (o, i, *k) = self.group, wc.shape
            wc = jnp.reshape(jnp.swapaxes(jnp.reshape(wc, (g, o // g, i, *k)), 1, 2), (g * i, o // g, *k))
            wc = jnp.flip(wc, axis=tuple(range(2, 2 + self.nd)))

        def fwd(x):
            pad = self.padding if isinstance(self.padding, str) else self.pairs
            if self.circular:
                x, pad = jnp.pad(x, [(0, 0), (0, 0), *self.pairs], mode="wrap"), "VALID"
            out = lax.conv_general_dilated(x, wc, self.strides, pad, feature_group_count=self.group, precision=HIGHEST)
            return out[(slice(None), slice(None), *(slice(0, o) for o in self.y_cf[2:]))]

        x0 = jnp.zeros((yc.shape[0], self.c_x, *self.x_sp), yc.dtype)
        x = jax.vjp(fwd, x0)[1](yc)[0] + jnp.reshape(b, (-1,) + (1,) * self.nd)
        return self._from_cf(x)

    def inputs(self, seed=0, dtype=np.float32):
        """y, w, b and a result-shaped weight c for the scalar loss."""
        return random_arrays(seed, self.y_shape, self.w_shape, (self.c_x,), self.x_shape, dtype=dtype)


KW_CASES = [
    # unbatched, circular 'SAME_LOWER' of size 9 (output_padding 1), transpose_kernel=False, groups, channels-last
    KwCase(
        "1d-unbatched-circ-same-lower-tk-g2",
        (1, 4, 5),
        (4,),
        2,
        (2,),
        "SAME_LOWER",
        (9,),
        group=2,
        lead=None,
        channels_last=True,
        circular=True,
        tk=False,
    ),
    # two leading batch axes, NHWC, 'SAME' with an output size below o * s, zero padding
    KwCase(
        "2d-two-batch-axes-nhwc-same-size",
        (2, 3, 3, 2),
        (3, 2),
        4,
        (2, 3),
        "SAME",
        (5, 5),
        lead=(2,),
        channels_last=True,
    ),
    # 3-D circular with pairs (lo above the size on one axis), transpose_kernel=False, groups, a batch axis
    KwCase(
        "3d-circ-pairs-tk-g2",
        (1, 4, 2, 3, 2),
        (2, 2, 3),
        2,
        (2, 1, 2),
        ((1, 0), (0, 1), (3, 2)),
        (3, 3, 1),
        group=2,
        lead=(2,),
        circular=True,
        tk=False,
    ),
]


def test_kw_cases_are_what_they_claim():
    for c in KW_CASES:
        for x, o, k, s, (lo, hi) in zip(c.x_sp, c.y_cf[2:], c.kernel, c.strides, c.pairs):
            assert reference.output_size(x, k, s, 1, lo, hi) == o, c.name  # the size gives y back
    assert {c.nd for c in KW_CASES} == {1, 2, 3}
    assert any(c.lead is None for c in KW_CASES) and any(c.lead for c in KW_CASES)
    assert any(c.circular for c in KW_CASES) and any(not c.tk for c in KW_CASES)
    assert any(lo >= x for c in KW_CASES for x, (lo, _) in zip(c.x_sp, c.pairs))  # a circular shift past the size


def _kw_loss(op, c):
    return lambda y, w, b: jnp.sum(jnp.sin(op(y, w, b)) * c)


def kw_jit(op, case, y, w, b, c):
    return jax.jit(op)(y, w, b)


def kw_grads_12(op, case, y, w, b, c):
    g1 = jax.grad(_kw_loss(op, c), argnums=(0, 1, 2))
    v = random_arrays(3, case.y_shape, case.w_shape, (case.c_x,), dtype=np.float32)
    g2 = jax.grad(lambda a, bb, cc: _vdot(g1(a, bb, cc), v), argnums=(0, 1, 2))
    return g1(y, w, b), g2(y, w, b)


def kw_jvp(op, case, y, w, b, c):
    t = tuple(random_arrays(7, case.y_shape, case.w_shape, (case.c_x,), dtype=np.float32))
    return jax.jvp(op, (y, w, b), t), jax.jvp(_kw_loss(op, c), (y, w, b), t)


def kw_vmap(op, case, y, w, b, c):
    ys, ws, bs = (jnp.stack([a, 2 * a + 1]) for a in (y, w, b))
    return (
        jax.vmap(op, in_axes=(0, None, None))(ys, w, b),
        jax.vmap(op, in_axes=(None, 0, 0))(y, ws, bs),
        jax.vmap(op, in_axes=(0, 0, None))(ys, ws, b),
    )


KW_TRANSFORMS = {f.__name__[3:]: f for f in (kw_jit, kw_grads_12, kw_jvp, kw_vmap)}


@pytest.mark.parametrize("name", list(KW_TRANSFORMS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in KW_CASES])
def test_new_keywords_under_transformations_match_lax_autodiff(case, name):
    y, w, b, c = case.inputs()
    fn = KW_TRANSFORMS[name]
    got = compile_and_run(lambda y, w, b: fn(case.ours, case, y, w, b, c), y, w, b)
    want = compile_and_run(lambda y, w, b: fn(case.lax_op, case, y, w, b, c), y, w, b)
    assert all(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(want)), "an oracle leaf is all zeros"
    _assert_tree_close(got, want, name)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in KW_CASES])
def test_new_keywords_static_under_jit_and_float64_finite_differences(case):
    """The configuration as static_argnames (the arrays, bias included, traced); check_grads in float64."""
    y, w, b, c = case.inputs(seed=2)
    static = (
        "strides",
        "padding",
        "output_size",
        "feature_group_count",
        "dimension_numbers",
        "transpose_kernel",
        "padding_mode",
    )
    f = jax.jit(jcb.conv_transpose, static_argnames=static)
    kw = dict(
        strides=case.strides,
        padding=case.padding,
        output_size=case.x_sp,
        feature_group_count=case.group,
        dimension_numbers=case.dn if case.channels_last else None,
        transpose_kernel=case.tk,
        padding_mode="circular" if case.circular else "zeros",
    )
    _assert_tree_close(f(y, w, bias=b, **kw), jax.jit(case.lax_op)(y, w, b), "static_argnames")
    with enable_x64(True):
        args = tuple(jnp.asarray(a, jnp.float64) for a in case.inputs(seed=13, dtype=np.float64)[:3])
        jax.test_util.check_grads(_kw_loss(case.ours, jnp.asarray(c, jnp.float64)), args, order=1, modes=("fwd", "rev"))
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in KW_CASES])
def test_new_keywords_export_every_platform_and_round_trip(case):
    y, w, b, c = case.inputs(seed=4)
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (y, w, b)]
    grad = jax.grad(_kw_loss(case.ours, c), argnums=(0, 1, 2))
    lax_grad = jax.grad(_kw_loss(case.lax_op, c), argnums=(0, 1, 2))
    for fn, oracle in ((case.ours, case.lax_op), (grad, lax_grad)):
        exp = export.export(jax.jit(fn), platforms=ALL_PLATFORMS)(*specs)
        restored = export.deserialize(exp.serialize())
        assert restored.in_avals == exp.in_avals and restored.out_avals == exp.out_avals
        got = restored.call(y, w, b)
        _assert_tree_close(got, jax.jit(oracle)(y, w, b), "export vs lax")
        jax.tree.map(np.testing.assert_array_equal, got, exp.call(y, w, b))

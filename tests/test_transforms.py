"""Every JAX transformation of ``conv2d_backprop_input`` against independent oracles.

Oracles:

* ``lax_bpi``: the transposed convolution written as ``jax.vjp`` of plain
  ``lax.conv_general_dilated`` w.r.t. its input, with MindSpore's padding
  computed here from the spec's formulas. Every transformation of it is JAX's
  own autodiff of the convolution, independent of this project's rules.
  XLA CPU can abort on the lhs-dilated transposes of strided *and* dilated
  convolutions, so that combination stays out of the lax grid.
* ``tests/support/reference.py`` (float64 NumPy loops) for first-order values on every
  configuration, including the strided + dilated one.
* finite differences (``chex.assert_numerical_grads``,
  ``jax.test_util.check_grads``) in float64, orders 1 and 2, both modes.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax import lax

import jax_conv_bpi as jcb

from .support import enable_x64, reference


@dataclasses.dataclass(frozen=True)
class Config:
    """One operator instance: shapes in the data format's layout, attributes as the user passes them."""

    name: str
    input_size: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad_mode: str = "valid"
    pad: int | tuple[int, int, int, int] = 0
    pad_list: tuple[int, int, int, int] | None = None
    group: int = 1
    data_format: str = "NCHW"

    @property
    def kwargs(self) -> dict:
        return dict(
            stride=self.stride,
            dilation=self.dilation,
            pad_mode=self.pad_mode,
            pad=self.pad,
            pad_list=self.pad_list,
            group=self.group,
            data_format=self.data_format,
        )

    # -- geometry from the spec's formulas (no project code) --

    @property
    def x_nchw(self):
        n, *rest = self.input_size
        return self.input_size if self.data_format == "NCHW" else (n, rest[2], rest[0], rest[1])

    @property
    def w_oihw(self):
        o, *rest = self.weight_shape
        return self.weight_shape if self.data_format == "NCHW" else (o, rest[2], rest[0], rest[1])

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) as MindSpore pads the convolution input."""
        if self.pad_mode == "valid":
            return (0, 0, 0, 0)
        if self.pad_mode == "pad":
            if self.pad_list is not None and all(p >= 0 for p in self.pad_list):
                return tuple(self.pad_list)
            return (self.pad,) * 4 if isinstance(self.pad, int) else tuple(self.pad)
        return reference.same_padding(self.x_nchw[2:], self.w_oihw[2:], self.stride, self.dilation)

    @property
    def dout_nchw(self):
        p = self.padding
        hw = [
            reference.output_size(
                self.x_nchw[2 + a], self.w_oihw[2 + a], self.stride[a], self.dilation[a], *p[2 * a : 2 * a + 2]
            )
            for a in range(2)
        ]
        return (self.x_nchw[0], self.w_oihw[0], *hw)

    @property
    def dout_shape(self):
        n, c, h, w = self.dout_nchw
        return self.dout_nchw if self.data_format == "NCHW" else (n, h, w, c)

    @property
    def dn(self):
        return ("NCHW", "OIHW", "NCHW") if self.data_format == "NCHW" else ("NHWC", "OHWI", "NHWC")


# Each feature at least once; odd sizes everywhere. The lax grid excludes strided + dilated.
PLAIN = Config("valid-s1-nchw", (2, 3, 5, 6), (4, 3, 2, 3))
LAX_CONFIGS = [
    # (2, 3) stride with an ambiguous input_size: 8 rows give the same dout as 7, 10 columns the same
    # as 8 or 9; the last row and two columns lie under no window.
    Config("valid-s23-ambiguous", (1, 2, 8, 10), (3, 2, 3, 2), stride=(2, 3)),
    Config(
        "pad-d21-g2-nhwc",
        (1, 5, 6, 4),
        (4, 2, 2, 2),
        dilation=(2, 1),
        pad_mode="pad",
        pad=(1, 0, 2, 1),
        group=2,
        data_format="NHWC",
    ),
    Config("same-s2-odd", (2, 2, 7, 5), (2, 2, 3, 3), stride=(2, 2), pad_mode="same"),
    Config(
        "same-d2-g2-nhwc", (1, 6, 5, 4), (2, 3, 3, 2), dilation=(2, 2), pad_mode="same", group=2, data_format="NHWC"
    ),
    Config(
        "padlist-s2-g2",
        (1, 4, 5, 7),
        (4, 2, 2, 3),
        stride=(2, 1),
        pad_mode="pad",
        pad=1,
        pad_list=(0, 2, 1, 0),
        group=2,
    ),
]
STRIDED_DILATED = Config(
    "pad-s2-d2-nhwc",
    (1, 7, 6, 2),
    (2, 2, 2, 2),
    stride=(2, 2),
    dilation=(2, 2),
    pad_mode="pad",
    pad=1,
    data_format="NHWC",
)
ALL_CONFIGS = [PLAIN, *LAX_CONFIGS, STRIDED_DILATED]


def _ids(configs):
    return [pytest.param(c, id=c.name) for c in configs]


# -- the op, the oracles and the inputs --------------------------------------


def ours(cfg: Config):
    return functools.partial(jcb.conv2d_backprop_input, input_size=cfg.input_size, **cfg.kwargs)


def lax_bpi(cfg: Config):
    """Transposed convolution as the VJP of ``lax.conv_general_dilated`` w.r.t. its input."""
    p = cfg.padding

    def op(dout, weight):
        def conv(x):
            return lax.conv_general_dilated(
                x,
                weight,
                window_strides=cfg.stride,
                padding=((p[0], p[1]), (p[2], p[3])),
                rhs_dilation=cfg.dilation,
                dimension_numbers=cfg.dn,
                feature_group_count=cfg.group,
                precision=lax.Precision.HIGHEST,
            )

        return jax.vjp(conv, jnp.zeros(cfg.input_size, dout.dtype))[1](dout)[0]

    return op


def _to_nchw(a, cfg):
    """NHWC -> NCHW (also OHWI -> OIHW); NCHW unchanged."""
    return np.asarray(a) if cfg.data_format == "NCHW" else np.transpose(np.asarray(a), (0, 3, 1, 2))


def _from_nchw(a, cfg):
    return a if cfg.data_format == "NCHW" else np.transpose(a, (0, 2, 3, 1))


def np_bpi(cfg, dout, weight):
    return _from_nchw(
        reference.backprop_input(
            _to_nchw(dout, cfg), _to_nchw(weight, cfg), cfg.x_nchw, cfg.stride, cfg.dilation, cfg.padding, cfg.group
        ),
        cfg,
    )


def np_vjp(cfg, dout, weight, ct):
    """(d/d dout, d/d weight) of <bpi(dout, weight), ct>, from the float64 reference."""
    args = (cfg.stride, cfg.dilation, cfg.padding, cfg.group)
    ct, dout, weight = _to_nchw(ct, cfg), _to_nchw(dout, cfg), _to_nchw(weight, cfg)
    g_dout = reference.conv2d(ct, weight, *args)
    g_w = reference.backprop_filter(dout, ct, weight.shape, *args)
    return _from_nchw(g_dout, cfg), _from_nchw(g_w, cfg)


def inputs(cfg: Config, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal(cfg.dout_shape).astype(dtype)
    weight = rng.standard_normal(cfg.weight_shape).astype(dtype)
    c = rng.standard_normal(cfg.input_size).astype(dtype)
    return dout, weight, c


def scalar_loss(op, c):
    """A non-linear scalar loss, so second and third derivatives are non-trivial."""
    return lambda dout, weight: jnp.sum(jnp.sin(op(dout, weight)) * c)


def tree_vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_tree_close(actual, expected, rtol=2e-5, atol=2e-5):
    a_leaves, e_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(a_leaves, e_leaves):
        assert a.shape == e.shape, (a.shape, e.shape)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol)


def _scale(tree):
    """Largest magnitude in a tree, for tolerances relative to the whole result."""
    return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree))


# -- transformations of ours vs the lax oracle --------------------------------
#
# Each entry maps (op, cfg, dout, weight, c) to a pytree of results. The same
# transformation is applied to this project's op and to ``lax_bpi``.

B_DOUT, B_W = 3, 2


def _stack(cfg, seed, n, which):
    rng = np.random.default_rng(seed)
    shape = cfg.dout_shape if which == "dout" else cfg.weight_shape
    return rng.standard_normal((n, *shape)).astype(np.float32)


def _t_jit(op, cfg, d, w, c):
    return jax.jit(op)(d, w)


def _t_vmap_dout(op, cfg, d, w, c):
    return jax.vmap(op, in_axes=(0, None))(_stack(cfg, 1, B_DOUT, "dout"), w)


def _t_vmap_weight(op, cfg, d, w, c):
    return jax.vmap(op, in_axes=(None, 0))(d, _stack(cfg, 2, B_W, "w"))


def _t_vmap_both(op, cfg, d, w, c):
    return jax.vmap(op)(_stack(cfg, 1, B_W, "dout"), _stack(cfg, 2, B_W, "w"))


def _t_vmap_nested(op, cfg, d, w, c):
    inner = jax.vmap(op, in_axes=(0, None))  # over dout
    return jax.vmap(inner, in_axes=(None, 0))(_stack(cfg, 1, B_DOUT, "dout"), _stack(cfg, 2, B_W, "w"))


def _t_vmap_axes(op, cfg, d, w, c):
    """Batch axis 2 of dout, 1 of weight, result batch axis last."""
    ds = np.moveaxis(_stack(cfg, 1, B_W, "dout"), 0, 2)
    ws = np.moveaxis(_stack(cfg, 2, B_W, "w"), 0, 1)
    return jax.vmap(op, in_axes=(2, 1), out_axes=-1)(ds, ws)


def _t_vmap_out_axes(op, cfg, d, w, c):
    return jax.vmap(op, in_axes=(0, None), out_axes=3)(_stack(cfg, 1, B_DOUT, "dout"), w)


def _t_vmap_grad(op, cfg, d, w, c):
    """Per-example gradients: vmap of grad, batched over dout."""
    return jax.vmap(jax.grad(scalar_loss(op, c), argnums=(0, 1)), in_axes=(0, None))(_stack(cfg, 1, B_DOUT, "dout"), w)


def _t_grad(op, cfg, d, w, c):
    return jax.grad(scalar_loss(op, c), argnums=(0, 1))(d, w)


def _directions(cfg, seed):
    return _stack(cfg, seed, 1, "dout")[0], _stack(cfg, seed + 1, 1, "w")[0]


def _t_grad2_grad3(op, cfg, d, w, c):
    """Orders 2 and 3 as gradients of scalar projections of the lower orders."""
    v, u = _directions(cfg, 3), _directions(cfg, 5)
    g1 = jax.grad(scalar_loss(op, c), argnums=(0, 1))
    g2 = jax.grad(lambda a, b: tree_vdot(g1(a, b), v), argnums=(0, 1))
    g3 = jax.grad(lambda a, b: tree_vdot(g2(a, b), u), argnums=(0, 1))
    return g2(d, w), g3(d, w)


def _t_jvp(op, cfg, d, w, c):
    t = _directions(cfg, 7)
    return jax.jvp(op, (d, w), t), jax.jvp(scalar_loss(op, c), (d, w), t)


def _t_linearize(op, cfg, d, w, c):
    out, f_lin = jax.linearize(scalar_loss(op, c), d, w)
    return out, f_lin(*_directions(cfg, 7)), f_lin(*_directions(cfg, 9))


def _t_jacfwd(op, cfg, d, w, c):
    return jax.jacfwd(op, argnums=(0, 1))(d, w)


def _t_jacrev(op, cfg, d, w, c):
    return jax.jacrev(op, argnums=(0, 1))(d, w)


def _t_hessian(op, cfg, d, w, c):
    return jax.hessian(scalar_loss(op, c), argnums=(0, 1))(d, w)


def _t_checkpoint(op, cfg, d, w, c):
    """Gradient of a rematerialised loss (nothing saved: the backward re-runs the op)."""
    loss = jax.checkpoint(scalar_loss(op, c), policy=jax.checkpoint_policies.nothing_saveable)
    return jax.grad(loss, argnums=(0, 1))(d, w)


def _t_scan(op, cfg, d, w, c):
    """The op in a scan body (value, stacked outputs) and the gradient through the scan."""

    def run(ds, weight):
        def body(carry, dout):
            out = op(dout, weight)
            return carry + jnp.sum(jnp.sin(out) * c), out

        return lax.scan(body, jnp.zeros((), ds.dtype), ds)

    ds = _stack(cfg, 1, B_DOUT, "dout")
    return run(ds, w), jax.grad(lambda a, b: run(a, b)[0], argnums=(0, 1))(ds, w)


TRANSFORMS = {
    fn.__name__[3:]: fn
    for fn in (
        _t_jit,
        _t_vmap_dout,
        _t_vmap_weight,
        _t_vmap_both,
        _t_vmap_nested,
        _t_vmap_axes,
        _t_vmap_out_axes,
        _t_vmap_grad,
        _t_grad,
        _t_grad2_grad3,
        _t_jvp,
        _t_linearize,
        _t_jacfwd,
        _t_jacrev,
        _t_hessian,
        _t_checkpoint,
        _t_scan,
    )
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("cfg", _ids(LAX_CONFIGS))
def test_transform_matches_lax_autodiff(cfg, name):
    """The transformation of this op equals the same transformation of the lax oracle (both jitted)."""
    d, w, c = inputs(cfg)
    fn = TRANSFORMS[name]
    got = jax.jit(lambda a, b: fn(ours(cfg), cfg, a, b, c))(d, w)
    want = jax.jit(lambda a, b: fn(lax_bpi(cfg), cfg, a, b, c))(d, w)
    assert_tree_close(got, want, rtol=1e-5, atol=2e-5 * max(1.0, _scale(want)))


# -- first order against the float64 NumPy reference (every configuration) ----


@pytest.mark.parametrize("cfg", _ids(ALL_CONFIGS))
def test_first_order_matches_numpy_reference(cfg):
    """jit, vmap, vjp and jvp values, including the strided + dilated case the lax oracle cannot take."""
    d, w, c = inputs(cfg)
    op = ours(cfg)
    ct = c
    td, tw = _directions(cfg, 7)
    ds, ws = _stack(cfg, 1, B_W, "dout"), _stack(cfg, 2, B_W, "w")

    @jax.jit
    def run(d, w, ds, ws):
        out, vjp = jax.vjp(op, d, w)
        return out, vjp(ct), jax.jvp(op, (d, w), (td, tw))[1], jax.vmap(op)(ds, ws)

    out, (g_d, g_w), tangent, batched = run(d, w, ds, ws)
    tol = dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, np_bpi(cfg, d, w), **tol)
    want_d, want_w = np_vjp(cfg, d, w, ct)
    np.testing.assert_allclose(g_d, want_d, **tol)
    np.testing.assert_allclose(g_w, want_w, **tol)
    np.testing.assert_allclose(tangent, np_bpi(cfg, td, w) + np_bpi(cfg, d, tw), **tol)
    np.testing.assert_allclose(batched, np.stack([np_bpi(cfg, a, b) for a, b in zip(ds, ws)]), **tol)


# -- finite differences in float64 (orders 1 and 2, modes fwd and rev) --------


# chex runs with and without jit on two configurations that between them cover
# stride, dilation, group, same and pad modes and NHWC (jitting recompiles at
# every nesting level of the check); ``check_grads`` below runs on every
# configuration.
CHEX_CONFIGS = [c for c in ALL_CONFIGS if c.name in ("pad-s2-d2-nhwc", "same-d2-g2-nhwc")]


class NumericalGradsTest(chex.TestCase):
    """``chex.assert_numerical_grads`` with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(c.name, c) for c in CHEX_CONFIGS])
    def test_assert_numerical_grads(self, cfg):
        with enable_x64(True):
            d, w, c = inputs(cfg, seed=11, dtype=np.float64)
            loss = self.variant(scalar_loss(ours(cfg), c))
            args = (jnp.asarray(d), jnp.asarray(w))
            self.assertEqual(loss(*args).dtype, jnp.float64)
            # Order 2 checks orders 1 and 2, modes fwd and rev; chex multiplies atol by the size of dout.
            chex.assert_numerical_grads(loss, args, order=2, atol=1e-7)
        self.assertFalse(jax.config.jax_enable_x64)


@pytest.mark.parametrize("cfg", _ids(ALL_CONFIGS))
def test_check_grads(cfg):
    """``jax.test_util.check_grads`` with its default modes and tolerances, orders 1 and 2, in float64."""
    with enable_x64(True):
        d, w, c = inputs(cfg, seed=13, dtype=np.float64)
        args = (jnp.asarray(d), jnp.asarray(w))
        # order 2 checks orders 1 and 2
        jax.test_util.check_grads(scalar_loss(ours(cfg), c), args, order=2)
    assert not jax.config.jax_enable_x64


# -- the backward is the forward convolution ----------------------------------

STRUCTURE_CONFIGS = [c for c in ALL_CONFIGS if c.stride != (1, 1)]


def _eqns(jaxpr):
    """Every equation of a jaxpr, including those of nested jaxprs (jit, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _eqns(sub)


def _convolutions(hlo_text):
    """(stride, pad, lhs_dilate, rhs_dilate, groups) of every stablehlo.convolution in a module.

    Window fields the printer leaves out take their StableHLO defaults.
    """
    ints = lambda s: tuple(int(v) for v in re.findall(r"-?\d+", s))  # noqa: E731
    convs = []
    for line in hlo_text.splitlines():
        if "stablehlo.convolution" not in line:
            continue
        window = re.search(r"window = \{([^}]*)\}", line)
        fields = dict(re.findall(r"(\w+) = (\[\[.*?\]\]|\[.*?\])", window[1] if window else ""))
        groups = re.search(r"feature_group_count = (\d+)", line)
        convs.append(
            (
                ints(fields.get("stride", "[1, 1]")),
                ints(fields.get("pad", "[[0, 0], [0, 0]]")),
                ints(fields.get("lhs_dilate", "[1, 1]")),
                ints(fields.get("rhs_dilate", "[1, 1]")),
                int(groups[1]) if groups else 1,
            )
        )
    return convs


@pytest.mark.parametrize("cfg", _ids(STRUCTURE_CONFIGS))
def test_grad_wrt_dout_is_forward_convolution(cfg):
    d, w, c = inputs(cfg)
    op = ours(cfg)
    loss = scalar_loss(op, c)
    linear = lambda a: jnp.vdot(op(a, w), c)  # noqa: E731

    # jaxpr: the cotangent of dout goes through our forward-convolution primitive with the op's geometry.
    for f, args in ((jax.grad(linear), (d,)), (jax.grad(loss), (d, w)), (jax.jit(jax.grad(loss)), (d, w))):
        convs = [e for e in _eqns(jax.make_jaxpr(f)(*args).jaxpr) if e.primitive is jcb.conv2d_p]
        assert len(convs) == 1, convs
        geom = convs[0].params["geom"]
        assert geom.stride == cfg.stride and geom.dilation == cfg.dilation
        assert tuple(v for p in geom.padding for v in p) == cfg.padding and geom.group == cfg.group
        assert geom.x_shape == cfg.x_nchw and geom.y_shape == cfg.dout_nchw

    # StableHLO of the portable (GPU/TPU) lowering: the gradient of a linear function of dout is
    # exactly one window-strided convolution with the op's padding, dilation and groups, and no
    # lhs dilation (where the forward op itself is the lhs-dilated one).
    p = cfg.padding
    expected = (cfg.stride, p, (1, 1), cfg.dilation, cfg.group)
    traced = jax.jit(jax.grad(linear)).trace(d)
    for platform in ("cuda", "tpu"):
        assert _convolutions(traced.lower(lowering_platforms=(platform,)).as_text()) == [expected], platform
    forward = _convolutions(jax.jit(op).trace(d, w).lower(lowering_platforms=("cuda",)).as_text())
    assert [conv[2] for conv in forward] == [cfg.stride]

    # CPU picks its own form per shape, but never an lhs-dilated convolution, backward included.
    for f, args in ((jax.grad(linear), (d,)), (jax.grad(loss, argnums=(0, 1)), (d, w))):
        convs = _convolutions(jax.jit(f).lower(*args).as_text())
        assert all(conv[2] == (1, 1) for conv in convs), convs


@pytest.mark.parametrize("cfg", _ids([PLAIN, STRIDED_DILATED]))
def test_jaxpr_names_the_op(cfg):
    d, w, c = inputs(cfg)
    text = str(jax.make_jaxpr(scalar_loss(ours(cfg), c))(d, w))
    assert "conv_backprop_input[" in text
    assert "conv_general_dilated" not in text and " pad[" not in text
    grad_text = str(jax.make_jaxpr(jax.grad(scalar_loss(ours(cfg), c), argnums=(0, 1)))(d, w))
    # cotangent of dout: the forward conv; cotangent of weight: the weight gradient.
    assert "conv_forward[" in grad_text and "conv_backprop_filter[" in grad_text
    assert "conv_general_dilated" not in grad_text


# -- half precision accumulates in float32 -------------------------------------

HALF_CONFIGS = [
    # Long reductions (C_out/g * KH * KW = 36 terms per output, N * Ho * Wo = 50 per weight entry),
    # so accumulating in half precision would be off by several ulps.
    Config("half-pad-s2-g2", (2, 8, 9, 10), (8, 4, 3, 3), stride=(2, 2), pad_mode="pad", pad=1, group=2),
    Config("half-same-d2-nhwc", (1, 7, 8, 4), (6, 3, 3, 4), dilation=(2, 1), pad_mode="same", data_format="NHWC"),
]


def _ulp_distance(a, b):
    """Distance in units in the last place between two 16-bit float arrays of the same dtype."""

    def ordered(x):
        i = np.asarray(x).view(np.int16).astype(np.int32)
        return np.where(i < 0, -(i & 0x7FFF), i)

    return np.abs(ordered(a) - ordered(b))


def _assert_rounded_once(got, want, what):
    """Within 1 ulp of the float32 result rounded once.

    Entries that cancel to near zero get a float32-level absolute allowance
    (2**-20 of the largest magnitude): there a different float32 summation
    order alone moves the result by more than a half-precision ulp.
    """
    dist = _ulp_distance(got, want)
    err = np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32))
    bad = (dist > 1) & (err > 2.0**-20 * float(np.max(np.abs(np.asarray(want, np.float32)))))
    assert not bad.any(), (what, int(dist[bad].max()), int(bad.sum()))


def _half_accumulated_bpi(cfg, dout, weight, dtype):
    """The value accumulated tap by tap in ``dtype`` (what the op must not do), NumPy."""
    d, w = _to_nchw(dout, cfg).astype(np.float32), _to_nchw(weight, cfg).astype(np.float32)
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = cfg.stride, cfg.dilation, cfg.padding
    n, c_in, h, wd = cfg.x_nchw
    _, c_out, ho, wo = d.shape
    _, c_in_g, kh, kw = w.shape
    buf = np.zeros(
        (
            n,
            c_in,
            max(h + pt + pb, (ho - 1) * sh + (kh - 1) * dh + 1),
            max(wd + pl + pr, (wo - 1) * sw + (kw - 1) * dw + 1),
        ),
        dtype,
    )
    for o in range(c_out):
        g = o // (c_out // cfg.group)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (ho - 1) * sh + 1, sh)
                cols = slice(j * dw, j * dw + (wo - 1) * sw + 1, sw)
                tap = np.einsum("nhw,c->nchw", d[:, o], w[o, :, i, j]).astype(dtype)
                chans = slice(g * c_in_g, (g + 1) * c_in_g)
                buf[:, chans, rows, cols] = (buf[:, chans, rows, cols] + tap).astype(dtype)
    return _from_nchw(buf[:, :, pt : pt + h, pl : pl + wd], cfg)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("cfg", _ids(HALF_CONFIGS))
def test_half_precision_rounds_once(cfg, dtype):
    """Value and VJP (w.r.t. dout and weight) in half precision equal the float32 oracle rounded once."""
    d, w, c = inputs(cfg, seed=21)
    d, w, ct = (jnp.asarray(a, dtype) for a in (d, w, c))  # the half-precision inputs ...
    up = [a.astype(jnp.float32) for a in (d, w, ct)]  # ... exactly up-cast

    @jax.jit
    def half(d, w, ct):
        out, vjp = jax.vjp(ours(cfg), d, w)
        return (out, *vjp(ct))

    @jax.jit
    def oracle(d, w, ct):
        out, vjp = jax.vjp(lax_bpi(cfg), d, w)
        return tuple(r.astype(dtype) for r in (out, *vjp(ct)))

    results, expected = half(d, w, ct), oracle(*up)
    for what, got, want in zip(("value", "d dout", "d weight"), results, expected):
        assert got.dtype == dtype, what
        _assert_rounded_once(got, want, what)
    # The criterion is tight enough to reject accumulation in half precision.
    with pytest.raises(AssertionError):
        _assert_rounded_once(_half_accumulated_bpi(cfg, np.asarray(d), np.asarray(w), np.dtype(dtype)), expected[0], "")

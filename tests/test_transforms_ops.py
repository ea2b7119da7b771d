"""Every JAX transformation of ``jax_conv_bpi.ops`` against autodiff of plain ``lax.conv_general_dilated``.

Oracles (no project code): the forward ops are ``lax.conv_general_dilated``
with the spec's padding (plus the bias); the transposed ops are ``jax.vjp`` of
that convolution w.r.t. its input, on an input of MindSpore's output size
(``pad`` mode PyTorch's rule, ``same`` ``L * s``, ``valid``
``max(L * s, (L - 1) * s + ek)``). Every derivative of an oracle is JAX's own.
Strided *and* dilated transposed oracles stay out (XLA CPU may abort on their
lhs-dilated transposes). Shapes are tiny: compile time dominates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax
from jax.test_util import check_grads

from jax_conv_bpi import ops

from .support import compile_and_run, enable_x64

_DN = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def lax_conv(x, w, stride, pairs, dilation, group):
    n = x.ndim - 2
    return lax.conv_general_dilated(
        x,
        w,
        stride,
        pairs,
        rhs_dilation=dilation,
        feature_group_count=group,
        dimension_numbers=_DN[n],
        precision=lax.Precision.HIGHEST,
    )


def lax_transpose(y, w, x_spatial, stride, pairs, dilation, group):
    """The input gradient of ``lax_conv`` at ``x`` of spatial size ``x_spatial``, applied to ``y``."""
    x0 = jnp.zeros((y.shape[0], w.shape[1] * group, *x_spatial), y.dtype)
    return jax.vjp(lambda x: lax_conv(x, w, stride, pairs, dilation, group), x0)[1](y)[0]


def _same(size, k, s, d):
    need = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
    return need // 2, need - need // 2


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ours: Callable  # (*arrays) -> array
    oracle: Callable
    shapes: tuple  # of the array arguments


def _conv3d_class():
    op = ops.Conv3D(4, (2, 3, 2), pad_mode="same", stride=(2, 1, 1), group=2)
    x_sp, k, s = (3, 4, 3), (2, 3, 2), (2, 1, 1)
    pairs = [_same(*a, 1) for a in zip(x_sp, k, s)]
    return Case(
        "Conv3D-same-group", op, lambda x, w: lax_conv(x, w, s, pairs, (1, 1, 1), 2), ((1, 2, *x_sp), (4, 1, *k))
    )


def _conv3d_transpose_valid_quirk():
    op = ops.Conv3DTranspose(2, 3, kernel_size=(1, 2, 2), stride=(3, 2, 1))
    y_sp, k, s = (2, 2, 3), (1, 2, 2), (3, 2, 1)
    x_sp = tuple(max(o * ss, (o - 1) * ss + kk) for o, kk, ss in zip(y_sp, k, s))  # (6, 4, 4)
    return Case(
        "Conv3DTranspose-valid-quirk",
        op,
        lambda y, w: lax_transpose(y, w, x_sp, s, [(0, 0)] * 3, (1, 1, 1), 1),
        ((1, 2, *y_sp), (2, 3, *k)),
    )


def _conv3d_transpose_pad():
    op = ops.Conv3DTranspose(
        4, 2, kernel_size=2, pad_mode="pad", pad=(1, 0, 0, 1, 0, 0), stride=2, output_padding=(1, 0, 1), group=2
    )
    y_sp, pairs = (2, 2, 2), [(1, 0), (0, 1), (0, 0)]
    x_sp = tuple((o - 1) * 2 + 2 - lo - hi + p for o, (lo, hi), p in zip(y_sp, pairs, (1, 0, 1)))
    return Case(
        "Conv3DTranspose-pad-op-group",
        op,
        lambda y, w: lax_transpose(y, w, x_sp, (2, 2, 2), pairs, (1, 1, 1), 2),
        ((1, 4, *y_sp), (4, 1, 2, 2, 2)),
    )


def _conv1d():
    def ours(x, w, b):
        return ops.conv1d(x, w, b, stride=2, pad_mode="same", dilation=1)

    return Case(
        "conv1d-same-bias",
        ours,
        lambda x, w, b: lax_conv(x, w, (2,), [_same(7, 3, 2, 1)], (1,), 1) + b[None, :, None],
        ((1, 2, 7), (3, 2, 3), (3,)),
    )


def _conv2d():
    def ours(x, w, b):
        return ops.conv2d(x, w, b, pad_mode="pad", padding=(1, 0), dilation=(1, 2), groups=2)

    return Case(
        "conv2d-pad-dilated-bias",
        ours,
        lambda x, w, b: lax_conv(x, w, (1, 1), [(1, 1), (0, 0)], (1, 2), 2) + b[None, :, None, None],
        ((1, 2, 4, 5), (2, 1, 2, 2), (2,)),
    )


def _conv3d():
    def ours(x, w):
        return ops.conv3d(x, w, stride=(1, 2, 1), pad_mode="pad", padding=(0, 1, 1))

    return Case(
        "conv3d-pad",
        ours,
        lambda x, w: lax_conv(x, w, (1, 2, 1), [(0, 0), (1, 1), (1, 1)], (1, 1, 1), 1),
        ((1, 2, 3, 4, 3), (2, 2, 2, 2, 2)),
    )


def _conv_transpose2d():
    def ours(y, w, b):
        return ops.conv_transpose2d(y, w, b, stride=2, padding=1, output_padding=1)

    x_sp = ((3 - 1) * 2 - 2 + 3 + 1,) * 2
    return Case(
        "conv_transpose2d-op-bias",
        ours,
        lambda y, w, b: lax_transpose(y, w, x_sp, (2, 2), [(1, 1)] * 2, (1, 1), 1) + b[None, :, None, None],
        ((1, 2, 3, 3), (2, 3, 3, 3), (3,)),
    )


def _conv3d_transpose_fn():
    def ours(y, w):
        return ops.conv3d_transpose(y, w, pad_mode="same", stride=(1, 2, 1), dilation=(1, 1, 2))

    y_sp, k, s, d = (2, 2, 2), (2, 2, 2), (1, 2, 1), (1, 1, 2)
    x_sp = tuple(o * ss for o, ss in zip(y_sp, s))
    pairs = [_same(*a) for a in zip(x_sp, k, s, d)]
    return Case(
        "conv3d_transpose-same",
        ours,
        lambda y, w: lax_transpose(y, w, x_sp, s, pairs, d, 1),
        ((1, 2, *y_sp), (2, 2, *k)),
    )


CASES = [
    f()
    for f in (
        _conv3d_class,
        _conv3d_transpose_valid_quirk,
        _conv3d_transpose_pad,
        _conv1d,
        _conv2d,
        _conv3d,
        _conv_transpose2d,
        _conv3d_transpose_fn,
    )
]
_IDS = [c.name for c in CASES]


def _args(case: Case, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s).astype(dtype)) for s in case.shapes]


def _close(a, b, tol=1e-4):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def _loss(f):
    return lambda *a: jnp.sum(jnp.sin(f(*a)))


def _transforms(f, argnums, args, tangents, batched):
    """Every transformation of ``f`` compared here, as one pytree (compiled as one program)."""
    g = jax.grad(_loss(f), argnums)

    def hvp(*a):  # reverse-over-reverse: d/dargs <grad loss, tangents>
        return jax.grad(lambda *b: sum(jnp.vdot(gi, ti) for gi, ti in zip(g(*b), tangents)), argnums)(*a)

    return {
        "out": f(*args),
        "grad": g(*args),
        "jvp": jax.jvp(f, args, tangents),
        "hvp": hvp(*args),
        "vmap": jax.vmap(f)(*batched),  # a batch of every argument: a batched weight folds into groups
    }


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_jit_grad_jvp_second_order_vmap(case):
    """Under jit (attributes static: instances closed over, keywords constant): forward, grad, jvp,
    second order and vmap agree with the lax oracle's own autodiff."""
    args, tangents = _args(case), _args(case, seed=1)
    batched = [jnp.stack([a, 2 * a + 1]) for a in args]
    argnums = tuple(range(len(args)))
    res = compile_and_run(
        lambda a, t, b: [_transforms(f, argnums, a, t, b) for f in (case.ours, case.oracle)], args, tangents, batched
    )
    ours, oracle = res
    for key in ours:
        _close(ours[key], oracle[key], tol=2e-4 if key == "hvp" else 1e-4)


def test_class_instances_are_static_jit_arguments():
    op, same = ops.Conv3DTranspose(2, 3, 2, stride=2), ops.Conv3DTranspose(2, 3, 2, stride=2)
    assert op == same and hash(op) == hash(same) and op != ops.Conv3DTranspose(2, 3, 2)
    f = jax.jit(lambda o, y, w: o(y, w), static_argnums=0)
    y, w = jnp.ones((1, 2, 2, 2, 2)), jnp.ones((2, 3, 2, 2, 2))
    assert f(op, y, w).shape == (1, 3, 4, 4, 4) and f(same, y, w).shape == (1, 3, 4, 4, 4)
    g = jax.jit(ops.conv3d_transpose, static_argnames=("pad_mode", "stride"))
    np.testing.assert_allclose(g(y, w, pad_mode="valid", stride=2), op(y, w))
    with pytest.raises(AttributeError):
        op.x = 1
    assert repr(ops.Conv3D(4, 3, pad_mode="Pad", pad=1)).startswith("Conv3D(out_channel=4, kernel_size=(3, 3, 3)")


def test_hessian_small():
    case = CASES[1]  # the valid-quirk transposed op
    y, w = _args(case)

    def h(f):
        return lambda y, w: jax.hessian(lambda w: jnp.sum(f(y, w) ** 3))(w)

    ours, oracle = compile_and_run(lambda y, w: [h(case.ours)(y, w), h(case.oracle)(y, w)], y, w)
    _close(ours, oracle, tol=2e-4)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=[_IDS[i] for i in (0, 2, 3)])
def test_check_grads_float64(case):
    with enable_x64(True):
        args = _args(case, dtype=np.float64)
        check_grads(case.ours, args, order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_export_round_trip():
    case = CASES[2]
    args = _args(case)
    exp = export.export(jax.jit(case.ours))(*[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args])
    restored = export.deserialize(exp.serialize())
    _close(restored.call(*args), case.oracle(*args))


def test_float16_rounds_once_from_float32():
    """float16 computed in float32 and rounded once (MindSpore's CPU behaviour), bias added after."""
    case = CASES[3]
    args = _args(case)
    half = [a.astype(jnp.float16) for a in args]
    out16 = case.ours(*half)
    assert out16.dtype == jnp.float16
    conv32 = ops.conv1d(*[a.astype(jnp.float32) for a in half[:2]], stride=2, pad_mode="same")
    expected = conv32.astype(jnp.float16) + half[2][None, :, None]
    np.testing.assert_array_equal(np.asarray(out16), np.asarray(expected))

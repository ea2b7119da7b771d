"""``jax_conv_bpi.nn`` under Flax NNX's transformations, inside ``nnx.Sequential``, and with optax.

The oracle is plain ``lax``: a layer equals ``lax.conv_general_dilated`` (the
forward layers) or ``jax.vjp`` of it (the transposed layers: their adjoint)
with the same parameters, plus the bias. Each NNX transformation (``nnx.jit``,
``nnx.grad``, ``nnx.value_and_grad``, ``nnx.vmap``, ``nnx.remat``) and
``jax.jvp`` is compared with the same transformation of that oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
optax = pytest.importorskip("optax", reason="the nn extra is not installed: pip install -e '.[nn]'")
from jax_conv_bpi import nn  # noqa: E402

HI = lax.Precision.HIGHEST
TOL = dict(rtol=2e-5, atol=2e-5)


def _oracle(kind: str, n: int, stride: int, padding: int):
    """f(x, w, b) in plain lax for a layer with pad_mode='pad'."""
    s, pads = (stride,) * n, [(padding, padding)] * n

    def forward(x, w, b):
        w = w[:, :, 0] if n == 1 else w
        y = lax.conv_general_dilated(x, w, s, pads, precision=HI)
        return y + b.reshape((1, -1) + (1,) * n)

    def transpose(x, w, b):
        w = w[:, :, 0] if n == 1 else w
        k = w.shape[2:]
        size = tuple((o - 1) * stride + kk - 2 * padding for o, kk in zip(x.shape[2:], k))
        z = jnp.zeros((x.shape[0], w.shape[1], *size), x.dtype)
        _, pull = jax.vjp(lambda z: lax.conv_general_dilated(z, w, s, pads, precision=HI), z)
        return pull(x)[0] + b.reshape((1, -1) + (1,) * n)

    return forward if kind == "forward" else transpose


LAYERS = [
    ("Conv1d", "forward", 1, (2, 3, 11)),
    ("Conv2d", "forward", 2, (2, 3, 9, 8)),
    ("Conv3d", "forward", 3, (2, 3, 5, 6, 4)),
    ("Conv1dTranspose", "transpose", 1, (2, 3, 6)),
    ("Conv2dTranspose", "transpose", 2, (2, 3, 5, 4)),
    ("Conv3dTranspose", "transpose", 3, (2, 3, 3, 4, 3)),
]


def _layer(name: str, seed: int = 0):
    return getattr(nn, name)(3, 4, 3, stride=2, pad_mode="pad", padding=1, has_bias=True, rngs=nnx.Rngs(seed))


def _x(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _params(layer):
    return layer.weight[...], layer.bias[...]


@pytest.mark.parametrize("name, kind, n, shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_jit_grad_jvp_match_lax(name, kind, n, shape):
    layer, x = _layer(name), _x(shape)
    f = _oracle(kind, n, 2, 1)
    w, b = _params(layer)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), f(x, w, b), **TOL)

    cot = _x(f(x, w, b).shape, seed=2)

    def loss(m, x):
        return jnp.sum(m(x) * cot)

    grads_m, grad_x = nnx.grad(loss, argnums=(0, 1))(layer, x)
    gx, gw, gb = jax.grad(lambda x, w, b: jnp.sum(f(x, w, b) * cot), argnums=(0, 1, 2))(x, w, b)
    np.testing.assert_allclose(grad_x, gx, **TOL)
    np.testing.assert_allclose(grads_m["weight"][...], gw, **TOL)
    np.testing.assert_allclose(grads_m["bias"][...], gb, **TOL)

    graphdef, params = nnx.split(layer)
    tangent = _x(shape, seed=3)
    _, ours = jax.jvp(lambda x: nnx.merge(graphdef, params)(x), (x,), (tangent,))
    _, want = jax.jvp(lambda x: f(x, w, b), (x,), (tangent,))
    np.testing.assert_allclose(ours, want, **TOL)


def test_vmap_over_inputs_and_over_an_ensemble_of_layers():
    layer, xs = _layer("Conv2dTranspose"), _x((3, 2, 3, 5, 4))
    f = _oracle("transpose", 2, 2, 1)
    w, b = _params(layer)
    ours = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(layer, xs)
    np.testing.assert_allclose(ours, jnp.stack([f(x, w, b) for x in xs]), **TOL)

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return nn.Conv2d(3, 4, 3, has_bias=True, rngs=nnx.Rngs(params=key))

    ensemble = make(jax.random.split(jax.random.key(0), 2))
    assert ensemble.weight.shape == (2, 4, 3, 3, 3)
    x = _x((2, 3, 6, 6))
    outs = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, x)
    for i in range(2):
        ref = lax.conv_general_dilated(x, ensemble.weight[...][i], (1, 1), "SAME", precision=HI)
        np.testing.assert_allclose(outs[i], ref + ensemble.bias[...][i][None, :, None, None], **TOL)


def test_remat_gives_the_same_gradient():
    layer, x = _layer("Conv3dTranspose"), _x((2, 3, 3, 4, 3))

    def loss(m, x):
        return jnp.sum(jnp.tanh(m(x)))

    def loss_remat(m, x):
        return jnp.sum(jnp.tanh(nnx.remat(lambda m, x: m(x))(m, x)))

    plain, remat = nnx.grad(loss)(layer, x), nnx.grad(loss_remat)(layer, x)
    np.testing.assert_allclose(remat["weight"][...], plain["weight"][...], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(remat["bias"][...], plain["bias"][...], rtol=1e-6, atol=1e-6)


def test_sequential_with_optax_trains_and_matches_the_oracle_gradient():
    """A tiny generator in ``nnx.Sequential``: its first gradient equals plain lax's; adam lowers the loss."""
    model = nnx.Sequential(
        nn.Conv2dTranspose(4, 6, 4, stride=2, pad_mode="pad", padding=1, has_bias=True, rngs=nnx.Rngs(0)),
        jax.nn.relu,
        nn.Conv2d(6, 2, 3, pad_mode="pad", padding=1, has_bias=True, rngs=nnx.Rngs(1)),
    )
    z, target = _x((4, 4, 3, 3)), _x((4, 2, 6, 6), seed=5)
    up, head = _oracle("transpose", 2, 2, 1), _oracle("forward", 2, 1, 1)

    def oracle_loss(p):
        h = jax.nn.relu(up(z, p[0], p[1]))
        return jnp.mean((head(h, p[2], p[3]) - target) ** 2)

    layers = [model.layers[0], model.layers[2]]
    p0 = [a for layer in layers for a in _params(layer)]
    want = jax.grad(oracle_loss)(p0)

    def loss(m):
        return jnp.mean((m(z) - target) ** 2)

    grads = nnx.grad(loss)(model)
    got = [grads["layers"][i][k][...] for i in (0, 2) for k in ("weight", "bias")]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)

    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    losses = [float(step(model, optimizer)) for _ in range(5)]
    assert losses[0] == pytest.approx(float(oracle_loss(p0)), rel=1e-5)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_configuration_is_static_and_hashable():
    """The layer's configuration is static: one compilation for two calls, a hashable graph definition."""
    layer = _layer("Conv2d")
    graphdef, _ = nnx.split(layer)
    hash(graphdef)
    hash(layer.config)
    traces = []

    @nnx.jit
    def run(m, x):
        traces.append(1)
        return m(x)

    run(layer, _x((2, 3, 9, 8)))
    run(layer, _x((2, 3, 9, 8), seed=4))
    assert len(traces) == 1

"""Initialisation of ``jax_conv_bpi.nn``: MindSpore's distributions (its random streams cannot be matched).

Oracles: the golden ``init_stats`` records (default initialisation: the bound
``1/sqrt(fan_in)`` on MindSpore's weight layout, for weight and bias) and
``initializers`` records (each name MindSpore accepts or refuses, and its
distribution), both from ``nn_layers.npz``. Statistics are checked within
sampling tolerance: every sample inside the bound, the sample standard
deviation within 6 standard errors of the distribution's, the sample mean
within 6 standard errors of 0.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from .support import golden_missing, literal, load_golden

nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
from jax_conv_bpi import nn  # noqa: E402


def _meta(key: str):
    golden = load_golden("nn_layers")
    if golden is None:
        return [golden_missing("nn_layers", 1)]
    doc = golden.meta
    return [pytest.param(r, id=f"{i}-{r['layer']}-{r.get('name', '')}-{r.get('target', '')}") for i, r in
            enumerate(doc[key])]  # fmt: skip


def _check_std(sample: np.ndarray, std: float, what: str) -> None:
    n = sample.size
    se_std = std / math.sqrt(2 * n)  # standard error of the sample std (normal approximation)
    assert abs(sample.std() - std) < 6 * se_std + 1e-7, (what, sample.std(), std)
    assert abs(sample.mean()) < 6 * std / math.sqrt(n) + 1e-7, (what, sample.mean())


@pytest.mark.parametrize("record", _meta("init_stats"))
@pytest.mark.parametrize("seed", [0, 1])
def test_default_init_bounds_and_spread(record, seed):
    kw = {k: literal(v) for k, v in record["ctor_kwargs_repr"].items()}
    layer = getattr(nn, record["layer"])(**kw, dtype=jnp.dtype(record["layer_dtype"]), rngs=nnx.Rngs(seed))
    assert layer.config.fan_in == record["params"][0]["fan_in"]
    for p in record["params"]:
        value = np.asarray(getattr(layer, p["name"])[...])
        assert list(value.shape) == p["shape"] and str(value.dtype) == p["dtype"]
        b = p["expected_bound"]
        sample = value.astype(np.float64)
        assert np.abs(sample).max() <= b * (1 + 1e-3), (p["name"], np.abs(sample).max(), b)
        if sample.size >= 1000:  # the maximum reaches the bound (not the other channel axis' smaller one)
            assert np.abs(sample).max() > 0.99 * b
        _check_std(sample, p["expected_std"], p["name"])


def _named_layer(record: dict, seed: int = 0):
    kw = {k: literal(v) for k, v in record["ctor_kwargs_repr"].items()}
    return getattr(nn, record["layer"])(**kw, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("record", _meta("initializers"))
def test_named_initializer(record):
    if not record["accepted"]:
        with pytest.raises({"ValueError": ValueError, "TypeError": TypeError}[record["exception_type"]]) as err:
            _named_layer(record)
        assert str(err.value).startswith(f"{record['layer']}: '{record['target']}_init'"), str(err.value)
        return
    layer = _named_layer(record)
    value = np.asarray(getattr(layer, record["target"])[...], np.float64)
    assert list(value.shape) == record["shape"]
    expected = record["expected"]
    name = record["name"].lower()
    if expected is None:  # not characterised by MindSpore's record: the initialiser's defining property
        if name == "orthogonal":
            flat = value.reshape(value.shape[0], -1)
            np.testing.assert_allclose(flat @ flat.T, np.eye(flat.shape[0]), atol=1e-5)
        else:
            assert name == "dirac"
            centre = tuple(k // 2 for k in value.shape[2:])
            want = np.zeros_like(value)
            for i in range(min(value.shape[:2])):
                want[(i, i, *centre)] = 1.0
            np.testing.assert_array_equal(value, want)
        return
    dist = expected["dist"]
    if dist == "constant":
        np.testing.assert_array_equal(value, np.full(value.shape, expected["value"]))
    elif dist == "uniform":
        b = expected["bound"]
        assert np.abs(value).max() <= b
        if value.size >= 1000:
            _check_std(value, b / math.sqrt(3), name)
    elif dist == "normal":
        if value.size >= 1000:
            _check_std(value, expected["std"], name)
    else:
        assert dist == "truncated_normal"
        assert expected["low"] <= value.min() and value.max() <= expected["high"]
        if value.size >= 1000:
            _check_std(value, expected["std_before_truncation"], name)


def test_transposed_fan_in_counts_the_output_channels():
    """Quirk 5: the transposed layers' bound is 1/sqrt(C_out/group * prod(kernel)), not C_in's."""
    layer = nn.Conv2dTranspose(64, 16, 4, has_bias=True, rngs=nnx.Rngs(3))
    b = 1 / math.sqrt(16 * 16)
    w = np.asarray(layer.weight[...])
    assert w.shape == (64, 16, 4, 4) and 0.99 * b < np.abs(w).max() <= b


def test_one_d_layers_take_3d_arrays_and_jax_initializers():
    import jax

    w3 = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    layer = nn.Conv1d(2, 4, 3, weight_init=w3, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(layer.weight[...]), w3[:, :, None, :])
    layer = nn.Conv1dTranspose(2, 4, 3, weight_init=jax.nn.initializers.ones, rngs=nnx.Rngs(0))
    assert layer.weight.shape == (2, 4, 1, 3) and float(layer.weight[...].min()) == 1.0
    with pytest.raises(ValueError, match=r"'weight_init' must have shape \(4, 2, 3\).*without MindSpore's unit axis"):
        nn.Conv1d(2, 4, 3, weight_init=w3[:, :, None, :], rngs=nnx.Rngs(0))


def test_float16_layers_draw_in_float32_and_store_float16():
    layer = nn.Conv2d(16, 32, 3, has_bias=True, dtype=jnp.float16, rngs=nnx.Rngs(0))
    assert layer.weight[...].dtype == jnp.float16 and layer.bias[...].dtype == jnp.float16
    assert float(jnp.abs(layer.weight[...]).max()) <= 1 / math.sqrt(144) * (1 + 1e-3)


def test_same_rngs_seed_same_parameters():
    a = nn.Conv3d(2, 4, 3, has_bias=True, rngs=nnx.Rngs(7))
    b = nn.Conv3d(2, 4, 3, has_bias=True, rngs=nnx.Rngs(7))
    c = nn.Conv3d(2, 4, 3, has_bias=True, rngs=nnx.Rngs(8))
    np.testing.assert_array_equal(np.asarray(a.weight[...]), np.asarray(b.weight[...]))
    assert not np.array_equal(np.asarray(a.weight[...]), np.asarray(c.weight[...]))

"""MindSpore's golden vectors for ``jax_conv_bpi.nn``: every case of ``nn_layers.npz``, output and VJPs.

Each case builds the layer from its recorded constructor arguments, gives it
MindSpore's parameters (``set_data`` cases: assigned after construction;
``tensor`` cases: passed as ``weight_init`` / ``bias_init`` arrays, 3-D for the
1-D layers; ``named`` cases: deterministic initialiser names), and compares
the output and ``jax.vjp`` with respect to the input, the weight and the
bias with MindSpore's arrays (float32 rtol 1e-5 / atol 5e-5, float16 1e-2).
The quirks are MindSpore's numbers: ``output_padding_appends_zeros``
(Conv2dTranspose), ``valid_output_at_least_L_times_stride``, and
``float16_weight_grad_is_float32`` (Conv3dTranspose), where this library
returns float16 (docs/differences.md, N7) equal to the
float16 rounding of MindSpore's value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .support import GOLDEN_MISSING, compile_and_run, golden_missing, literal, load_golden

nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
from jax_conv_bpi import nn  # noqa: E402


def _cases():
    golden = load_golden("nn_layers")
    if golden is None:
        return [golden_missing("nn_layers", 1)]
    return [pytest.param(c, id=f"{c['name']}-{c['op']}-{c['dtype']}-{c['init']}") for c in golden.cases]


def _array(case: dict, key: str) -> np.ndarray:
    return load_golden("nn_layers").array(case, key)


def build(case: dict):
    """The layer of ``case`` with MindSpore's parameters."""
    kw = {k: literal(v) for k, v in case["ctor_kwargs_repr"].items()}
    for arg, key in (case.get("ctor_tensor_kwargs") or {}).items():
        kw[arg] = jnp.asarray(_array(case, key))
    layer = getattr(nn, case["op"])(**kw, dtype=jnp.dtype(case["layer_dtype"]), rngs=nnx.Rngs(0))
    if case["init"] == "set_data":
        for p in case["params"]:
            getattr(layer, p["name"])[...] = jnp.asarray(_array(case, p["array"]))
    return layer


_CHUNK = 8
_results: dict[int, dict] = {}


def results(case: dict):
    """(out, {name: vjp}) of ``case``, compiled with the rest of its chunk in one program."""
    cases = load_golden("nn_layers").cases
    index = [c["name"] for c in cases].index(case["name"]) // _CHUNK
    if index not in _results:
        chunk = cases[index * _CHUNK : (index + 1) * _CHUNK]
        splits = [nnx.split(build(c), nnx.Param) for c in chunk]

        def run(args):
            outs = []
            for (graphdef, params), (x, cot) in zip(splits, args):
                out, pull = jax.vjp(lambda x, p, g=graphdef: nnx.merge(g, p)(x), x, params)
                gx, gp = pull(cot)
                outs.append((out, gx, gp))
            return outs

        args = [(_array(c, "x"), _array(c, "cot")) for c in chunk]
        computed = compile_and_run(run, args)
        for c, (_, params), (out, gx, gp) in zip(chunk, splits, computed):
            grads = {"x": gx, **nnx.to_pure_dict(gp)}
            _results.setdefault(index, {})[c["name"]] = (out, grads, nnx.to_pure_dict(params))
    return _results[index][case["name"]]


def _close(actual, expected, what: str, dtype):
    tol = dict(rtol=1e-5, atol=5e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-2, atol=1e-2)
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), err_msg=what, **tol)


@pytest.mark.parametrize("case", _cases())
def test_layer_golden_case(case):
    dtype = np.dtype(case["dtype"])
    out, grads, params = results(case)
    for p in case["params"]:  # the parameters as MindSpore reports them (the 1-D layers' 4-D weights)
        value = params[p["name"]]
        assert list(value.shape) == p["shape"] and str(value.dtype) == p["dtype"], p
        np.testing.assert_array_equal(value, _array(case, p["array"]), err_msg=p["name"])
    assert out.dtype == dtype
    _close(out, _array(case, "out"), "forward", dtype)
    quirks = (case["quirk"] or "").split("+")
    for name, key in case["grads"]:
        g, expected = grads[name], _array(case, key)
        assert g.dtype == dtype, (name, g.dtype)
        if "float16_weight_grad_is_float32" in quirks and name == "weight":  # N7
            assert expected.dtype == np.float32
            expected = expected.astype(np.float16)
        _close(g, expected, key, dtype)


def test_quirk_cases_are_covered():
    """Every quirk the spec names appears among the golden cases checked above."""
    golden = load_golden("nn_layers")
    if golden is None:
        pytest.skip(GOLDEN_MISSING)
    quirks = {q for c in golden.cases for q in (c["quirk"] or "").split("+") if q}
    assert quirks == {
        "output_padding_appends_zeros",
        "valid_output_at_least_L_times_stride",
        "float16_weight_grad_is_float32",
    }

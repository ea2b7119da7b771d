"""MindSpore's wave-2 golden vectors for ``jax_conv_bpi.ops``: every numeric case, forward and every VJP.

``conv3d.npz`` (``ops.Conv3D`` / ``ops.Conv3DTranspose``) and ``functional.npz``
(``ops.conv1d/conv2d/conv3d/conv_transpose2d/conv3d_transpose``): for each
case ``jax.vjp`` of the op with the recorded arguments gives the output and
the pull-backs of the case's cotangent, compared with MindSpore's arrays
within the golden README's tolerances (float32 rtol 1e-5 / atol 5e-5, float16
1e-2 / 1e-2). Quirk cases are MindSpore's numbers (``valid_output_at_least_L_times_stride``
is reproduced). docs/differences.md (subsection "3-D and functional
ops") items checked here:

* M10 ``float16_weight_grad_is_float32``: a JAX VJP returns float16 for a
  float16 weight; it equals the float16 rounding of MindSpore's float32 value;
* M11 cases whose MindSpore gradient raised (``has_vjp == False``: conv1d with
  a bias and output length 1; ``Conv3DTranspose`` with an ``in_channel``
  different from ``weight.shape[0]``): our gradients are checked against the
  float64 NumPy reference instead;
* M9 ``in_channel`` / ``out_channel`` that disagree with the arrays: one
  ``UserWarning`` naming both values.

Cases are compiled in chunks (one program per chunk) with the fast-compile
options of ``support.compile_and_run``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jax_conv_bpi import ops

from .support import compile_and_run, golden_missing, literal, load_golden, reference

_FILES = ("conv3d", "functional")


def _cases(name: str):
    golden = load_golden(name)
    if golden is None:
        return [golden_missing(name, 1)]
    return [pytest.param(c, id=f"{c['name']}-{c['op']}-{c['dtype']}") for c in golden.cases]


def _kwargs(case: dict) -> dict:
    reprs = case.get("ctor_kwargs_repr") if case["kind"] == "primitive" else case.get("call_kwargs_repr")
    return {k: literal(v) for k, v in (reprs or {}).items()}


def _function(case: dict):
    kw = _kwargs(case)
    if case["kind"] == "primitive":
        op = getattr(ops, case["op"])(**kw)
        return lambda *a: op(*a)
    fn = getattr(ops, case["op"])
    return lambda *a: fn(*a, **kw)


def _array(z, case: dict, key: str) -> np.ndarray:
    return z[f"{case['name']}_{key}"]


def _program(case: dict):
    f = _function(case)

    def run(inputs, cot):
        out, pull = jax.vjp(f, *inputs)
        return out, pull(cot)

    return run


_CHUNK = 6
_results: dict[tuple[str, int], dict] = {}


def results(name: str, case: dict):
    """Our (out, grads) for ``case``, computed with the rest of its chunk in one compiled program."""
    golden = load_golden(name)
    z, cases = golden.npz, golden.cases
    index = [c["name"] for c in cases].index(case["name"]) // _CHUNK
    if (name, index) not in _results:
        chunk = cases[index * _CHUNK : (index + 1) * _CHUNK]
        programs = [_program(c) for c in chunk]
        args = [([_array(z, c, k) for k in c["inputs"]], _array(z, c, "cot")) for c in chunk]
        outs = compile_and_run(lambda a: [p(*x) for p, x in zip(programs, a)], args)
        _results[(name, index)] = {c["name"]: r for c, r in zip(chunk, outs)}
    return _results[(name, index)][case["name"]]


def _tol(dtype) -> dict:
    return dict(rtol=1e-5, atol=5e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-2, atol=1e-2)


def _close(actual, expected, what: str, **tol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), err_msg=what, **tol)


# ---------------------------------------------------------------------------
# float64 reference for the cases MindSpore could not differentiate (D2)
# ---------------------------------------------------------------------------


def _reference(case: dict, arrays: dict) -> dict:
    """Forward and pull-backs in float64 for the valid-mode ``has_vjp == False`` cases."""
    kw = _kwargs(case)
    cot = arrays["cot"].astype(np.float64)
    if case["op"] == "conv1d":
        x, w = arrays["input"].astype(np.float64), arrays["weight"].astype(np.float64)
        assert kw.get("pad_mode", "valid") == "valid" and kw.get("stride", 1) == 1 and kw.get("dilation", 1) == 1
        g, geo = kw.get("groups", 1), ((1,), (1,), ((0, 0),))
        out = reference.conv_nd(x, w, *geo, g) + arrays["bias"][None, :, None]
        return {
            "out": out,
            "input": reference.conv_transpose_nd(cot, w, x.shape[2:], *geo, g),
            "weight": reference.backprop_filter_nd(cot, x, w.shape, *geo, g),
            "bias": cot.sum(axis=(0, 2)),
        }
    assert case["op"] == "Conv3DTranspose" and kw["pad_mode"] == "valid" and kw["stride"] == 1
    assert kw["dilation"] == 1 and kw["group"] == 1
    d, w = arrays["dout"].astype(np.float64), arrays["weight"].astype(np.float64)
    geo = ((1,) * 3, (1,) * 3, ((0, 0),) * 3)
    size = tuple(o + k - 1 for o, k in zip(d.shape[2:], w.shape[2:]))
    return {
        "out": reference.conv_transpose_nd(d, w, size, *geo, 1),
        "dout": reference.conv_nd(cot, w, *geo, 1),
        "weight": reference.backprop_filter_nd(d, cot, w.shape, *geo, 1),
    }


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------


def _check_case(name: str, case: dict):
    z = load_golden(name).npz
    arrays = {k: _array(z, case, k) for k in (*case["inputs"], "cot", "out")}
    dtype = np.dtype(case["dtype"])
    tol = _tol(dtype)
    out, grads = results(name, case)
    assert out.dtype == dtype
    _close(out, arrays["out"], "forward", **tol)
    quirks = (case["quirk"] or "").split("+")
    for (input_name, key), g in zip(case["grads"], grads):
        assert g.dtype == arrays[input_name].dtype, (input_name, g.dtype)  # JAX: cotangent dtype = primal dtype
        if not case["has_vjp"]:  # M11
            ref = _reference(case, arrays)
            _close(g, ref[input_name].astype(dtype), f"{key} vs float64 reference", **tol)
            continue
        expected = _array(z, case, key)
        if "float16_weight_grad_is_float32" in quirks and input_name == "weight":  # M10
            assert expected.dtype == np.float32 and g.dtype == np.float16
            expected = expected.astype(np.float16)
        _close(g, expected, key, **tol)
    if not case["has_vjp"]:
        _close(out, _reference(case, arrays)["out"], "forward vs float64 reference", **tol)


@pytest.mark.parametrize("case", _cases("conv3d"))
def test_conv3d_golden_case(case):
    _check_case("conv3d", case)


@pytest.mark.parametrize("case", _cases("functional"))
def test_functional_golden_case(case):
    _check_case("functional", case)


@pytest.mark.parametrize(
    "case",
    [p for p in _cases("conv3d") if p.values[0] is None or "attr_ignored" in "".join(p.values[0]["tags"])],
)
def test_ignored_channel_attributes_warn(case):
    """M9: the forward uses the arrays' shapes (as MindSpore) and warns once, naming both numbers."""
    z = load_golden("conv3d").npz
    kw = _kwargs(case)
    dout, weight = (_array(z, case, k) for k in case["inputs"])
    with pytest.warns(UserWarning) as record:
        jax.eval_shape(ops.Conv3DTranspose(**kw), dout, weight)
    messages = [str(r.message) for r in record if issubclass(r.category, UserWarning)]
    assert len(messages) == 1, messages
    attr = "in_channel" if "in_channel_attr_ignored" in case["tags"] else "out_channel"
    assert f"{attr}={kw[attr]}" in messages[0], messages[0]


def test_valid_quirk_trailing_positions_are_zero():
    """valid_output_at_least_L_times_stride: output L * s long, the positions past (L - 1) * s + ek are 0."""
    import jax.numpy as jnp

    out = ops.Conv3DTranspose(1, 1, kernel_size=1, stride=3)(jnp.ones((1, 1, 2, 2, 2)), jnp.ones((1, 1, 1, 1, 1)))
    assert out.shape == (1, 1, 6, 6, 6)
    assert float(out[0, 0, 3, 3, 3]) == 1.0 and float(jnp.abs(out[0, 0, 4:, :, :]).max()) == 0.0


_SIGNATURES = {
    "Conv3D": "(out_channel, kernel_size, mode=1, pad_mode='valid', pad=0, stride=1, dilation=1, group=1, "
    "data_format='NCDHW')",
    "Conv3DTranspose": "(in_channel, out_channel, kernel_size, mode=1, pad_mode='valid', pad=0, stride=1, dilation=1, "
    "group=1, output_padding=0, data_format='NCDHW')",
    "conv1d": "(input, weight, bias=None, stride=1, pad_mode='valid', padding=0, dilation=1, groups=1)",
    "conv2d": "(input, weight, bias=None, stride=1, pad_mode='valid', padding=0, dilation=1, groups=1)",
    "conv3d": "(input, weight, bias=None, stride=1, pad_mode='valid', padding=0, dilation=1, groups=1)",
    "conv_transpose2d": "(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)",
    "conv3d_transpose": "(inputs, weight, pad_mode='valid', padding=0, stride=1, dilation=1, group=1, output_padding=0)",
}


def test_ops_module_has_mindspore_names_and_signatures():
    """A port is an import change: MindSpore 2.10's names, parameter order and defaults."""
    import inspect

    import jax_conv_bpi

    assert jax_conv_bpi.ops is ops and "ops" in jax_conv_bpi.__all__
    assert set(ops.__all__) == {*_SIGNATURES, "Conv2D", "Conv2DBackpropInput", "Conv2DTranspose"}
    assert ops.Conv2DBackpropInput is jax_conv_bpi.Conv2DBackpropInput and ops.Conv2D is jax_conv_bpi.Conv2D
    for name, want in _SIGNATURES.items():
        params = inspect.signature(getattr(ops, name)).parameters.values()
        shown = ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}" for p in params)
        assert f"({shown})" == want, name

"""MindSpore's golden vectors: every numeric case, forward and both VJPs.

For each of the golden cases (``../shared/golden``), ``jax.vjp`` of the
MindSpore-style class gives the forward output and the pull-backs of the
case's cotangent; all three are compared with MindSpore's arrays within the
golden README's tolerances. The deliberate differences of the README
("Differences from MindSpore") are checked where a case shows one:

* item 4: ``kernel_size`` / ``out_channel`` that disagree with the weight give
  exactly one ``UserWarning`` naming both values; MindSpore's backward raised
  there (``has_vjp == False``), so our gradients are checked against the
  float64 NumPy reference (``tests/support/reference.py``) instead;
* item 5: the two ``quirk`` cases (MindSpore's ``dout`` gradient ignores the
  overriding ``pad_list``) are compared with the reference for that gradient;
* item 6: a 4-tuple stride/dilation with non-unit N/C entries is rejected, and
  the same case with those entries set to 1 matches MindSpore.

Each NCHW case also runs in NHWC (transposed operands, OHWI weight,
``input_size`` in NHWC order) and must give the transposed NCHW results. A
subset runs eagerly and through ``jax.jit`` of the class call, and in float64
and bfloat16 against the reference.

Cost: XLA compile time dominates. Cases are compiled in chunks (one program
holds the forward, both VJPs and the NHWC variant of several cases), with the
compiler's CPU backend optimisation off, the legacy loop-fusion emitter and
no parallel codegen split; these change compile time only (the convolutions are library calls, the
fusions are data movement and one rounding cast). The eager/jit test runs its
cases with default options and checks them against the chunked results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi

from .support import (
    Golden,
    compile_and_run,
    enable_x64,
    from_nchw,
    golden_cases,
    hw,
    mindspore_geometry,
    reference,
    to_nchw,
    to_nhwc,
)


def reference_vjp(case: dict, kw: dict, dout, weight, cot):
    """Float64 forward and pull-backs of ``cot`` from tests/support/reference.py, in the case's layout."""
    fmt = case["data_format"]
    size = tuple(int(v) for v in case["input_size"])
    if fmt == "NHWC":
        dout, weight, cot = to_nchw(dout), to_nchw(weight), to_nchw(cot)
        size = (size[0], size[3], size[1], size[2])
    geom = mindspore_geometry(kw, size, weight.shape)
    out = reference.backprop_input(dout, weight, size, *geom)
    # out = B(dout, weight) is bilinear: <cot, B(dout, w)> = <conv2d(cot, w), dout> = <bpf(dout, cot), w>.
    g_dout = reference.conv2d(cot, weight, *geom)
    g_weight = reference.backprop_filter(dout, cot, weight.shape, *geom)
    return from_nchw(out, fmt), from_nchw(g_dout, fmt), from_nchw(g_weight, fmt)


# ---------------------------------------------------------------------------
# Case classification
# ---------------------------------------------------------------------------

_LEAD_TAGS = ("stride4_nonunit_lead", "dilation4_nonunit_lead")
_ATTR_TAGS = ("kernel_size_attr_ignored", "out_channel_attr_ignored")


def _has(case: dict, tags) -> bool:
    return any(t in case["tags"] for t in tags)


def _unit_lead(kw: dict) -> dict:
    """The same kwargs with 4-tuple stride/dilation's N and C entries set to 1."""
    kw = dict(kw)
    for name in ("stride", "dilation"):
        if isinstance(kw[name], tuple) and len(kw[name]) == 4:
            kw[name] = (1, 1) + kw[name][2:]
    return kw


def _run_kwargs(case: dict) -> dict:
    kw = Golden.ctor_kwargs(case)
    return _unit_lead(kw) if _has(case, _LEAD_TAGS) else kw


def _nhwc_input_size(size):
    """``input_size`` in NHWC order, passed in the same kind (tuple, list or int64 array)."""
    order = [0, 2, 3, 1]
    if isinstance(size, np.ndarray):
        return size[order]
    return type(size)(size[i] for i in order)


# ---------------------------------------------------------------------------
# Compiled programs
# ---------------------------------------------------------------------------


def fwd_vjp(op, input_size, dout, weight, cot):
    """Forward output and both pull-backs of ``cot``, as in the golden README."""
    out, pull = jax.vjp(lambda d, w: op(d, w, input_size), dout, weight)
    return (out, *pull(cot))


def _case_program(case: dict):
    kw = _run_kwargs(case)
    cls = getattr(jax_conv_bpi, case["op"])
    op, size = cls(**kw), Golden.input_size(case)
    op_nhwc = cls(**{**kw, "data_format": "NHWC"}) if case["data_format"] == "NCHW" else None

    def program(dout, weight, cot):
        res = {"main": fwd_vjp(op, size, dout, weight, cot)}
        if op_nhwc is not None:
            res["nhwc"] = fwd_vjp(op_nhwc, _nhwc_input_size(size), to_nhwc(dout), to_nhwc(weight), to_nhwc(cot))
        return res

    return program


_CHUNK = 8  # measured: larger programs compile super-linearly, single cases pay a fixed cost
_chunks: dict[int, dict[str, dict]] = {}


def golden_results(golden: Golden, case: dict) -> dict:
    """Our results for ``case``, computed with the other cases of its chunk in one program."""
    names = [c["name"] for c in golden.cases]
    index = names.index(case["name"]) // _CHUNK
    if index not in _chunks:
        cases = golden.cases[index * _CHUNK : (index + 1) * _CHUNK]
        programs = [_case_program(c) for c in cases]
        args = [tuple(golden.array(c, k) for k in ("dout", "weight", "cot")) for c in cases]
        outs = compile_and_run(lambda a: [p(*x) for p, x in zip(programs, a)], args)
        _chunks[index] = {c["name"]: r for c, r in zip(cases, outs)}
    return _chunks[index][case["name"]]


# ---------------------------------------------------------------------------
# Every numeric golden case
# ---------------------------------------------------------------------------


def _close(actual, expected, what: str, **tol):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), err_msg=what, **tol)


def _same_up_to_order(case: dict, expected) -> dict:
    """Tolerance for two evaluations of the same sums in another order (or with FMA contraction)."""
    eps = 1e-6 if case["dtype"] == "float32" else 1e-3
    scale = max(1.0, float(np.max(np.abs(np.asarray(expected, np.float64)), initial=0.0)))
    return dict(rtol=10 * eps, atol=eps * scale)


def _mentions(msg: str, *forms) -> bool:
    return any(str(f) in msg for f in forms)


def _check_attr_warning(case: dict, dout, weight, cot):
    """docs/differences.md, item 4: one UserWarning naming the attribute's value and the weight's."""
    kw = Golden.ctor_kwargs(case)
    op = getattr(jax_conv_bpi, case["op"])(**kw)
    size = Golden.input_size(case)
    with pytest.warns(UserWarning) as record:
        jax.eval_shape(lambda d, w, c: fwd_vjp(op, size, d, w, c), dout, weight, cot)  # forward and backward
    user = [r for r in record if issubclass(r.category, UserWarning)]
    assert len(user) == 1, [str(r.message) for r in user]
    msg = str(user[0].message)
    if "kernel_size_attr_ignored" in case["tags"]:
        ks = kw["kernel_size"]
        assert "kernel_size" in msg and _mentions(msg, ks if isinstance(ks, tuple) else (ks, ks), ks), msg
        assert _mentions(msg, tuple(weight.shape[2:])), msg
    else:
        assert "out_channel" in msg and _mentions(msg, kw["out_channel"]), msg
        assert _mentions(msg, weight.shape[0]), msg


@pytest.mark.parametrize("case", golden_cases())
def test_golden_case(golden, case):
    dout, weight, cot = (golden.array(case, k) for k in ("dout", "weight", "cot"))
    tol = Golden.tolerance(case)
    dtype = np.dtype(case["dtype"])

    if _has(case, _LEAD_TAGS):  # docs/differences.md, item 6
        with pytest.raises(ValueError, match="stride|dilation"):
            getattr(jax_conv_bpi, case["op"])(**Golden.ctor_kwargs(case))
    if _has(case, _ATTR_TAGS):  # docs/differences.md, item 4
        _check_attr_warning(case, dout, weight, cot)

    out, g_dout, g_weight = golden_results(golden, case)["main"]
    assert out.dtype == g_dout.dtype == g_weight.dtype == dtype
    _close(out, golden.array(case, "out"), "forward", **tol)

    if case["has_vjp"] and not case["quirk"]:
        _close(g_dout, golden.array(case, "vjp_dout"), "vjp_dout", **tol)
        _close(g_weight, golden.array(case, "vjp_weight"), "vjp_weight", **tol)
    else:
        # MindSpore's backward raised (has_vjp False), or its dout-gradient ignores the
        # overriding pad_list (quirk, docs/differences.md, item 5: its vjp_dout does not even have
        # dout's shape). Our gradients use the forward's effective padding: check them
        # against the float64 reference, and vjp_weight against MindSpore where it exists.
        ref = reference_vjp(case, _run_kwargs(case), dout, weight, cot)
        _close(g_dout, ref[1].astype(dtype), "vjp_dout vs reference", **tol)
        _close(g_weight, ref[2].astype(dtype), "vjp_weight vs reference", **tol)
        if case["has_vjp"]:
            assert golden.array(case, "vjp_dout").shape != dout.shape  # the quirk this case documents
            _close(g_weight, golden.array(case, "vjp_weight"), "vjp_weight", **tol)


@pytest.mark.parametrize("case", golden_cases(lambda c: c["data_format"] == "NCHW"))
def test_nhwc_is_transposed_nchw(golden, case):
    """docs/differences.md, item 7: NHWC (OHWI weight, NHWC input_size) == NCHW, transposed."""
    res = golden_results(golden, case)
    for what, nchw, nhwc in zip(("forward", "vjp_dout", "vjp_weight"), res["main"], res["nhwc"]):
        assert nhwc.dtype == nchw.dtype
        _close(to_nchw(nhwc), nchw, f"NHWC {what}", **_same_up_to_order(case, nchw))


# ---------------------------------------------------------------------------
# Eager vs jit, and other dtypes, on a representative subset
# ---------------------------------------------------------------------------

_EAGER_TAGS = ("same", "pad_asym", "depthwise", "ambiguous_input_size", "input_size_kind", "float16", "nhwc_derived")
_DTYPE_TAGS = ("valid", "same", "pad_sym", "pad_asym", "group", "depthwise", "ambiguous_input_size", "pad_list")
_DTYPE_TAGS += ("pad_mode_case", "edge", "larger", "alias")


def _strided_dilated(case: dict) -> bool:
    kw = _run_kwargs(case)
    return max(hw(kw["stride"])) > 1 and max(hw(kw["dilation"])) > 1


def _subset(predicate, tags, strided_dilated: int) -> set[str]:
    """First case of each tag, plus the first ``strided_dilated`` strided + dilated ones."""
    cases = [p.values[0] for p in golden_cases(predicate) if p.values[0] is not None]
    names = {next(c["name"] for c in cases if tag in c["tags"]) for tag in tags if any(tag in c["tags"] for c in cases)}
    names.update([c["name"] for c in cases if _strided_dilated(c)][:strided_dilated])
    return names


_EAGER_SUBSET = _subset(lambda c: not _has(c, _ATTR_TAGS), _EAGER_TAGS, 1)


@pytest.mark.parametrize("case", golden_cases(lambda c: c["name"] in _EAGER_SUBSET))
def test_eager_matches_jit(golden, case):
    """Eager evaluation, ``jax.jit`` of the class call (input_size static) and the grid agree."""
    dout, weight, cot = (golden.array(case, k) for k in ("dout", "weight", "cot"))
    op = getattr(jax_conv_bpi, case["op"])(**_run_kwargs(case))
    size = Golden.input_size(case)
    eager = fwd_vjp(op, size, dout, weight, cot)
    jitted_op = jax.jit(op, static_argnums=2)
    static_size = tuple(int(v) for v in size)
    jitted = fwd_vjp(jitted_op, static_size, dout, weight, cot)
    grid = golden_results(golden, case)["main"]
    for what, e, j, g in zip(("forward", "vjp_dout", "vjp_weight"), eager, jitted, grid):
        assert e.dtype == j.dtype == g.dtype
        tol = _same_up_to_order(case, e)
        _close(np.asarray(j), np.asarray(e), f"jit vs eager {what}", **tol)
        _close(g, np.asarray(e), f"grid vs eager {what}", **tol)


_DTYPE_SUBSET = _subset(
    lambda c: c["data_format"] == "NCHW" and c["dtype"] == "float32" and c["has_vjp"] and not c["quirk"],
    _DTYPE_TAGS,
    3,
)
_dtype_results: dict[str, dict[str, tuple]] = {}


def _dtype_run(golden: Golden, dtype: str) -> dict[str, tuple]:
    """All subset cases in ``dtype``, one program; float64 inside an x64 context."""
    if dtype not in _dtype_results:
        cases = [c for c in golden.cases if c["name"] in _DTYPE_SUBSET]
        programs = [_case_program_plain(c) for c in cases]

        def run():
            args = [tuple(_cast(golden.array(c, k), dtype) for k in ("dout", "weight", "cot")) for c in cases]
            return compile_and_run(lambda a: [p(*x) for p, x in zip(programs, a)], args)

        x64 = jax.config.jax_enable_x64
        if dtype == "float64":
            with enable_x64(True):
                outs = run()
        else:
            outs = run()
        assert jax.config.jax_enable_x64 == x64  # the x64 context does not leak into other tests
        _dtype_results[dtype] = {c["name"]: tuple(np.asarray(o) for o in r) for c, r in zip(cases, outs)}
    return _dtype_results[dtype]


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    """NumPy cast (round to nearest even); jnp.bfloat16 is NumPy's ml_dtypes bfloat16."""
    return a.astype(jnp.dtype(dtype))


def _case_program_plain(case: dict):
    op = getattr(jax_conv_bpi, case["op"])(**_run_kwargs(case))
    size = Golden.input_size(case)
    return lambda d, w, c: fwd_vjp(op, size, d, w, c)


def _bf16_ulp(x: np.ndarray) -> np.ndarray:
    """Spacing of bfloat16 numbers at |x| (8 significant bits)."""
    _, e = np.frexp(np.abs(x))
    return np.ldexp(1.0, e - 8)


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("case", golden_cases(lambda c: c["name"] in _DTYPE_SUBSET))
def test_dtype_vs_float64_reference(golden, case, dtype):
    """docs/differences.md, item 8: float64 exactly, bfloat16 one f32-accumulated rounding off."""
    ours = _dtype_run(golden, dtype)[case["name"]]
    jdt = jnp.dtype(dtype)
    inputs = [_cast(golden.array(case, k), dtype).astype(np.float64) for k in ("dout", "weight", "cot")]
    ref = reference_vjp(case, _run_kwargs(case), *inputs)
    for what, o, r in zip(("forward", "vjp_dout", "vjp_weight"), ours, ref):
        assert o.dtype == jdt, (what, o.dtype)
        o64 = np.asarray(o, np.float64)
        scale = max(1.0, float(np.max(np.abs(r), initial=0.0)))
        if dtype == "float64":
            _close(o64, r, what, rtol=1e-12, atol=1e-12 * scale)
        else:
            r16 = np.asarray(r.astype(jnp.bfloat16), np.float64)  # the correctly rounded result
            # One rounding of an f32 accumulation: at most one bf16 step away (plus f32 noise).
            bound = np.maximum(_bf16_ulp(r16), _bf16_ulp(o64)) + 1e-5 * scale
            assert o64.shape == r.shape
            bad = np.abs(o64 - r16) > bound
            assert not bad.any(), f"{what}: {int(bad.sum())} entries off by more than one bf16 step"

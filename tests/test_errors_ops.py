"""Bad input for ``jax_conv_bpi.ops``: every wave-2 error probe, with the decided outcome.

MindSpore's 292 ``Conv3D`` / ``Conv3DTranspose`` probes (``conv3d_errors.json``)
and 214 functional probes (``functional_errors.json``) are replayed. A probe
either has MindSpore's outcome (the same exception type at the same stage, or
accepted), or an entry in ``DECIDED`` below naming the docs/differences.md item
(section "3-D and functional ops") that changes it. On top of the table one
rule, as for the 2-D op: a call-time ``RuntimeError`` of MindSpore (oneDNN,
"Resize failed", the missing ``conv_transpose2d`` kernel rejecting bad
arguments) is a ``ValueError`` here. Every raised message starts with the
operator's name and names the argument; every accepted call is compared with
MindSpore's output shape (where it ran) and with the float64 NumPy reference.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_conv_bpi import ops

from .support import (
    GOLDEN_MISSING,
    enable_x64,
    golden_missing,
    literal,
    load_golden,
    probe_array,
    reference,
    transpose_sizes,
)


@dataclasses.dataclass(frozen=True)
class Raise:
    exc: type[Exception]
    difference: str  # docs/differences.md, 3-D / functional subsection


@dataclasses.dataclass(frozen=True)
class Accept:
    difference: str
    warns: bool = False


# docs/differences.md items (subsection "3-D and functional ops"):
#   M1 CPU-only limits not copied: Conv3DTranspose depth dilation, kernel volume <= 343, stride limits,
#      s <= output_padding < dilation
#   M2 conv3d_transpose's group quirk not copied (group bounded by the real output channels)
#   M3 conv_transpose2d is computed (MindSpore CPU has no kernel)
#   M4 pad_mode case-insensitive in conv1d / conv2d too
#   M5 NumPy arrays accepted (input, weight, bias); lists / scalars / None: TypeError
#   M6 float64 (with x64) and bfloat16 computed
#   M7 ZeroDivisionError / AttributeError / RuntimeError become ValueError / TypeError naming the argument
#   M8 no primitive-cache quirk: a wrong argument type is always rejected
#   M9 in_channel / out_channel that disagree with the arrays: accepted with one UserWarning
#   (M10 and M11, gradient dtypes and gradients MindSpore cannot compute, are tested in test_golden_ops.py)
DECIDED: dict[str, dict[str, Raise | Accept]] = {
    "conv3d": {
        **dict.fromkeys(["err0212", "err0213", "err0214"], Accept("M1")),  # depth dilation
        **dict.fromkeys(["err0229", "err0230", "err0231"], Accept("M1")),  # kernel volume > 343
        **dict.fromkeys(["err0233", "err0234"], Accept("M1")),  # the depth-stride limit (index bug)
        **dict.fromkeys(["err0228", "err0289"], Accept("M1")),  # stride <= output_padding < dilation
        **dict.fromkeys(["err0254", "err0255", "err0270", "err0271"], Accept("M5")),  # numpy x / weight
        **dict.fromkeys(["err0246", "err0262", "err0248", "err0264"], Accept("M6")),  # float64, bfloat16
        **dict.fromkeys(["err0285", "err0286"], Accept("M9", warns=True)),
    },
    "functional": {
        **dict.fromkeys(["err0019", "err0020", "err0069", "err0070"], Accept("M4")),
        **dict.fromkeys(["err0042", "err0092", "err0142", "err0210", "err0182"], Accept("M5")),  # numpy input
        **dict.fromkeys(["err0034", "err0084", "err0134", "err0178"], Accept("M5")),  # numpy bias
        **dict.fromkeys(["err0043", "err0093", "err0143"], Raise(TypeError, "M7")),  # list weight: AttributeError
        **dict.fromkeys(["err0044", "err0094", "err0144", "err0211"], Accept("M6")),  # float64
        **dict.fromkeys(["err0028", "err0078", "err0128"], Raise(ValueError, "M7")),  # groups=0: ZeroDivisionError
        **dict.fromkeys(["err0187", "err0189"], Raise(TypeError, "M8")),
        **dict.fromkeys(["err0196", "err0197", "err0213"], Accept("M1")),  # depth dilation, kernel volume
        **dict.fromkeys(["err0205", "err0206"], Accept("M2")),
        # conv_transpose2d: the documented operator (every 'accept' probe), mixed dtypes a TypeError
        **dict.fromkeys(["err0150", "err0151", "err0158", "err0176", "err0186"], Accept("M3")),
        "err0185": Raise(TypeError, "M3"),
    },
}


def decided(name: str, probe: dict) -> tuple[Raise | Accept | None, str]:
    """(outcome, stage) for a probe: Raise, Accept, or None for 'accepted, as MindSpore'."""
    table = DECIDED[name]
    if probe["id"] in table:
        outcome = table[probe["id"]]
        return outcome, "call" if probe["call"] is not None and isinstance(outcome, Raise) else probe["stage"]
    if not probe["raised"]:
        return None, probe["stage"]
    kind = probe["exception_type"]
    if kind == "RuntimeError":  # the M7 rule
        assert probe["stage"] == "call", probe["id"]
        return Raise(ValueError, "M7"), "call"
    return Raise({"TypeError": TypeError, "ValueError": ValueError}[kind], ""), probe["stage"]


# ---------------------------------------------------------------------------
# Rebuilding a probe
# ---------------------------------------------------------------------------


def _call_kwargs(call: dict) -> dict:
    return {k: literal(v) for k, v in (call.get("kwargs_repr") or {}).items()}


def _api(probe: dict):
    return getattr(ops, probe["api"].split(".", 1)[1])


def _op_name(probe: dict) -> str:
    return probe["api"].split(".", 1)[1]


def _default_transpose_call(kw: dict, rng):
    """A valid (dout, weight) for a Conv3DTranspose probe that only constructs."""
    ks = kw["kernel_size"]
    ks = (ks,) * 3 if isinstance(ks, int) else ks
    c_in, group = kw["in_channel"], kw.get("group", 1)
    dout = rng.standard_normal((1, c_in, 2, 2, 2)).astype(np.float32)
    weight = rng.standard_normal((c_in, kw["out_channel"] // group, *ks)).astype(np.float32)
    return [jnp.asarray(dout), jnp.asarray(weight)], {}


def _large_kernel(args) -> bool:
    return len(args) > 1 and getattr(args[1], "ndim", 0) >= 3 and int(np.prod(args[1].shape[2:])) > 64


def _needs_x64(probe: dict) -> bool:
    return any(a.get("dtype") in ("float64", "int64") for a in (probe["call"] or {}).get("args", []))


def run_probe(probe: dict):
    """(stage reached, result or exception, args, call kwargs, ctor kwargs, warnings)."""
    rng = np.random.default_rng(int(probe["id"][3:]))
    ctor = {k: literal(v) for k, v in (probe["ctor_kwargs_repr"] or {}).items()}
    stage, args, kw = "construct", None, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn = _api(probe)(**ctor) if probe["ctor_kwargs_repr"] is not None else _api(probe)
            stage = "call"
            for pre in probe.get("pre_calls") or []:
                fn(*[probe_array(a, rng) for a in pre["args"]], **_call_kwargs(pre))
            if probe["call"] is None:
                if not (isinstance(fn, ops.Conv3DTranspose) and probe["raised"]):  # accepted as in MindSpore
                    return "done", None, None, kw, ctor, caught
                args, kw = _default_transpose_call(ctor, rng)
            else:
                args, kw = [probe_array(a, rng) for a in probe["call"]["args"]], _call_kwargs(probe["call"])
            if _large_kernel(args):
                # Compiling a 343+-tap kernel takes seconds (the 'direct' CPU path unrolls the taps); the
                # values of such kernels are the golden cases' (case0107, case0110). Shape and dtype here.
                out = jax.eval_shape(lambda *a: fn(*a, **kw), *args)
            else:
                out = jax.block_until_ready(fn(*args, **kw))
        except Exception as e:  # noqa: BLE001 - the test checks the type
            return stage, e, args, kw, ctor, caught
    return "done", out, args, kw, ctor, caught


# ---------------------------------------------------------------------------
# An independent float64 reading of the spec (section 4 / functional section 1)
# ---------------------------------------------------------------------------


def _axes(v, n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def _pairs6(pad) -> tuple:
    flat = (pad,) * 6 if isinstance(pad, int) else tuple(pad)
    return tuple((flat[i], flat[i + 1]) for i in (0, 2, 4))


def reference_result(api: str, ctor: dict, kw: dict, args: list) -> np.ndarray:
    arrays = [None if a is None else np.asarray(a, np.float64) for a in args]
    if api in ("Conv3D", "conv1d", "conv2d", "conv3d"):
        x, w = arrays[:2]
        bias = arrays[2] if len(arrays) > 2 else None
        n = x.ndim - 2
        src = ctor if api == "Conv3D" else kw
        s, d = _axes(src.get("stride", 1), n), _axes(src.get("dilation", 1), n)
        g = src.get("group", 1) if api == "Conv3D" else kw.get("groups", 1)
        mode = src.get("pad_mode", "valid").lower()
        if mode == "valid":
            pairs = ((0, 0),) * n
        elif mode == "same":
            flat = reference.same_padding(x.shape[2:], w.shape[2:], s, d)
            pairs = tuple((flat[2 * a], flat[2 * a + 1]) for a in range(n))
        elif api == "Conv3D":
            pairs = _pairs6(ctor.get("pad", 0))
        else:
            pairs = tuple((p, p) for p in _axes(kw.get("padding", 0), n))
        out = reference.conv_nd(x, w, s, d, pairs, g)
        return out if bias is None else out + bias.reshape((1, -1) + (1,) * n)
    y, w = arrays[:2]
    unbatched = y.ndim == w.ndim - 1
    if unbatched:
        y = y[None]
    n = y.ndim - 2
    src = ctor if api == "Conv3DTranspose" else kw
    s, d = _axes(src.get("stride", 1), n), _axes(src.get("dilation", 1), n)
    g = src.get("groups", 1) if api == "conv_transpose2d" else src.get("group", 1)
    mode = "pad" if api == "conv_transpose2d" else src.get("pad_mode", "valid").lower()
    o, k = y.shape[2:], w.shape[2:]
    if mode == "valid":
        sizes = tuple(max(oo * ss, (oo - 1) * ss + (kk - 1) * dd + 1) for oo, kk, ss, dd in zip(o, k, s, d))
        pairs = ((0, 0),) * n
    elif mode == "same":
        sizes = tuple(oo * ss for oo, ss in zip(o, s))
        flat = reference.same_padding(sizes, k, s, d)
        pairs = tuple((flat[2 * a], flat[2 * a + 1]) for a in range(n))
    else:
        if api == "conv_transpose2d":
            pairs = tuple((p, p) for p in _axes(kw.get("padding", 0), n))
            op_pad = _axes(kw.get("output_padding", 0), n)
        else:
            pairs = _pairs6(src.get("padding" if api == "conv3d_transpose" else "pad", 0))
            op_pad = _axes(src.get("output_padding", 0), n)
        sizes, pairs = transpose_sizes(o, k, s, d, pairs, op_pad)
    out = reference.conv_transpose_nd(y, w, sizes, s, d, pairs, g)
    if api == "conv_transpose2d" and len(arrays) > 2 and arrays[2] is not None:
        out = out + arrays[2].reshape(1, -1, 1, 1)
    return out[0] if unbatched else out


# ---------------------------------------------------------------------------
# The probes
# ---------------------------------------------------------------------------


def _probes(name: str):
    golden = load_golden(name)
    if golden is None:
        return [golden_missing(name, 2)]
    return [pytest.param(name, p, id=f"{name}-{p['id']}-{p['category']}") for p in golden.probes]


def _arg_names(desc: str) -> list[str]:
    return re.findall(r"(\w+)=", desc)


@pytest.mark.parametrize("name, probe", _probes("conv3d") + _probes("functional"))
def test_probe(name, probe):
    outcome, stage_want = decided(name, probe)
    with enable_x64(_needs_x64(probe)):
        stage, result, args, kw, ctor, caught = run_probe(probe)
        if isinstance(outcome, Raise):
            assert stage == stage_want, f"expected {outcome.exc.__name__} at {stage_want}, got {stage}: {result!r}"
            assert type(result) is outcome.exc, f"{type(result).__name__}: {result}"
            msg = str(result)
            assert msg.startswith(f"{_op_name(probe)}: "), msg
            if probe["category"].startswith(("ctor_", "call_value", "call_pad", "call_groups", "call_group")):
                assert any(f"'{a}'" in msg for a in _arg_names(probe["desc"])), msg
            return
        assert stage == "done", f"raised {type(result).__name__}: {result}"
        user = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if isinstance(outcome, Accept) and outcome.warns:
            assert len(user) == 1, user
        else:
            assert not user, user
        if args is None:
            return  # construct-only and accepted
        if not probe["raised"] and probe["call"] is not None:
            assert list(result.shape) == probe["output_shape"]
            assert str(result.dtype) == probe["output_dtype"].lower()
        if isinstance(result, jax.ShapeDtypeStruct):
            return  # a large kernel: checked abstractly (above)
        ref = reference_result(_op_name(probe), ctor, kw, args)
        tol = dict(rtol=1e-5, atol=5e-5) if result.dtype in (jnp.float32, jnp.float64) else dict(rtol=2e-2, atol=5e-2)
        assert result.shape == ref.shape
        np.testing.assert_allclose(np.asarray(result, np.float64), ref, **tol)


@pytest.mark.parametrize("name", ["conv3d", "functional"])
def test_decision_table_is_current(name):
    """Every DECIDED entry is a real probe whose MindSpore outcome it really changes."""
    golden = load_golden(name)
    if golden is None:
        pytest.skip(GOLDEN_MISSING)
    by_id = {p["id"]: p for p in golden.probes}
    for pid, outcome in DECIDED[name].items():
        probe = by_id[pid]
        if isinstance(outcome, Accept):
            assert probe["raised"] or outcome.warns, pid
        else:
            assert probe["raised"] is False or probe["exception_type"] != outcome.exc.__name__, pid


def test_probe_summary():
    """The counts docs/differences.md quotes: probes with MindSpore's outcome, and deviations per difference."""
    matched, deviations = 0, collections.Counter()
    for name in ("conv3d", "functional"):
        golden = load_golden(name)
        if golden is None:
            pytest.skip(GOLDEN_MISSING)
        for probe in golden.probes:
            outcome, _ = decided(name, probe)
            if outcome is None or (isinstance(outcome, Raise) and not outcome.difference):
                matched += 1
            else:
                deviations[outcome.difference] += 1
    assert matched + sum(deviations.values()) == 292 + 214
    print(f"probes: {matched} with MindSpore's outcome, deviations {dict(sorted(deviations.items()))}")


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, pieces",
    [
        (lambda: ops.Conv3D(4, 3, stride=(1, 1, 2, 2, 2)), ("Conv3D: ", "'stride'", "(1, 1, 2, 2, 2)", "tuple of 3")),
        (lambda: ops.Conv3D(4, 3, pad_mode="pad", pad=(1, 1)), ("'pad'", "exactly 6", "(head, tail")),
        (lambda: ops.Conv3D(4, 3, group=3), ("'group'", "divide out_channel=4")),
        (
            lambda: ops.Conv3DTranspose(2, 4, 3, pad_mode="pad", stride=2, output_padding=(1, 1, 2)),
            ("'output_padding'", "width", "[0, 2)"),
        ),
        (
            lambda: ops.Conv3D(4, 3)(jnp.ones((1, 2, 5, 5, 5)), jnp.ones((4, 2, 3, 4, 3))),
            ("Conv3D: ", "(3, 4, 3)", "kernel_size=(3, 3, 3)"),
        ),
        (
            lambda: ops.Conv3DTranspose(2, 4, 3, pad_mode="pad", pad=(0, 0, 3, 3, 0, 0))(
                jnp.ones((1, 2, 2, 3, 2)), jnp.ones((2, 4, 3, 3, 3))
            ),
            ("Conv3DTranspose: ", "height axis", "= -1", "less padding"),
        ),
        (
            lambda: ops.conv1d(jnp.ones((1, 2, 7)), jnp.ones((3, 2, 3)), groups=0),
            ("conv1d: ", "'groups'", ">= 1"),
        ),
        (
            lambda: ops.conv2d(jnp.ones((1, 3, 6, 6)), jnp.ones((3, 2, 3, 3))),
            ("conv2d: ", "input has 3 channels", "'groups'=1", "(1, 3, 6, 6)", "(3, 2, 3, 3)"),
        ),
        (
            lambda: ops.conv2d(jnp.ones((1, 2, 1, 1)), jnp.ones((3, 2, 3, 3))),
            ("conv2d: ", "does not fit", "height axis", "extent 3"),
        ),
        (
            lambda: ops.conv3d(jnp.ones((1, 2, 4, 4, 4)), [[0.0]]),
            ("conv3d: ", "'weight'", "JAX or NumPy array", "list"),
        ),
        (
            lambda: ops.conv_transpose2d(jnp.ones((1, 2, 4, 4)), jnp.ones((2, 3, 3, 3)), stride=2, output_padding=2),
            ("conv_transpose2d: ", "'output_padding'", "max(stride, dilation) = 2"),
        ),
        (
            lambda: ops.conv1d(jnp.ones((1, 2, 7)), jnp.ones((3, 2, 3)), jnp.ones(4)),
            ("conv1d: ", "'bias'", "(3,)", "(4,)"),
        ),
    ],
)
def test_message_names_operator_argument_and_fix(make, pieces):
    with pytest.raises((TypeError, ValueError)) as err:
        make()
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


# ---------------------------------------------------------------------------
# An empty output: MindSpore's Conv2D kernel (conv1d, conv2d) raises, its Conv3D returns it
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, pieces",
    [
        (  # size 2 under a kernel of 3: the output would have length 0 (not < 0: the old gate let it through)
            lambda: ops.conv1d(jnp.ones((1, 2, 2)), jnp.ones((3, 2, 3))),
            ("conv1d: ", "length axis", "size 2 padded by (0, 0) is 2", "extent 3", ">= 3", "pad_mode='same'"),
        ),
        (  # strided: padded 4 + 0, extent 5 (kernel 3 at dilation 2): (4 - 5) // 2 + 1 = 0
            lambda: ops.conv2d(jnp.ones((1, 2, 6, 4)), jnp.ones((3, 2, 3, 3)), stride=2, dilation=(1, 2)),
            ("conv2d: ", "width axis", "size 4 padded by (0, 0) is 4", "extent 5", "dilation 2"),
        ),
        (  # pad mode: 1 + 2 * 0 ... with padding 1: 3 rows under a kernel of 5
            lambda: ops.conv2d(jnp.ones((1, 2, 1, 9)), jnp.ones((3, 2, 5, 3)), pad_mode="pad", padding=1),
            ("conv2d: ", "height axis", "padded by (1, 1) is 3", "extent 5"),
        ),
    ],
)
def test_an_empty_output_of_conv1d_conv2d_is_a_value_error(make, pieces):
    """MindSpore: "input shape's h and w after padding must be greater than or equal to kernel_size's" (probes
    err0049 / err0099 of ``functional_errors.json``); the message computes the sizes."""
    with pytest.raises(ValueError) as err:
        make()
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_conv3d_keeps_mindsporess_empty_output():
    """MindSpore's Conv3D returns the empty result (probes err0149 / err0277): so do ``conv3d`` and ``Conv3D``."""
    assert ops.conv3d(jnp.ones((1, 2, 1, 1, 1)), jnp.ones((3, 2, 2, 2, 2))).shape == (1, 3, 0, 0, 0)
    assert ops.Conv3D(4, 3)(jnp.ones((1, 2, 2, 5, 5)), jnp.ones((4, 2, 3, 3, 3))).shape == (1, 4, 0, 3, 3)


# ---------------------------------------------------------------------------
# Errors that say the fix: a layout that would fit, a static argument traced inside jax.jit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, pieces",
    [
        (  # channels-last input
            lambda: ops.conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 2, 3, 3))),
            ("input has 5 channels", "'input' looks channels-last", "jnp.moveaxis(input, -1, 1)"),
        ),
        (  # an HWIO weight
            lambda: ops.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((3, 3, 2, 4))),
            ("'weight' looks like (*kernel, I, O)", "jnp.transpose(weight, (3, 2, 0, 1))"),
        ),
        (  # an OHWI weight, 3-D
            lambda: ops.conv3d(jnp.ones((1, 2, 5, 5, 5)), jnp.ones((4, 3, 3, 3, 2))),
            ("'weight' looks like (O, *kernel, I)", "jnp.moveaxis(weight, -1, 1)"),
        ),
        (  # grouped: the hint compares with C_in / groups
            lambda: ops.conv1d(jnp.ones((1, 4, 7)), jnp.ones((4, 3, 2)), groups=2),
            ("'weight' looks like (O, *kernel, I)", "= C_in/groups"),
        ),
        (  # channels-last dout of a transposed op
            lambda: ops.conv3d_transpose(jnp.ones((1, 5, 5, 5, 2)), jnp.ones((2, 3, 3, 3, 3))),
            ("inputs has 5 channels", "'inputs' looks channels-last", "jnp.moveaxis(inputs, -1, 1)"),
        ),
    ],
)
def test_a_channel_mismatch_that_another_layout_fits_says_so(make, pieces):
    with pytest.raises(ValueError) as err:
        make()
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_the_named_layout_fixes_work():
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 2, 3, 3))
    assert ops.conv2d(jnp.moveaxis(x, -1, 1), w).shape == (1, 3, 3, 3)
    hwio = jnp.ones((3, 3, 2, 4))
    assert ops.conv2d(jnp.ones((1, 2, 5, 5)), jnp.transpose(hwio, (3, 2, 0, 1))).shape == (1, 4, 3, 3)


def test_no_layout_hint_where_no_layout_fits():
    with pytest.raises(ValueError) as err:
        ops.conv2d(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 2, 3, 3)))
    assert "looks" not in str(err.value), str(err.value)


def test_a_traced_attribute_names_static_argnames():
    x, w = jnp.ones((1, 2, 7)), jnp.ones((3, 2, 3))
    with pytest.raises((TypeError, ValueError)) as err:  # conv1d's type for a non-int stride is MindSpore's ValueError
        jax.jit(lambda x, w, stride: ops.conv1d(x, w, stride=stride))(x, w, 2)
    msg = str(err.value)
    assert msg.startswith("conv1d: ") and "'stride'" in msg and "static_argnames=('stride',)" in msg, msg
    f = jax.jit(lambda x, w, stride: ops.conv1d(x, w, stride=stride), static_argnames=("stride",))
    assert f(x, w, stride=2).shape == (1, 3, 3)

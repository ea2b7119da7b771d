"""Bad input: every golden error probe, the decided outcomes, and the error messages.

Each of MindSpore's 212 recorded error / edge probes is replayed against the
class it names. Constructor probes must raise MindSpore's exception type with a
message naming the operator and the argument. Call probes raise what the
docs/differences.md decides; ``DECIDED`` below lists every
probe whose outcome differs from MindSpore's, with the difference number, and
the probes that succeed are compared with the float64 NumPy reference.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.mindspore import args_2d

from .support import as_nchw, enable_x64, from_nchw, golden_probes, literal, mindspore_geometry, probe_array, reference
from .support import hw as _hw

# ---------------------------------------------------------------------------
# Decided outcomes
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Raise:
    exc: type[Exception]
    stage: str  # "construct" | "call"
    difference: int  # number in the docs/differences.md


@dataclasses.dataclass(frozen=True)
class Accept:
    difference: int
    warns: bool = False  # one UserWarning naming both values (difference 4)


# Every probe whose outcome is not MindSpore's, keyed by the probe's `desc`.
# On top of this table one rule: a call-time RuntimeError of MindSpore (its
# opaque oneDNN / shape-inference failures) is a ValueError here (difference 2).
DECIDED: dict[str, Raise | Accept] = {
    # 3. pad_mode is case-insensitive everywhere: "PAD" with a non-zero pad is pad mode.
    "pad_mode='PAD' pad=1": Accept(3),
    "pad_mode='Pad' pad=(1, 1, 1, 1)": Accept(3),
    "Conv2DTranspose: pad_mode='PAD', pad=1": Accept(3),
    # 4. kernel_size / out_channel disagreeing with the weight: MindSpore's forward
    #    ignores them silently; here the same result plus one UserWarning.
    "out_channel attr != weight C_out (accepted)": Accept(4, warns=True),
    "kernel_size attr != weight spatial shape (accepted)": Accept(4, warns=True),
    # 5. pad_list that MindSpore rejects only at call time is rejected by the constructor.
    "pad_mode='pad' pad_list=(1, 1)": Raise(ValueError, "construct", 5),
    "pad_mode='pad' pad_list=(1, 1, 1)": Raise(ValueError, "construct", 5),
    "pad_mode='pad' pad_list=[]": Raise(ValueError, "construct", 5),
    "pad_mode='pad' pad_list=()": Raise(ValueError, "construct", 5),
    "pad_mode='pad' pad_list=0": Raise(TypeError, "construct", 5),
    "pad_mode='valid' pad_list=0": Raise(TypeError, "construct", 5),
    # 7. data_format="NHWC" works on every platform (MindSpore CPU: ValueError).
    "data_format='NHWC'": Accept(7),
    "data_format='NHWC' with NHWC-shaped inputs (CPU)": Accept(7),
    # 8. float64 (with jax_enable_x64) and bfloat16 are computed.
    "dout and weight float64": Accept(8),
    "Conv2DTranspose: float64 inputs": Accept(8),
    "dout and weight bfloat16": Accept(8),
    # 9. input_size: NumPy integer scalars of any width, 1-D integer arrays of any integer dtype.
    "input_size=numpy int64 array": Accept(9),
    "input_size=Tensor int32": Accept(9),
    "input_size with a numpy int32 element": Accept(9),
    "input_size=tuple of numpy uint32": Accept(9),
    # 11. NumPy arrays are accepted like JAX arrays; lists and scalars are a TypeError.
    "dout numpy array": Accept(11),
    "weight numpy array": Accept(11),
    "dout python list": Raise(TypeError, "call", 11),
    "dout python float": Raise(TypeError, "call", 11),
}

# Arguments a call-time message must name, where it is not simply 'input_size'.
CALL_NAMES: dict[str, tuple[str, ...]] = {
    "input N != dout N": ("dout", "input_size", "batch"),
    "input C != weight C_in (group 1)": ("input_size", "weight", "group"),
    "input C = 2*weight C_in but group 1": ("input_size", "weight", "group"),
    "group=2 but input C = weight C_in": ("input_size", "weight", "group"),
    "input C not divisible by group": ("input_size", "weight", "group"),
    "group does not divide C_out": ("group", "weight"),
    "dout channels != weight C_out": ("dout", "weight"),
    "weight spatial larger than padded input": ("dout", "input_size", "kernel 6"),
    "dout with zero batch, input N=1": ("dout", "input_size", "batch"),
}


def decided(probe: dict) -> Raise | Accept | None:
    """The project's outcome for a probe: a Raise, an Accept, or None for 'accepted as in MindSpore'."""
    if probe["desc"] in DECIDED:
        return DECIDED[probe["desc"]]
    if not probe["raised"]:
        return None
    exc = {"TypeError": TypeError, "ValueError": ValueError, "RuntimeError": ValueError}[probe["exception_type"]]
    if probe["exception_type"] == "RuntimeError":
        assert probe["stage"] == "call", probe["id"]  # only call-time failures are RuntimeErrors
    return Raise(exc, probe["stage"], 2 if probe["exception_type"] == "RuntimeError" else 0)


# ---------------------------------------------------------------------------
# Rebuilding a probe
# ---------------------------------------------------------------------------

_TENSOR_REPR = re.compile(r"^Tensor\(shape=(\[[^\]]*\]), dtype=(\w+), value=\s*(.*)\)$", re.S)


def _value(text: str):
    """``ast.literal_eval`` plus the two non-literal reprs the probes use: ``np.<int>(v)`` and ``Tensor(...)``."""
    m = _TENSOR_REPR.match(text)
    if m:
        shape, dtype, values = m.groups()
        return jnp.asarray(np.asarray(ast.literal_eval(values), dtype.lower()).reshape(ast.literal_eval(shape)))
    return literal(text)


def ctor_kwargs(probe: dict) -> dict:
    return {k: _value(v) for k, v in probe["ctor_kwargs_repr"].items()}


def _input_size(spec: dict):
    if spec["kind"] == "python":
        return _value(spec["repr"])
    values = np.asarray(spec["values"], spec["dtype"])
    return values if spec["kind"] == "numpy" else jnp.asarray(values)


# Calls for the probes that only construct but whose decided outcome is success.
_EXTRA_CALLS = {
    "pad_mode='PAD' pad=1": ((1, 4, 5, 5), (4, 2, 3, 3), (1, 2, 5, 5)),
    "pad_mode='Pad' pad=(1, 1, 1, 1)": ((1, 4, 5, 5), (4, 2, 3, 3), (1, 2, 5, 5)),
    "Conv2DTranspose: pad_mode='PAD', pad=1": ((2, 4, 5, 4), (4, 2, 3, 3), (2, 2, 5, 4)),
    "data_format='NHWC'": ((1, 3, 3, 4), (4, 3, 3, 2), (1, 5, 5, 2)),
    "data_format='NHWC' with NHWC-shaped inputs (CPU)": ((2, 3, 4, 4), (4, 3, 3, 2), (2, 5, 6, 2)),
}
_DEFAULT_CALL = ((1, 4, 3, 3), (4, 2, 3, 3), (1, 2, 5, 5))


def call_args(probe: dict, rng: np.random.Generator):
    """(dout, weight, input_size) of a probe (a valid default call for constructor-only probes)."""
    call = probe["call"]
    if call is None:
        d, w, size = _EXTRA_CALLS.get(probe["desc"], _DEFAULT_CALL)
        return (
            jnp.asarray(rng.standard_normal(d), jnp.float32),
            jnp.asarray(rng.standard_normal(w), jnp.float32),
            size,
        )
    return probe_array(call["dout"], rng), probe_array(call["weight"], rng), _input_size(call["input_size"])


def _needs_x64(probe: dict) -> bool:
    call = probe["call"] or {}
    return any(isinstance(v, dict) and v.get("dtype") in ("float64", "int64") for v in call.values())


def _op_class(probe: dict):
    return {"Conv2DBackpropInput": jcb.Conv2DBackpropInput, "Conv2DTranspose": jcb.Conv2DTranspose}[probe["op"]]


def _fault_argument(desc: str) -> str:
    """The argument a constructor probe gets wrong: the last ``name=`` in its description."""
    names = re.findall(r"(\w+)=", desc)
    return names[-1] if names else ""


# ---------------------------------------------------------------------------
# An independent reading of the attributes (spec sections 2 and 4), for the reference
# ---------------------------------------------------------------------------


def reference_result(kwargs: dict, dout, weight, input_size) -> np.ndarray:
    """float64 NumPy reference of ``Op(**kwargs)(dout, weight, input_size)`` in the op's layout."""
    fmt = kwargs.get("data_format", "NCHW")
    dout = np.asarray(dout, np.float64)
    weight = np.asarray(weight, np.float64)
    size = tuple(int(v) for v in np.asarray(input_size).tolist())
    dout, weight = as_nchw(dout, fmt), as_nchw(weight, fmt)
    if fmt == "NHWC":
        size = (size[0], size[3], size[1], size[2])
    out = reference.backprop_input(dout, weight, size, *mindspore_geometry(kwargs, size, weight.shape))
    return from_nchw(out, fmt)


def _tolerance(dtype) -> dict:
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return dict(rtol=1e-12, atol=1e-12)
    if dtype == jnp.float32:
        return dict(rtol=1e-5, atol=5e-5)
    return dict(rtol=2e-2, atol=5e-2)  # float16 / bfloat16: one rounding of an f32 accumulation


# ---------------------------------------------------------------------------
# The probes
# ---------------------------------------------------------------------------


def _run(probe: dict):
    """Construct and call as the probe says; returns (stage reached, result, call args, warnings)."""
    rng = np.random.default_rng(int(probe["id"][3:]))
    kwargs = ctor_kwargs(probe)
    stage = "construct"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            op = _op_class(probe)(**kwargs)
            stage = "call"
            args = call_args(probe, rng)
            out = op(*args)
            jax.block_until_ready(out)
        except Exception as e:  # noqa: BLE001 - the caller checks the type
            return stage, e, None, kwargs, caught
    return "done", out, args, kwargs, caught


@pytest.mark.parametrize("probe", golden_probes())
def test_probe(probe):
    outcome = decided(probe)
    with enable_x64(_needs_x64(probe)):
        stage, result, args, kwargs, caught = _run(probe)
        if isinstance(outcome, Raise):
            assert stage == outcome.stage, f"expected {outcome.exc.__name__} at {outcome.stage}, got {result!r}"
            assert type(result) is outcome.exc, f"{probe['id']}: {type(result).__name__}: {result}"
            msg = str(result)
            assert msg.startswith(f"{probe['op']}: "), msg
            if stage == "construct":
                assert f"'{_fault_argument(probe['desc'])}'" in msg, msg
            else:
                names = CALL_NAMES.get(probe["desc"])
                if probe["category"] == "call_dtype":
                    # The first argument with an unsupported dtype, or both when they differ.
                    bad = [k for k in ("dout", "weight") if "float" not in probe["call"][k]["dtype"]]
                    names = (bad[0], probe["call"][bad[0]]["dtype"]) if bad else ("dout", "weight")
                if names is None:
                    names = (probe["desc"].split()[0],) if probe["category"] in ("call_rank", "call_type") else ()
                    names = names or ("input_size",)
                for name in names:
                    assert name in msg, (name, msg)
            return
        # Accepted: MindSpore's output shape and dtype, zeros where MindSpore gave zeros,
        # and the values of the float64 reference.
        assert stage == "done", f"{probe['id']} raised {type(result).__name__}: {result}"
        out = result
        if probe["call"] is not None and not probe["raised"]:
            assert list(out.shape) == probe["output_shape"]
            assert str(out.dtype) == probe["output_dtype"].lower()
            if probe["output_all_zero"]:
                assert not np.any(np.asarray(out, np.float64))
        ref = reference_result(kwargs, *args)
        assert out.shape == ref.shape
        dout_dtype = args[0].dtype if hasattr(args[0], "dtype") else jnp.float32
        assert out.dtype == jnp.asarray(args[0]).dtype == dout_dtype
        np.testing.assert_allclose(np.asarray(out, np.float64), ref, **_tolerance(out.dtype))
        user = [w for w in caught if issubclass(w.category, UserWarning)]
        if isinstance(outcome, Accept) and outcome.warns:
            assert len(user) == 1, [str(w.message) for w in user]
            text = str(user[0].message)
            attr = "out_channel" if "out_channel" in probe["desc"] else "kernel_size"
            shown = kwargs[attr]
            assert attr in text and str(shown) in text, text
        else:
            assert not user, [str(w.message) for w in user]


def test_decision_table_is_current(golden):
    """Every DECIDED entry names a real probe and really differs from MindSpore."""
    by_desc = {p["desc"]: p for p in golden.probes}
    for desc, outcome in DECIDED.items():
        probe = by_desc[desc]
        if isinstance(outcome, Accept):
            assert probe["raised"] or outcome.warns, desc
        else:
            assert (
                (not probe["raised"])
                or probe["exception_type"] != outcome.exc.__name__
                or (probe["stage"] != outcome.stage)
            ), desc
    for desc in CALL_NAMES:
        assert desc in by_desc, desc


# ---------------------------------------------------------------------------
# One gate: the class and the function say the same thing
# ---------------------------------------------------------------------------

_CLASS_ONLY = {"out_channel", "kernel_size", "mode"}


def _raising_probes(p):
    outcome = decided(p)
    return isinstance(outcome, Raise) and not (
        outcome.stage == "construct" and _fault_argument(p["desc"]) in _CLASS_ONLY
    )


@pytest.mark.parametrize("probe", golden_probes(_raising_probes))
def test_class_and_function_messages_match(probe):
    with enable_x64(_needs_x64(probe)):
        _, cls_err, _, kwargs, _ = _run(probe)
        fn_kwargs = {k: v for k, v in kwargs.items() if k not in _CLASS_ONLY}
        rng = np.random.default_rng(int(probe["id"][3:]))
        args = call_args(probe, rng)
        with pytest.raises(type(cls_err)) as fn_err:
            jcb.conv2d_backprop_input(*args, **fn_kwargs)
    assert str(fn_err.value) == str(cls_err).replace(f"{probe['op']}: ", "conv2d_backprop_input: ", 1)


# ---------------------------------------------------------------------------
# Messages: operator, argument, value, what is accepted
# ---------------------------------------------------------------------------

_RANGE = re.compile(r"input (height|width)s that give dout \1 (\d+) are (\d+)\.\.(\d+)")


@pytest.mark.parametrize(
    "kwargs, dout_hw, kernel, size_hw",
    [
        (dict(stride=2), (5, 4), (3, 3), (8, 9)),  # the docs/errors.md example: heights 11..12
        (dict(stride=(3, 1), dilation=(1, 2)), (2, 3), (2, 3), (9, 6)),
        (dict(stride=2, pad_mode="pad", pad=(1, 0, 2, 1)), (3, 3), (3, 2), (4, 4)),
        (dict(stride=(2, 3), pad_mode="Same"), (4, 3), (3, 3), (9, 9)),
        (dict(stride=2, pad_mode="pad", pad_list=(0, 2, 1, 1)), (3, 2), (3, 3), (9, 9)),
        (dict(stride=3, data_format="NHWC"), (2, 2), (2, 3), (8, 3)),
    ],
)
def test_spatial_mismatch_gives_the_fitting_range(kwargs, dout_hw, kernel, size_hw):
    """The message's input_size range is valid_input_sizes, and every size in it works."""
    rng = np.random.default_rng(0)
    nhwc = kwargs.get("data_format") == "NHWC"
    d_shape = (1, *dout_hw, 4) if nhwc else (1, 4, *dout_hw)
    w_shape = (4, *kernel, 2) if nhwc else (4, 2, *kernel)
    dout = jnp.asarray(rng.standard_normal(d_shape), jnp.float32)
    weight = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)

    def size(hw):
        return (1, *hw, 2) if nhwc else (1, 2, *hw)

    with pytest.raises(ValueError) as err:
        jcb.conv2d_backprop_input(dout, weight, size(size_hw), **kwargs)
    msg = str(err.value)
    assert msg.startswith("conv2d_backprop_input: dout "), msg
    m = _RANGE.search(msg)
    assert m, msg
    axis = 0 if m.group(1) == "height" else 1
    assert int(m.group(2)) == dout_hw[axis]
    lo, hi = int(m.group(3)), int(m.group(4))
    assert f"input_size {m.group(1)} {size_hw[axis]}" in msg and f"kernel {kernel[axis]}" in msg, msg
    # The message's arithmetic is the public helper's.
    helper = dict(stride=_hw(kwargs.get("stride", 1)), dilation=_hw(kwargs.get("dilation", 1)))
    helper["pad_mode"] = kwargs.get("pad_mode", "valid")
    helper["pad"] = kwargs.get("pad_list") or kwargs.get("pad", 0)
    ranges = jcb.valid_input_sizes(dout_hw, kernel, **helper)
    assert (ranges[axis].start, ranges[axis].stop - 1) == (lo, hi)
    # Every size in the range fits (the other axis taken from the helper too), and matches the reference;
    # the sizes just outside do not.
    other = ranges[1 - axis].start
    for s in (lo, hi):
        hw = (s, other) if axis == 0 else (other, s)
        out = jcb.conv2d_backprop_input(dout, weight, size(hw), **kwargs)
        assert jcb.conv2d_output_size(hw, kernel, **helper) == tuple(dout_hw)
        np.testing.assert_allclose(out, reference_result(kwargs, dout, weight, size(hw)), rtol=1e-5, atol=5e-5)
    for s in (lo - 1, hi + 1):
        if s < 1:
            continue
        hw = (s, other) if axis == 0 else (other, s)
        with pytest.raises(ValueError, match="does not fit"):
            jcb.conv2d_backprop_input(dout, weight, size(hw), **kwargs)


@pytest.mark.parametrize(
    "make, pieces",
    [
        (lambda: jcb.Conv2DBackpropInput(4, 3, stride=0), ("Conv2DBackpropInput", "'stride'", "got 0", "positive")),
        (
            lambda: jcb.Conv2DTranspose(4, 3, stride=(1, 2, 2, 1)),
            ("Conv2DTranspose", "'stride'", "(1, 2, 2, 1)", "(1, 1, h, w)", "(2, 2) if (1, 2, 2, 1) was meant in NHWC"),
        ),
        (lambda: jcb.Conv2DBackpropInput(4, 3, group=1.0), ("'group'", "1.0 (float)", "int >= 1")),
        (lambda: jcb.Conv2DBackpropInput(4, 3, pad_mode="full"), ("'pad_mode'", "'full'", "'valid', 'same' or 'pad'")),
        (lambda: jcb.Conv2DBackpropInput(4, 3, data_format="nchw"), ("'data_format'", "'nchw'", "'NCHW' or 'NHWC'")),
        (
            lambda: jcb.Conv2DBackpropInput(4, 3, pad_mode="valid", pad=1),
            ("'pad'", "1", "'valid'", "0 or (0, 0, 0, 0)"),
        ),
        (lambda: jcb.Conv2DBackpropInput(4, 3, pad_mode="pad", pad_list=(1, 1)), ("'pad_list'", "(1, 1)", "4 entries")),
        (
            lambda: jcb.conv2d_backprop_input(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, -5)),
            ("conv2d_backprop_input", "'input_size'", "-5", ">= 0"),
        ),
        (
            lambda: jcb.conv2d_backprop_input(jnp.ones((1, 4, 3, 3), jnp.int32), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5)),
            ("'dout'", "int32", "float16, bfloat16, float32 or float64"),
        ),
        (
            lambda: jcb.conv2d_backprop_input(jnp.ones((4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5)),
            ("'dout'", "rank-4", "(4, 3, 3)"),
        ),
        (
            lambda: jcb.conv2d_backprop_input(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5), group=2),
            ("group=2", "input_size has 2 channels", "4"),
        ),
        (
            lambda: jcb.conv2d(jnp.ones((1, 2, 2, 3)), jnp.ones((4, 2, 4, 3)), dilation=(1, 2)),
            ("conv2d: ", "kernel (4, 3)", "extent (4, 5)", "(2, 3)", ">= extent - stride = (3, 4)"),
        ),
    ],
)
def test_message_names_operator_argument_value_and_accepted(make, pieces):
    with pytest.raises((TypeError, ValueError)) as err:
        make()
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


# ---------------------------------------------------------------------------
# Validation is trace-time only
# ---------------------------------------------------------------------------


def test_validation_runs_once_and_leaves_nothing_in_the_jaxpr(monkeypatch):
    calls = []
    original = args_2d.bind_backprop_input

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(args_2d, "bind_backprop_input", counting)
    op = jcb.Conv2DBackpropInput(4, 3, stride=2, pad_mode="same")
    f = jax.jit(lambda d, w: op(d, w, (2, 2, 7, 8)))
    d, w = jnp.ones((2, 4, 4, 4)), jnp.ones((4, 2, 3, 3))
    for _ in range(3):
        f(d, w).block_until_ready()
    assert len(calls) == 1
    jaxpr = jax.make_jaxpr(lambda d, w: op(d, w, (2, 2, 7, 8)))(d, w).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns] == ["conv_backprop_input"]


def test_traced_input_size_is_a_type_error():
    d, w = jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3))
    with pytest.raises(TypeError, match="'input_size' must be static"):
        jax.jit(jcb.conv2d_backprop_input)(d, w, jnp.array([1, 2, 5, 5]))


@pytest.mark.parametrize(
    "input_size",
    [(1, 2, 10**12, 5), (10**30, 2, 5, 5), (1, 2, 5, 2**64), np.array([1, 2, 5, 10**12], np.int64)],
)
def test_huge_input_size_is_a_value_error(input_size):
    with pytest.raises(ValueError, match="input_size"):
        jcb.conv2d_backprop_input(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), input_size)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jcb.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3)), pad_mode="pad", pad=10**12), "too large"),
        (lambda: jcb.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 0, 3))), "'weight'"),
        (lambda: jcb.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 7, 3))), "does not fit"),
        (
            lambda: jcb.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3)), dilation=10**12),
            "'?dilation'? .* too large",
        ),
        (lambda: jcb.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3)), dilation=3), "does not fit"),
        (
            lambda: jcb.conv2d_backprop_filter(jnp.ones((1, 4, 3, 3)), jnp.ones((1, 2, 5, 5)), (4, 2, 10**12, 3)),
            "weight_shape",
        ),
        (
            lambda: jcb.conv2d_backprop_input(
                jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5), stride=10**12
            ),
            "stride .* too large",
        ),
        (
            lambda: jcb.Conv2DBackpropInput(4, 3, pad_mode="valid", pad=(np.zeros(2), 0, 0, 0)),
            "'pad'",
        ),
        (
            lambda: jcb.Conv2DBackpropInput(4, 3, pad_mode="pad", pad_list=(np.zeros(2), 0, 0, 0)),
            "'pad_list'",
        ),
    ],
)
def test_odd_inputs_give_clear_errors(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


@pytest.mark.parametrize(
    "call, exc, pieces",
    [
        (lambda: jcb.conv2d_output_size((5, 5), 3, stride=0), ValueError, ("conv2d_output_size", "'stride'", "0")),
        (lambda: jcb.conv2d_output_size((5, 5), "33"), TypeError, ("conv2d_output_size", "'kernel_size'", "'33'")),
        (lambda: jcb.conv2d_output_size((2, 5), 3, dilation=2), ValueError, ("conv2d_output_size", "extent (5, 5)")),
        (lambda: jcb.conv2d_output_size(5, 3, pad_mode="pad", pad=(1, 1)), ValueError, ("'pad'", "(1, 1)")),
        (lambda: jcb.valid_input_sizes((3, 3), 3, pad_mode="full"), ValueError, ("valid_input_sizes", "'pad_mode'")),
        (lambda: jcb.valid_input_sizes((-1, 3), 3), ValueError, ("valid_input_sizes", "'dout_size'", ">= 0")),
        (lambda: jcb.valid_input_sizes((3, 3), 3, pad_mode="same", pad=1), ValueError, ("'pad'", "'same'")),
        (lambda: jcb.valid_input_sizes((3, 3), (3, True)), ValueError, ("'kernel_size'", "(3, True)")),
    ],
)
def test_shape_helpers_reject_bad_arguments(call, exc, pieces):
    with pytest.raises(exc) as err:
        call()
    assert type(err.value) is exc
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


# ---------------------------------------------------------------------------
# Errors that say the fix: a static argument traced inside jax.jit, a layout that would fit
# ---------------------------------------------------------------------------


def test_traced_input_size_names_static_argnames():
    d, w = jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3))
    with pytest.raises(TypeError) as err:
        jax.jit(lambda d, w, input_size: jcb.conv2d_backprop_input(d, w, input_size))(d, w, jnp.array([1, 2, 5, 5]))
    msg = str(err.value)
    assert "'input_size' must be static" in msg and "static_argnames=('input_size',)" in msg, msg
    # ... and the fix it names works
    f = jax.jit(lambda d, w, input_size: jcb.conv2d_backprop_input(d, w, input_size), static_argnames=("input_size",))
    assert f(d, w, (1, 2, 5, 5)).shape == (1, 2, 5, 5)
    # a traced entry of a tuple: the same hint
    with pytest.raises(TypeError, match=r"static_argnames=\('input_size',\)"):
        jax.jit(lambda d, w, h: jcb.conv2d_backprop_input(d, w, (1, 2, h, 5)))(d, w, 5)


def test_a_traced_attribute_names_static_argnames():
    """Any argument the gates read as a Python value (here ``stride``): the message names the fix."""
    d, w = jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3))
    with pytest.raises(TypeError) as err:
        jax.jit(lambda d, w, stride: jcb.conv2d_backprop_input(d, w, (1, 2, 5, 5), stride=stride))(d, w, 1)
    msg = str(err.value)
    assert "'stride'" in msg and "a traced value" in msg and "static_argnames=('stride',)" in msg, msg


@pytest.mark.parametrize(
    "make, pieces",
    [
        (  # NHWC dout under the default NCHW
            lambda: jcb.conv2d_backprop_input(jnp.ones((1, 3, 3, 4)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5)),
            ("dout has 3 channels", "'dout' looks NHWC", "jnp.transpose(dout, (0, 3, 1, 2))", "data_format='NHWC'"),
        ),
        (  # NCHW dout with data_format NHWC
            lambda: jcb.conv2d_backprop_input(
                jnp.ones((1, 4, 3, 3)), jnp.ones((4, 3, 3, 2)), (1, 5, 5, 2), data_format="NHWC"
            ),
            ("'dout' looks NCHW", "jnp.transpose(dout, (0, 2, 3, 1))", "data_format='NCHW'"),
        ),
        (  # input_size in NHWC order under NCHW: the reordered tuple
            lambda: jcb.conv2d_backprop_input(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), (1, 5, 5, 2)),
            ("'input_size' looks NHWC", "as NCHW it is (1, 2, 5, 5)"),
        ),
        (  # the forward's x
            lambda: jcb.Conv2D(4, 3)(jnp.ones((1, 7, 7, 2)), jnp.ones((4, 2, 3, 3))),
            ("x has 7 channels", "'x' looks NHWC", "jnp.transpose(x, (0, 3, 1, 2))"),
        ),
    ],
)
def test_a_channel_mismatch_that_another_layout_fits_says_so(make, pieces):
    with pytest.raises(ValueError) as err:
        make()
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_no_layout_hint_where_no_layout_fits():
    with pytest.raises(ValueError) as err:
        jcb.conv2d_backprop_input(jnp.ones((1, 3, 3, 5)), jnp.ones((4, 2, 3, 3)), (1, 2, 5, 5))
    assert "looks" not in str(err.value), str(err.value)

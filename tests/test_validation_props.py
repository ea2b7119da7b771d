"""Property-based tests of validation and semantics (hypothesis).

(a) Random valid configurations (strides, dilations, kernels, groups incl.
    depthwise, pad modes in any letter case, pad / pad_list, both data formats,
    odd sizes, batch 0..3, every fitting ``input_size`` of an ambiguous stride)
    agree with the float64 NumPy reference: the op and both of its VJPs.
(b) Random invalid configurations and inputs raise only TypeError or ValueError,
    from the validation layer (``_args.py`` / ``_padding.py``), before anything
    is traced or compiled.
(c) NaN and Inf in the data propagate as in the reference.

Profiles (tests/conftest.py): "ci" (default, deterministic) and "dev"
(``HYPOTHESIS_PROFILE=dev``, many more examples).
"""

from __future__ import annotations

import pathlib
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from hypothesis import assume, given
from hypothesis import strategies as st

import jax_conv_bpi as jcb

# ---------------------------------------------------------------------------
# Spec arithmetic, written independently of jax_conv_bpi (spec sections 4 and 6)
# ---------------------------------------------------------------------------


def spec_padding(mode, pad4, size_hw, kernel_hw, stride, dilation):
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "pad":
        return pad4
    return reference.same_padding(size_hw, kernel_hw, stride, dilation)


# ---------------------------------------------------------------------------
# (a) valid configurations
# ---------------------------------------------------------------------------

_CASES = (str.lower, str.upper, str.capitalize, lambda m: "".join(c.upper() if i % 2 else c for i, c in enumerate(m)))


def _window_arg(draw, h, w):
    forms = [(h, w), (1, 1, h, w)] + ([h] if h == w else [])
    return draw(st.sampled_from(forms))


@st.composite
def valid_configs(draw):
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if kind == "plain":
        group, c_in_g, c_out = 1, draw(st.integers(1, 2)), draw(st.integers(1, 3))
    elif kind == "grouped":
        group, c_in_g = 2, draw(st.integers(1, 2))
        c_out = 2 * draw(st.integers(1, 2))
    else:
        group = draw(st.integers(1, 3))
        c_in_g, c_out = 1, group * draw(st.integers(1, 2))
    c_in = group * c_in_g
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["valid", "same", "pad"]))
    kwargs = dict(
        stride=_window_arg(draw, *stride),
        dilation=_window_arg(draw, *dilation),
        pad_mode=draw(st.sampled_from(_CASES))(mode),
        group=group,
        data_format=draw(st.sampled_from(["NCHW", "NHWC"])),
    )
    pad4 = (0, 0, 0, 0)
    if mode == "pad":
        pad = draw(st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * 4)))
        kwargs["pad"] = pad
        pad4 = (pad,) * 4 if isinstance(pad, int) else pad
        pad_list = draw(st.sampled_from([None, "replace", (-1, -1), (1, -1, 0, 0)]))
        if pad_list == "replace":  # all >= 0: replaces pad
            pad_list = pad4 = draw(st.tuples(*[st.integers(0, 2)] * 4))
        kwargs["pad_list"] = pad_list  # a pad_list with a -1 is ignored
    else:
        kwargs["pad"] = draw(st.sampled_from([0, (0, 0, 0, 0)]))
        kwargs["pad_list"] = draw(st.sampled_from([None, [], (1, 1), (2, 0, 0, 1)]))  # ignored
    dout_hw = (draw(st.sampled_from([0, 1, 2, 2, 3, 3])), draw(st.integers(1, 3)))
    sizes = jcb.valid_input_sizes(dout_hw, kernel, stride=stride, dilation=dilation, pad_mode=mode, pad=pad4)
    assume(len(sizes[0]) and len(sizes[1]))
    size_hw = (draw(st.sampled_from(list(sizes[0]))), draw(st.sampled_from(list(sizes[1]))))
    padding = spec_padding(mode, pad4, size_hw, kernel, stride, dilation)
    # The helper's ranges agree with the spec's forward formula, and conv2d_output_size inverts them.
    for a in range(2):
        assert (
            reference.output_size(size_hw[a], kernel[a], stride[a], dilation[a], *padding[2 * a : 2 * a + 2])
            == dout_hw[a]
        )
    assert jcb.conv2d_output_size(size_hw, kernel, stride=stride, dilation=dilation, pad_mode=mode, pad=pad4) == dout_hw
    n = draw(st.integers(0, 3))
    return dict(
        kwargs=kwargs,
        api=draw(st.sampled_from(["function", "Conv2DBackpropInput", "Conv2DTranspose"])),
        size_kind=draw(st.sampled_from(["tuple", "list", "np.int64", "jnp.int32", "np scalars"])),
        dtype=draw(st.sampled_from(["float32", "float32", "float64"])),
        x=(n, c_in, *size_hw),
        w=(c_out, c_in_g, *kernel),
        y=(n, c_out, *dout_hw),
        stride=stride,
        dilation=dilation,
        padding=padding,
        pad4=pad4,
        group=group,
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _to_user(a: np.ndarray, fmt: str) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if fmt == "NHWC" else a


def _size_arg(shape, kind):
    if kind == "tuple":
        return tuple(shape)
    if kind == "list":
        return list(shape)
    if kind == "np.int64":
        return np.asarray(shape, np.int64)
    if kind == "jnp.int32":
        return jnp.asarray(shape, jnp.int32)
    return tuple(t(v) for t, v in zip((np.int16, np.uint8, np.int64, np.int32), shape))


def _operator(cfg):
    kw, fmt = dict(cfg["kwargs"]), cfg["kwargs"]["data_format"]
    size = _size_arg(_to_user(np.empty(cfg["x"]), fmt).shape, cfg["size_kind"])
    if cfg["api"] == "function":
        return lambda d, w: jcb.conv2d_backprop_input(d, w, size, **kw)
    cls = getattr(jcb, cfg["api"])
    op = cls(out_channel=cfg["w"][0], kernel_size=cfg["w"][2:], mode=1, **kw)
    return lambda d, w: op(d, w, size)


def _references(cfg, dout, weight, cot):
    """float64 NCHW references of the op and of its two VJPs."""
    geo = (cfg["stride"], cfg["dilation"], cfg["padding"], cfg["group"])
    if 0 in cfg["y"][2:]:  # zero-height dout: nothing reaches the output (spec section 6)
        return np.zeros(cfg["x"]), np.zeros(cfg["y"]), np.zeros(cfg["w"])
    out = reference.backprop_input(dout, weight, cfg["x"], *geo)
    g_dout = reference.conv2d(cot, weight, *geo)
    g_weight = reference.backprop_filter(dout, cot, cfg["w"], *geo)
    return out, g_dout, g_weight


@given(valid_configs())
def test_valid_configurations_match_the_reference(cfg):
    fmt = cfg["kwargs"]["data_format"]
    rng = np.random.default_rng(cfg["seed"])
    dout, weight, cot = (rng.standard_normal(s) for s in (cfg["y"], cfg["w"], cfg["x"]))
    tol = dict(rtol=1e-5, atol=5e-5) if cfg["dtype"] == "float32" else dict(rtol=1e-10, atol=1e-10)
    with jax.enable_x64(cfg["dtype"] == "float64"):
        dtype = jnp.dtype(cfg["dtype"])
        args = [jnp.asarray(_to_user(a, fmt), dtype) for a in (dout, weight, cot)]
        out, pull = jax.vjp(_operator(cfg), args[0], args[1])
        g_dout, g_weight = pull(args[2])
        assert out.dtype == g_dout.dtype == g_weight.dtype == dtype
        # The references see exactly the (rounded) values the op saw.
        dout, weight, cot = (np.asarray(a, np.float64) for a in args)
        if fmt == "NHWC":
            dout, weight, cot = (a.transpose(0, 3, 1, 2) for a in (dout, weight, cot))
        for got, want in zip((out, g_dout, g_weight), _references(cfg, dout, weight, cot)):
            np.testing.assert_allclose(np.asarray(got, np.float64), _to_user(want, fmt), **tol)


# ---------------------------------------------------------------------------
# (b) invalid configurations and inputs
# ---------------------------------------------------------------------------

_OURS = {str(pathlib.Path(jcb.__file__).parent / f) for f in ("_args.py", "_padding.py")}
_COMPILE_EVENTS: list[str] = []
_RECORDING = [False]


def _listener(name, *args, **kwargs):
    if _RECORDING[0] and name.startswith("/jax/core/compile"):
        _COMPILE_EVENTS.append(name)


jax.monitoring.register_event_duration_secs_listener(_listener)

_BAD_ATTRS = {
    "stride": [0, -1, 1.5, "1", None, [1, 1], True, np.int64(1), (1,), (1, 1, 1), (2, 1, 1, 1), (0, 1), (1.0, 1)],
    "dilation": [0, -2, 2.0, None, [2, 2], False, (1, 1, 1, 1, 1), (1, 3, 1, 1), (True, 1), ()],
    "group": [0, -1, 1.5, None, True, "1", np.int64(1), [1]],
    "pad_mode": [None, 1, b"valid", "full", "", " same", ["valid"], "causal"],
    "pad": [None, 1.5, "0", [0, 0, 0, 0], True, (0, 0), (0, 0, 0, 0, 0), ()],
    "pad_list": [0, "abcd", 5, 1.5, (1.5, 0, 0, 0), (-2, 0, 0, 0), (None, 0, 0, 0), {1: 1}],
    "data_format": ["nchw", "NCDHW", None, 1, "", "NHCW"],
}
_BAD_CLASS_ATTRS = {
    "out_channel": [0, -1, 1.5, None, True, np.int64(4), "4", (4,)],
    "kernel_size": [0, (3,), [3, 3], (0, 3), 3.0, (3, 3, 3), None, (3.0, 3)],
    "mode": [0, 2, "1", None, True, 1.0],
}
_BAD_SIZES = [
    (1, 2, 5),
    (1, 2, 5, 5, 1),
    (),
    None,
    5,
    "1255",
    (1, 2, 5.0, 5),
    (1, True, 5, 5),
    (1, 2, None, 5),
    np.ones((1, 4), np.int64),
    np.ones(4, np.float32),
    np.ones(4, bool),
]


@st.composite
def invalid_calls(draw):
    """A valid configuration with exactly one thing made wrong; returns (description, thunk)."""
    cfg = draw(valid_configs())
    fmt = cfg["kwargs"]["data_format"]
    rng = np.random.default_rng(cfg["seed"])
    dout = _to_user(rng.standard_normal(cfg["y"]), fmt).astype(np.float32)
    weight = _to_user(rng.standard_normal(cfg["w"]), fmt).astype(np.float32)
    size = list(_to_user(np.empty(cfg["x"]), fmt).shape)
    kwargs, ctor = dict(cfg["kwargs"]), dict(out_channel=cfg["w"][0], kernel_size=cfg["w"][2:])
    mode = kwargs["pad_mode"].lower()
    h_axis = 1 if fmt == "NHWC" else 2
    c_axis = 3 if fmt == "NHWC" else 1
    what = draw(
        st.sampled_from(
            [
                "attr",
                "class_attr",
                "huge_attr",
                "array_kind",
                "dtype",
                "rank",
                "channels",
                "spatial",
                "batch",
                "size",
                "size_value",
                "weight_zero",
            ]
        )
    )
    api = "class" if what == "class_attr" else draw(st.sampled_from(["function", "class"]))
    if what == "attr":
        name = draw(st.sampled_from(sorted(_BAD_ATTRS)))
        kwargs[name] = draw(st.sampled_from(_BAD_ATTRS[name]))
        if name == "pad" and mode != "pad" and draw(st.booleans()):
            kwargs[name] = draw(st.sampled_from([1, (0, 0, 0, 1), -1]))  # non-zero pad outside pad mode
    elif what == "class_attr":
        name = draw(st.sampled_from(sorted(_BAD_CLASS_ATTRS)))
        ctor[name] = draw(st.sampled_from(_BAD_CLASS_ATTRS[name]))
    elif what == "huge_attr":
        name = draw(st.sampled_from(["stride", "dilation", "pad"]))
        value = draw(st.sampled_from([10**12, 2**31, 10**40]))
        kwargs[name] = value
        if name == "pad":
            kwargs.update(pad_mode="pad", pad_list=None)
    elif what == "array_kind":
        bad = draw(st.sampled_from([None, 1.5, "x", "list", {}]))
        bad = dout.tolist() if bad == "list" else bad
        if draw(st.booleans()):
            dout = bad
        else:
            weight = bad
    elif what == "dtype":
        dt = draw(st.sampled_from(["int8", "int32", "uint8", "bool", "complex64", "float16"]))
        target = draw(st.sampled_from(["dout", "weight", "both"]))
        if target in ("dout", "both"):
            dout = dout.astype(dt)
        if target in ("weight", "both") and not (dt == "float16" and target == "both"):
            weight = weight.astype(dt)
    elif what == "rank":
        if draw(st.booleans()):
            dout = dout[None] if draw(st.booleans()) else dout.reshape(dout.shape[1:] if dout.shape[0] == 1 else (-1,))
        else:
            weight = weight[None] if draw(st.booleans()) else weight[0]
    elif what == "channels":
        if draw(st.booleans()):
            shape = list(dout.shape)
            shape[c_axis] += draw(st.integers(1, 2))
            dout = np.ones(shape, np.float32)
        else:
            size[c_axis] += draw(st.integers(1, 2))
    elif what == "spatial":
        axis = h_axis + draw(st.integers(0, 1))
        ranges = jcb.valid_input_sizes(
            cfg["y"][2:],
            cfg["w"][2:],
            stride=cfg["stride"],
            dilation=cfg["dilation"],
            pad_mode=mode,
            pad=cfg["pad4"],
        )
        r = ranges[axis - h_axis]
        size[axis] = draw(st.sampled_from([r.stop, r.stop + 3] + ([r.start - 1] if r.start > 1 else [])))
    elif what == "batch":
        size[0] += draw(st.integers(1, 3))
    elif what == "size":
        size = draw(st.sampled_from(_BAD_SIZES))
    elif what == "size_value":
        axis = draw(st.integers(0, 3))
        bad = [-1, -5, 10**12, 10**30, 2**64] + ([0] if axis != 0 or cfg["y"][0] > 0 else [])
        size[axis] = draw(st.sampled_from(bad))
    else:  # weight_zero
        shape = list(weight.shape)
        shape[draw(st.integers(0, 3))] = 0
        weight = np.ones(shape, np.float32)
    to_jax = draw(st.booleans())
    if to_jax:
        dout = jnp.asarray(dout) if isinstance(dout, np.ndarray) else dout
        weight = jnp.asarray(weight) if isinstance(weight, np.ndarray) else weight
    size = tuple(size) if isinstance(size, list) else size

    def call():
        if api == "function":
            return jcb.conv2d_backprop_input(dout, weight, size, **kwargs)
        return jcb.Conv2DBackpropInput(**ctor, **kwargs)(dout, weight, size)

    return f"{what}: {api} kwargs={kwargs} ctor={ctor} dout={getattr(dout, 'shape', dout)} size={size!r}", call


@given(invalid_calls())
def test_invalid_input_raises_a_clear_error_before_compiling(case):
    desc, call = case
    _COMPILE_EVENTS.clear()
    _RECORDING[0] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a rejected call warns about nothing first
            result = call()
    except Exception as e:  # noqa: BLE001 - inspected below
        err = e
    else:
        pytest.fail(f"no error, got a result of shape {getattr(result, 'shape', None)}: {desc}")
    finally:
        _RECORDING[0] = False
    assert type(err) in (TypeError, ValueError), f"{type(err).__name__}: {err} ({desc})"
    last = traceback.extract_tb(err.__traceback__)[-1]
    assert last.filename in _OURS, f"raised in {last.filename}:{last.lineno}: {err} ({desc})"
    assert not _COMPILE_EVENTS, (_COMPILE_EVENTS, desc)
    msg = str(err)
    assert msg.startswith(("conv2d_backprop_input: ", "Conv2DBackpropInput: ")), msg


# ---------------------------------------------------------------------------
# (c) NaN and Inf in the data
# ---------------------------------------------------------------------------


def _poison(rng, a, count):
    a = a.copy()
    flat = a.reshape(-1)
    if flat.size:
        for v in rng.choice([np.nan, np.inf, -np.inf], count):
            flat[rng.integers(flat.size)] = v
    return a


def _nonfinite_pattern(a):
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


@given(valid_configs(), st.sampled_from(["dout", "weight", "both"]), st.integers(1, 3))
def test_nan_and_inf_propagate_as_in_the_reference(cfg, where, count):
    """NaN and +-Inf in dout and/or weight: the output has NaN, +Inf and -Inf exactly
    where the float64 scatter-add reference has them, and equal finite values elsewhere.

    On CPU the formulations never multiply a structural zero (padding, dilation
    holes, missing taps) by the data, which is what makes the positions exact.
    Other backends use lhs-dilated convolutions, where a NaN/Inf weight also meets
    the inserted zeros; there the check is that no NaN/Inf of the reference is lost.
    """
    assume(0 not in cfg["y"])
    rng = np.random.default_rng(cfg["seed"])
    dout, weight = rng.standard_normal(cfg["y"]), rng.standard_normal(cfg["w"])
    if where in ("dout", "both"):
        dout = _poison(rng, dout, count)
    if where in ("weight", "both"):
        weight = _poison(rng, weight, count)
    fmt = cfg["kwargs"]["data_format"]
    with jax.enable_x64(True):
        out = _operator(cfg)(jnp.asarray(_to_user(dout, fmt)), jnp.asarray(_to_user(weight, fmt)))
        out = np.asarray(out)
    with np.errstate(invalid="ignore"):
        want = _to_user(reference.backprop_input(dout, weight, cfg["x"], *_geo(cfg)), fmt)
    finite = np.isfinite(want)
    assert not np.isfinite(out[~finite]).any(), "a NaN/Inf of the reference came out finite"
    assert not np.isneginf(out[np.isposinf(want)]).any()
    assert not np.isposinf(out[np.isneginf(want)]).any()
    both = finite & np.isfinite(out)
    np.testing.assert_allclose(out[both], want[both], rtol=1e-10, atol=1e-10)
    if jax.default_backend() == "cpu":
        for got, exp in zip(_nonfinite_pattern(out), _nonfinite_pattern(want)):
            np.testing.assert_array_equal(got, exp)


def _geo(cfg):
    return cfg["stride"], cfg["dilation"], cfg["padding"], cfg["group"]

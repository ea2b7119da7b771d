"""Property-based tests of validation and semantics (hypothesis).

(a) Random valid configurations (strides, dilations, kernels, groups incl.
    depthwise, pad modes in any letter case, pad / pad_list, both data formats,
    odd sizes, batch 0..3, every fitting ``input_size`` of an ambiguous stride)
    agree with the float64 NumPy reference: the op and both of its VJPs.
(b) Random invalid configurations and inputs raise only TypeError or ValueError,
    from the validation layer (``_src/base``, ``_src/op/args.py``, ``_src/mindspore/args_*.py``), before anything
    is traced or compiled.
(c) NaN and Inf in the data propagate as in the reference.
(d) ``conv_transpose`` in 1 to 3 spatial dims: random valid configurations
    (strides, dilations, groups incl. depthwise, ``'SAME'`` / ``'VALID'`` / int
    / pair padding, ``output_padding`` up to ``max(stride, dilation) - 1``,
    channels-first and channels-last layouts, batch 0..2) agree with
    ``reference.conv_transpose_nd``; random invalid arguments raise a
    TypeError or ValueError naming the argument, from the validation layer, before
    anything compiles. The valid ones compile a program per example, so they
    draw half of the profile's examples.

Profiles (tests/conftest.py): "ci" (default, deterministic) and "dev"
(``HYPOTHESIS_PROFILE=dev``, many more examples).
"""

from __future__ import annotations

import pathlib
import re
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jax_conv_bpi as jcb

from .support import enable_x64, from_nchw, mindspore_padding, reference, to_nchw, transpose_sizes

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
    padding = mindspore_padding(mode, pad4, None, size_hw, kernel, stride, dilation)
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
    size = _size_arg(from_nchw(np.empty(cfg["x"]), fmt).shape, cfg["size_kind"])
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
    with enable_x64(cfg["dtype"] == "float64"):
        dtype = jnp.dtype(cfg["dtype"])
        args = [jnp.asarray(from_nchw(a, fmt), dtype) for a in (dout, weight, cot)]
        out, pull = jax.vjp(_operator(cfg), args[0], args[1])
        g_dout, g_weight = pull(args[2])
        assert out.dtype == g_dout.dtype == g_weight.dtype == dtype
        # The references see exactly the (rounded) values the op saw.
        dout, weight, cot = (np.asarray(a, np.float64) for a in args)
        if fmt == "NHWC":
            dout, weight, cot = (to_nchw(a) for a in (dout, weight, cot))
        for got, want in zip((out, g_dout, g_weight), _references(cfg, dout, weight, cot)):
            np.testing.assert_allclose(np.asarray(got, np.float64), from_nchw(want, fmt), **tol)


# ---------------------------------------------------------------------------
# (b) invalid configurations and inputs
# ---------------------------------------------------------------------------

_SRC = pathlib.Path(jcb.__file__).parent / "_src"
# The validation layer: the shared validators, the arithmetic, and the gate of each vocabulary.
_OURS = {str(p) for p in (*_SRC.glob("base/*.py"), _SRC / "op" / "args.py", *_SRC.glob("mindspore/args_*.py"))}
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
    dout = from_nchw(rng.standard_normal(cfg["y"]), fmt).astype(np.float32)
    weight = from_nchw(rng.standard_normal(cfg["w"]), fmt).astype(np.float32)
    size = list(from_nchw(np.empty(cfg["x"]), fmt).shape)
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
    with enable_x64(True):
        out = _operator(cfg)(jnp.asarray(from_nchw(dout, fmt)), jnp.asarray(from_nchw(weight, fmt)))
        out = np.asarray(out)
    with np.errstate(invalid="ignore"):
        want = from_nchw(reference.backprop_input(dout, weight, cfg["x"], *_geo(cfg)), fmt)
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


# ---------------------------------------------------------------------------
# (d) conv_transpose in 1-3 spatial dims
# ---------------------------------------------------------------------------

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
_FEW = settings(max_examples=max(1, settings.default.max_examples // 2))


def _channels_last(n: int) -> tuple[str, str, str]:
    sp = _SPATIAL[n]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


@st.composite
def nd_configs(draw):
    """A valid ``conv_transpose`` call, channels-first shapes, with its result size and forward padding."""
    n = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if kind == "plain":
        group, c_in_g, c_out = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "grouped":
        group, c_in_g, c_out = 2, draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    else:
        group = draw(st.integers(2, 3))
        c_in_g, c_out = 1, group * draw(st.integers(1, 2))
    axes = st.lists(st.integers(1, 3), min_size=n, max_size=n)
    kernel, stride, dilation = draw(axes), draw(axes), draw(axes)
    y_sp = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    pad_kind = draw(st.sampled_from(["SAME", "VALID", "int", "pairs"]))
    if pad_kind == "SAME":
        padding = draw(st.sampled_from(["SAME", "same", "Same"]))
        output_padding = 0
        sizes = tuple(o * s for o, s in zip(y_sp, stride))
        flat = reference.same_padding(sizes, kernel, stride, dilation)
        pairs = tuple(flat[2 * a : 2 * a + 2] for a in range(n))
    else:
        if pad_kind == "VALID":
            padding = draw(st.sampled_from(["VALID", "valid"]))
            user_pairs = ((0, 0),) * n
        elif pad_kind == "int":
            padding = draw(st.integers(0, 2))
            user_pairs = ((padding, padding),) * n
        else:
            user_pairs = tuple(draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in range(n))
            padding = draw(st.sampled_from([list, tuple]))(user_pairs)
        output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
        sizes, pairs = transpose_sizes(y_sp, kernel, stride, dilation, user_pairs, output_padding)
        if draw(st.booleans()) and len(set(output_padding)) == 1:
            output_padding = output_padding[0]  # an int for every axis
    assume(min(sizes) >= 1)
    batch = draw(st.integers(0, 2))
    return dict(
        n=n,
        y=(batch, c_out, *y_sp),
        w=(c_out, c_in_g, *kernel),
        x=(batch, group * c_in_g, *sizes),
        strides=draw(st.sampled_from([tuple, list]))(stride) if len(set(stride)) > 1 else stride[0],
        stride=tuple(stride),
        dilation=tuple(dilation),
        padding=padding,
        pairs=pairs,
        output_padding=output_padding,
        group=group,
        layout=draw(st.sampled_from(["first", "last"])),
        cpu_path=draw(st.sampled_from([None, None, "gemm", "direct", "subpixel", "phase_conv", "phase_gemm"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _nd_layout(cfg, y, w):
    """Channels-first ``y``, ``w`` in the config's layout (channels-last: ``N...C`` and ``...IO``)."""
    n = cfg["n"]
    if cfg["layout"] == "last":
        return y.transpose(0, *range(2, n + 2), 1), w.transpose(*range(2, n + 2), 1, 0)
    return y, w


def _nd_kwargs(cfg, **overrides) -> dict:
    kw = dict(
        strides=cfg["strides"],
        padding=cfg["padding"],
        output_padding=cfg["output_padding"],
        rhs_dilation=list(cfg["dilation"]) if len(set(cfg["dilation"])) > 1 else cfg["dilation"][0],
        feature_group_count=cfg["group"],
        cpu_path=cfg["cpu_path"],
    )
    if cfg["layout"] == "last":
        kw["dimension_numbers"] = _channels_last(cfg["n"])
    kw.update(overrides)
    return kw


@_FEW
@given(nd_configs())
def test_conv_transpose_nd_matches_the_reference(cfg):
    rng = np.random.default_rng(cfg["seed"])
    y, w = (rng.standard_normal(s).astype(np.float32) for s in (cfg["y"], cfg["w"]))
    kw = _nd_kwargs(cfg)
    out = jcb.conv_transpose(
        *(jnp.asarray(a) for a in _nd_layout(cfg, y, w)), kw.pop("strides"), kw.pop("padding"), **kw
    )
    assert out.dtype == jnp.float32
    if cfg["layout"] == "last":  # N...C -> NC...
        out = out.transpose(0, cfg["n"] + 1, *range(1, cfg["n"] + 1))
    want = reference.conv_transpose_nd(y, w, cfg["x"][2:], cfg["stride"], cfg["dilation"], cfg["pairs"], cfg["group"])
    assert out.shape == want.shape == cfg["x"]
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=1e-5, atol=1e-5 * scale)


@st.composite
def invalid_nd_calls(draw):
    """A valid N-D call with one argument made wrong: (description, thunk, pattern the message must match)."""
    cfg = draw(nd_configs())
    n = cfg["n"]
    over: dict = {}
    what = draw(
        st.sampled_from(
            [
                "strides",
                "rhs_dilation",
                "padding",
                "output_padding",
                "feature_group_count",
                "y",
                "w",
                "dtype",
                "rank",
                "channels",
                "dimension_numbers",
                "precision",
                "preferred_element_type",
                "cpu_path",
            ]
        )
    )
    name = what
    y_shape = list(cfg["y"])
    if what == "channels":
        y_shape[1] += 1
    y, w = _nd_layout(cfg, np.ones(y_shape, np.float32), np.ones(cfg["w"], np.float32))
    if what in ("strides", "rhs_dilation"):
        over[what] = draw(
            st.sampled_from([0, -1, 1.5, "2", None, True, [1] * (n + 1), [0] * n, (2.0,) * n, 10**12, [1, 2, 3, 4]])
        )
    elif what == "padding":
        over[what] = draw(
            st.sampled_from(["FULL", "", -1, 1.5, None, [(1, 1)] * (n + 1), [(1, -1)] * n, [1] * n, [(1, 1, 1)] * n])
        )
    elif what == "output_padding":
        if draw(st.booleans()):
            over[what] = [max(s, d) for s, d in zip(cfg["stride"], cfg["dilation"])]  # one past the limit
        else:
            over[what] = draw(st.sampled_from([-1, 1.5, None, [0] * (n + 1)]))
    elif what == "feature_group_count":
        over[what] = draw(st.sampled_from([0, -2, 1.5, None, True, "1", np.int64(1)]))
        if draw(st.booleans()) and cfg["w"][0] > 1:
            over[what] = cfg["w"][0] + 1  # does not divide C_out
    elif what in ("y", "w"):
        bad = draw(st.sampled_from([None, 1.5, "list"]))
        bad = (y if what == "y" else w).tolist() if bad == "list" else bad
        y, w = (bad, w) if what == "y" else (y, bad)
    elif what == "dtype":
        dt = draw(st.sampled_from(["int32", "uint8", "bool", "complex64", "float16"]))
        name = draw(st.sampled_from(["y", "w"]))
        if name == "y":
            y = y.astype(dt)
        else:
            w = w.astype(dt)
    elif what == "rank":
        # y below rank n + 1 (leading batch axes and an unbatched y are valid), or w of 4 spatial dims.
        name = "rank"
        if draw(st.booleans()):
            y = np.ones(y.shape[2:], np.float32)
        else:
            w = np.ones((*w.shape, *(1,) * (6 - w.ndim)), np.float32)
    elif what == "channels":
        name = "channels"
    elif what == "dimension_numbers":
        over[what] = draw(st.sampled_from([("NCHW", "OIHW"), "NCW", ("NXC", "XIO", "NXC"), 3]))
        if cfg["layout"] == "last" and over[what] == "NCW":
            over[what] = 3
    elif what == "precision":
        over[what] = draw(st.sampled_from(["bogus", 3, ["highest"] * 3]))
    elif what == "preferred_element_type":
        over[what] = draw(st.sampled_from([jnp.int32, "int8", "complex64", "not-a-dtype"]))
    else:  # cpu_path
        if max(cfg["stride"]) > 1:
            over[what] = draw(st.sampled_from(["fast", "", 3, "flipped_conv"]))
            if max(cfg["dilation"]) > 1 and draw(st.booleans()):
                over[what] = "lhs_dilated"
        else:
            over[what] = draw(st.sampled_from(["fast", "", 3, "GEMM"]))
    # The arguments a message may name for each fault (the gate's wording: quoted names, or the
    # sentence it writes for a shape that cannot be produced).
    pattern = {
        "strides": r"'strides'",
        "rhs_dilation": r"'rhs_dilation'|dilation",
        "padding": r"'padding'|padding",
        "output_padding": r"output_padding",
        "feature_group_count": r"feature_group_count",
        "y": r"'y'",
        "w": r"'w'",
        "rank": r"rank",
        "channels": r"\by has \d+ channels but w has",
        "dimension_numbers": r"'dimension_numbers'",
        "precision": r"'precision'",
        "preferred_element_type": r"'preferred_element_type'",
        "cpu_path": r"cpu_path",
    }[name]
    if what == "dtype":
        pattern = rf"'y' and 'w' must have the same dtype|'{name}' must have a floating dtype"
    if cfg["layout"] == "last" and what in ("rank", "dimension_numbers"):
        pattern += r"|'dimension_numbers'"
    y = jnp.asarray(y) if isinstance(y, np.ndarray) and draw(st.booleans()) else y
    w = jnp.asarray(w) if isinstance(w, np.ndarray) and draw(st.booleans()) else w
    desc = f"{what}: n={n} over={over} y={getattr(y, 'shape', y)} w={getattr(w, 'shape', w)} cfg={cfg}"
    kw = _nd_kwargs(cfg, **over)
    strides, padding = kw.pop("strides"), kw.pop("padding")
    return desc, (lambda: jcb.conv_transpose(y, w, strides, padding, **kw)), pattern


@given(invalid_nd_calls())
def test_invalid_nd_arguments_are_rejected_by_the_gate(case):
    desc, call, pattern = case
    _COMPILE_EVENTS.clear()
    _RECORDING[0] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
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
    assert msg.startswith("conv_transpose: "), msg
    assert re.search(pattern, msg), (pattern, msg, desc)

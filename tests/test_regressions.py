"""Regression tests for the findings of an outside review.

1. ``jax.vmap`` over a size-0 axis (of the weight, of ``dout``, of both)
   returns the empty result that ``jax.vmap`` of lax's own input gradient
   returns, for the 2-D MindSpore function and for 1-D / 3-D ``conv_transpose``.
2. Binding the public primitives with operands that disagree with the
   geometry is a ValueError naming both shapes; mixed dtypes are a TypeError;
   eagerly, under ``jax.jit`` and under ``jax.eval_shape``.
3. Phases without taps cost nothing: a 1x1 kernel under stride ``s`` lowers to
   a program whose size does not depend on ``s`` (checked structurally, never
   with a timer), and an impossible size fails fast with an out-of-memory
   error instead of building a program of ``s**2`` pieces.
4. The size helpers reject a list ``kernel_size`` / ``stride`` / ``dilation``
   / ``pad`` exactly as the classes do.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jax_conv_bpi as jcb
from jax_conv_bpi._src.lowering import cpu_input_grad

from .support import geometry, geometry_nd, hw, ref_input_grad, reference, run_child, transpose_sizes

# ---------------------------------------------------------------------------
# 1. vmap over a size-0 axis
# ---------------------------------------------------------------------------


def _lax_input_grad(y, w, x_shape, stride, padding, dilation, group):
    """The input-VJP of plain ``lax.conv_general_dilated`` (channels-first), applied to ``y``."""
    x = jnp.zeros(x_shape, y.dtype)
    conv = lambda a: lax.conv_general_dilated(  # noqa: E731
        a, w, stride, padding, rhs_dilation=dilation, feature_group_count=group
    )
    return jax.vjp(conv, x)[1](y)[0]


def _mindspore_2d():
    """conv2d_backprop_input with stride 2, pad (1, 0, 2, 1), 2 groups, and lax's own form.

    No stride meets a dilation in this module's lax oracles (XLA CPU may abort on lax's transpose there).
    """
    x_shape, w_shape = (2, 4, 7, 9), (6, 2, 3, 2)
    pads = ((1, 0), (2, 1))
    y_shape = (2, 6, *(reference.output_size(x_shape[2 + a], w_shape[2 + a], 2, 1, *pads[a]) for a in range(2)))
    kw = dict(stride=2, pad_mode="pad", pad=(1, 0, 2, 1), group=2)
    ours = lambda d, w: jcb.conv2d_backprop_input(d, w, x_shape, **kw)  # noqa: E731
    theirs = functools.partial(_lax_input_grad, x_shape=x_shape, stride=(2, 2), padding=pads, dilation=(1, 1), group=2)
    return y_shape, w_shape, ours, theirs


def _conv_transpose_nd(rank):
    """conv_transpose in 1-D (dilated, cropped output_padding) or 3-D (strided), grouped, and lax's own form."""
    if rank == 1:
        y_shape, w_shape, s, d, pads, p_out, g = (2, 4, 5), (4, 3, 3), (1,), (2,), ((1, 0),), (1,), 2
    else:
        y_shape, w_shape, s, d = (1, 4, 2, 3, 2), (4, 1, 2, 3, 2), (2, 1, 2), (1, 1, 1)
        pads, p_out, g = ((1, 1), (0, 1), (1, 0)), (1, 0, 0), 4
    sizes, pairs = transpose_sizes(y_shape[2:], w_shape[2:], s, d, pads, p_out)
    x_shape = (y_shape[0], g * w_shape[1], *sizes)
    ours = lambda y, w: jcb.conv_transpose(  # noqa: E731
        y, w, s, pads, output_padding=p_out, rhs_dilation=d, feature_group_count=g
    )
    theirs = functools.partial(_lax_input_grad, x_shape=x_shape, stride=s, padding=pairs, dilation=d, group=g)
    return y_shape, w_shape, ours, theirs


_SIZE0_CASES = {"mindspore-2d": _mindspore_2d, "1d": lambda: _conv_transpose_nd(1), "3d": lambda: _conv_transpose_nd(3)}


@pytest.mark.parametrize("batched", ["weight", "dout", "both"])
@pytest.mark.parametrize("which", sorted(_SIZE0_CASES))
def test_vmap_over_a_size0_axis_is_empty(which, batched):
    y_shape, w_shape, ours, theirs = _SIZE0_CASES[which]()
    y, w = jnp.ones(y_shape, jnp.float32), jnp.ones(w_shape, jnp.float32)
    axes = {"weight": (None, 0), "dout": (0, None), "both": (0, 0)}[batched]
    args = [jnp.zeros((0, *a.shape), a.dtype) if ax == 0 else a for a, ax in zip((y, w), axes)]
    want = jax.vmap(theirs, in_axes=axes)(*args)  # lax's own vmap of its own vjp
    assert want.shape[0] == 0
    for f in (jax.vmap(ours, in_axes=axes), jax.jit(jax.vmap(ours, in_axes=axes))):
        got = f(*args)
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)


@pytest.mark.parametrize("batched", ["weight", "dout", "both"])
@pytest.mark.parametrize("which", sorted(_SIZE0_CASES))
def test_vmap_over_a_nonempty_axis_matches_lax(which, batched):
    """The companion of the size-0 test: with 2 instances, the vmapped values are lax's."""
    y_shape, w_shape, ours, theirs = _SIZE0_CASES[which]()
    rng = np.random.default_rng(len(which) + len(batched))
    axes = {"weight": (None, 0), "dout": (0, None), "both": (0, 0)}[batched]
    args = [
        jnp.asarray(rng.standard_normal((2, *s) if ax == 0 else s), jnp.float32)
        for s, ax in zip((y_shape, w_shape), axes)
    ]
    want = jax.jit(jax.vmap(theirs, in_axes=axes))(*args)
    got = jax.jit(jax.vmap(ours, in_axes=axes))(*args)
    assert got.shape == want.shape and want.shape[0] == 2
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# 2. The primitives check their operands against the geometry
# ---------------------------------------------------------------------------

_GEOMS = {
    "2d": geometry(1, 2, 4, (5, 6), 3, stride=(1, 2), pad=(1, 0, 0, 1)),
    "1d": geometry_nd(2, 3, 6, (7,), 3, stride=2, dilation=2, padding=((1, 1),), group=3),
    "3d": geometry_nd(1, 2, 2, (4, 3, 5), (2, 1, 3), stride=(1, 2, 2), padding=((0, 1), (1, 0), (1, 1))),
}
# primitive -> which shapes of the geometry its two operands have
_PRIMS = {
    "conv_p": (jcb.conv_p, ("x_shape", "w_shape")),
    "backprop_input_p": (jcb.backprop_input_p, ("y_shape", "w_shape")),
    "backprop_filter_p": (jcb.backprop_filter_p, ("y_shape", "x_shape")),
}


def _bind(prim, geom):
    return lambda a, b: prim.bind(a, b, geom=geom)


_MODES = {
    "eager": lambda f, a, b: f(a, b),
    "jit": lambda f, a, b: jax.jit(f)(a, b),
    "eval_shape": lambda f, a, b: jax.eval_shape(f, a, b),
}


@pytest.mark.parametrize("mode", sorted(_MODES))
@pytest.mark.parametrize("gid", sorted(_GEOMS))
@pytest.mark.parametrize("pname", sorted(_PRIMS))
def test_primitive_rejects_operands_that_disagree_with_the_geometry(pname, gid, mode):
    prim, roles = _PRIMS[pname]
    geom = _GEOMS[gid]
    shapes = [getattr(geom, r) for r in roles]
    run = functools.partial(_MODES[mode], _bind(prim, geom))
    # The right operands work (so the failures below are the operands' fault).
    ok = jax.eval_shape(_bind(prim, geom), *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))
    assert ok.dtype == jnp.float32
    for pos in (0, 1):
        bad = list(shapes)
        bad[pos] = (*bad[pos][:-1], bad[pos][-1] + 1)  # one spatial (or kernel) entry off
        args = [jnp.ones(s, jnp.float32) for s in bad]
        with pytest.raises(ValueError) as err:
            run(*args)
        msg = str(err.value)
        assert str(tuple(bad[pos])) in msg and str(tuple(shapes[pos])) in msg, msg
        assert f"operand {pos}" in msg, msg
    # float16 first operand with a float32 second operand (and the reverse): no implicit promotion.
    for dtypes in ((jnp.float16, jnp.float32), (jnp.float32, jnp.float16)):
        args = [jnp.ones(s, dt) for s, dt in zip(shapes, dtypes)]
        with pytest.raises(TypeError) as err:
            run(*args)
        msg = str(err.value)
        assert "float16" in msg and "float32" in msg and "dtype" in msg, msg


def test_primitive_rejects_integer_operands():
    geom = _GEOMS["2d"]
    with pytest.raises(TypeError, match="floating"):
        jax.eval_shape(_bind(jcb.backprop_input_p, geom), jnp.ones(geom.y_shape, jnp.int32), jnp.ones(geom.w_shape))


# ---------------------------------------------------------------------------
# 3. Phases without taps cost nothing
# ---------------------------------------------------------------------------


def _hlo_ops(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.search(r"\bstablehlo\.\w+", line))


def _kernel1_geometry(stride: int):
    """1x1 kernel, stride ``stride``, dout (1, 1, 10, 10) -> input (1, 1, 10 * stride, 10 * stride)."""
    return geometry(1, 1, 1, 10 * stride, 1, stride=stride)


@pytest.mark.parametrize("name", sorted(set(cpu_input_grad.PATHS) - {"flipped_conv"}))
def test_kernel1_program_size_does_not_grow_with_the_stride(name):
    """Every strided path: the same number of jaxpr equations at stride 30, 300 and 10**6."""
    sizes = {}
    for stride in (30, 300, 10**6):
        geom = _kernel1_geometry(stride)
        assert geom.y_shape == (1, 1, 10, 10)
        args = (jax.ShapeDtypeStruct(geom.y_shape, jnp.float32), jax.ShapeDtypeStruct(geom.w_shape, jnp.float32))
        jaxpr = jax.make_jaxpr(functools.partial(cpu_input_grad.PATHS[name], geom=geom))(*args)
        assert jaxpr.out_avals[0].shape == (1, 1, 10 * stride, 10 * stride)
        sizes[stride] = len(jaxpr.jaxpr.eqns)
    assert len(set(sizes.values())) == 1 and sizes[30] <= 40, (name, sizes)


def test_kernel1_stride300_lowers_small_and_is_correct():
    """The dispatched CPU lowering of the MindSpore op: as many HLO ops at stride 300 as at 30, and right."""
    ops = {}
    for stride in (30, 300):
        size = (1, 1, 10 * stride, 10 * stride)
        f = jax.jit(lambda d, w, size=size, stride=stride: jcb.conv2d_backprop_input(d, w, size, stride=stride))
        ops[stride] = _hlo_ops(f.lower(jnp.ones((1, 1, 10, 10)), jnp.ones((1, 1, 1, 1))).as_text())
    assert ops[30] == ops[300] <= 60, ops
    dout = jnp.asarray(np.random.default_rng(0).standard_normal((1, 1, 10, 10)), jnp.float32)
    w = jnp.full((1, 1, 1, 1), 1.5, jnp.float32)
    out = np.asarray(jcb.conv2d_backprop_input(dout, w, (1, 1, 3000, 3000), stride=300))
    expected = ref_input_grad(_kernel1_geometry(300), np.asarray(dout, np.float64), np.asarray(w, np.float64))
    assert out.shape == expected.shape == (1, 1, 3000, 3000)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0)
    assert np.count_nonzero(out) == np.count_nonzero(np.asarray(dout))  # only the 100 tapped pixels


_HUGE = r"""
import jax.numpy as jnp
import jax_conv_bpi as jcb
try:
    jcb.conv2d_backprop_input(jnp.ones((1, 1, 1, 1)), jnp.ones((1, 1, 1, 1)), (1, 1, 10**6, 10**6), stride=10**6)
except Exception as e:
    print("RAISED", type(e).__name__, str(e)[:500])
else:
    print("NO ERROR")
"""


def test_impossible_size_fails_fast_with_an_out_of_memory_error():
    """Stride 10**6, input (1, 1, 10**6, 10**6): 4 TB of float32; an allocation error, not a hang.

    In a child process: a regression (a program of 10**12 phase pieces) would
    hang or exhaust this machine, which the time limit turns into a failure.
    """
    proc = run_child(_HUGE, 60, why_slow="stride 10**6: the program grows with the stride again?")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("RAISED"), proc.stdout
    assert re.search(r"RESOURCE_EXHAUSTED|[Mm]emory", proc.stdout), proc.stdout


# ---------------------------------------------------------------------------
# 4. The size helpers' argument checks are the classes'
# ---------------------------------------------------------------------------

_LISTS = {"kernel_size": [3, 3], "stride": [2, 2], "dilation": [1, 1], "pad": [0, 0, 0, 0]}


def _helper_calls(arg, value):
    kw = {"kernel_size": 3, arg: value}
    if arg == "pad":
        kw["pad_mode"] = "pad"
    return {
        "conv2d_output_size": lambda: jcb.conv2d_output_size((5, 5), **kw),
        "valid_input_sizes": lambda: jcb.valid_input_sizes((3, 3), **kw),
    }


def _error(call) -> Exception:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - compared below
        return e
    pytest.fail("no error")


@pytest.mark.parametrize("arg", sorted(_LISTS))
def test_size_helpers_reject_lists_like_the_classes(arg):
    value = _LISTS[arg]
    cls_kw = {"pad_mode": "pad"} if arg == "pad" else {}
    cls_err = _error(lambda: jcb.Conv2DBackpropInput(4, **{"kernel_size": 3, **cls_kw, arg: value}))
    assert type(cls_err) is TypeError and f"'{arg}'" in str(cls_err), cls_err
    for other in (jcb.Conv2D, jcb.Conv2DBackpropFilter, jcb.Conv2DTranspose):
        err = _error(lambda other=other: other(4, **{"kernel_size": 3, **cls_kw, arg: value}))
        assert type(err) is type(cls_err), (other, err)
    cls_text = str(cls_err).split(": ", 1)
    assert cls_text[0] == "Conv2DBackpropInput"
    for fn, call in _helper_calls(arg, value).items():
        err = _error(call)
        assert type(err) is type(cls_err), (fn, err)
        prefix, text = str(err).split(": ", 1)
        assert prefix == fn and text == cls_text[1], (fn, str(err), str(cls_err))
    # The same values as tuples are accepted by both.
    fixed = {"kernel_size": 3, **cls_kw, arg: tuple(value)}
    jcb.Conv2DBackpropInput(4, **fixed)
    k, s, d = (hw(fixed.get(name, 1)) for name in ("kernel_size", "stride", "dilation"))
    expected = tuple(reference.output_size(5, k[a], s[a], d[a], 0, 0) for a in range(2))
    assert jcb.conv2d_output_size((5, 5), **fixed) == expected


# ---------------------------------------------------------------------------
# 5. Calls that killed the process, each run in a child process
# ---------------------------------------------------------------------------


# A width tap wholly outside the input (kernel width 3 at dilation 1024 over a width-1 input) with
# stride 1 and "same" padding: the native im2col fill copied a run of lines from before the input
# (SIGSEGV with a large input, a heap read past it under AddressSanitizer with a small one).
_TAP_OUTSIDE = r"""
import numpy as np
import jax_conv_bpi as jcb
x = np.ones((1, 1, 1048576, 1), np.float32)
y = np.asarray(jcb.ops.conv2d(x, np.ones((1, 1, 1, 3), np.float32), pad_mode="same", dilation=(1, 1024)))
small = np.asarray(jcb.ops.conv2d(np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1),
                                  np.ones((1, 1, 1, 5), np.float32), pad_mode="same"))
print("OK", y.shape, float(y.min()), float(y.max()), small.ravel().tolist(), jcb.native_status())
"""


def test_a_tap_wholly_outside_the_input_does_not_read_past_it():
    """Only the centre tap reads the input: the result is the input itself, on every path."""
    for native in ("1", "0"):
        proc = run_child(_TAP_OUTSIDE, 120, JCB_NATIVE=native)
        assert proc.returncode == 0, (native, proc.returncode, proc.stderr[-3000:])
        assert proc.stdout.startswith("OK (1, 1, 1048576, 1) 1.0 1.0 [0.0, 1.0, 2.0, 3.0]"), (native, proc.stdout)


# PyTorch's test_conv_transpose_with_output_size_and_no_batch_dim for ConvTranspose3d: a 16x16x16
# kernel under stride 16 took phase_gemm's 4,096 per-phase matmuls (minutes of compile, then SIGSEGV).
_STRIDE_16 = r"""
import time
import numpy as np
import sys
import jax_conv_bpi as jcb
rng = np.random.default_rng(0)
y = rng.standard_normal((1, 1, 15, 13, 13)).astype(np.float32)
w = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
t = time.perf_counter()
out = np.asarray(jcb.conv_transpose(y, w, 16, [(7, 7)] * 3, output_padding=(14, 6, 6)))
np.save(sys.argv[1], out)
print("OK", time.perf_counter() - t)
"""


def test_3d_stride_16_compiles_in_seconds_and_is_exact(tmp_path):
    """The float64 reference's numbers, within 2 s of compile and run (measured 0.2 s)."""
    out_file = tmp_path / "out.npy"
    proc = run_child(_STRIDE_16, 120, str(out_file))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout.startswith("OK"), proc.stdout
    assert float(proc.stdout.split()[1]) < 2.0, proc.stdout
    rng = np.random.default_rng(0)
    y = rng.standard_normal((1, 1, 15, 13, 13)).astype(np.float32)
    w = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
    # padding 7 with output_padding (14, 6, 6): hi = 7 - output_padding per axis
    expected = reference.conv_transpose_nd(y, w, (240, 200, 200), (16,) * 3, (1,) * 3, ((7, -7), (7, 1), (7, 1)), 1)
    np.testing.assert_allclose(np.load(out_file), expected, rtol=1e-5, atol=1e-5)

"""Compile cost bounded by the work, never by the stride: every CPU path, chosen or forced.

A formulation that unrolls one term per tap or per phase (``overlap_add``,
``interleave``, one matmul or convolution per phase) emits a program that
grows with the kernel and, up to it, with the product of the strides: a
16x16x16 kernel under stride 16 was 4,096 phases, minutes of compile and then
a crash. ``cpu_input_grad.unrolled_terms`` counts the terms; beyond
``UNROLLED_MAX_TERMS`` ``gemm``, ``direct`` and ``phase_gemm`` assemble all
taps at once (``col2im``), and a path that cannot (``phase_conv``), or whose
one convolution would mostly multiply zeros (``lhs_dilated``, ``subpixel``),
is refused (``dispatch.refusal``): replaced by the dispatcher, a ``ValueError``
when forced.

* Structure (no timer): every path that serves a geometry lowers to a jaxpr
  of at most ``MAX_EQNS`` equations, for strides up to 32 and kernels up to 16
  in 1-D to 3-D; forced paths that do not serve raise a ``ValueError`` naming
  the path, the reason, the limit and the paths that serve it.
* Time, in child processes (a regression would hang or crash): a seeded sweep
  of N-D geometries (strides up to 32, kernels up to 16, dilations, groups),
  each first call of ``jax.jit(conv_transpose)`` and of its VJP under 2 s and
  equal to the float64 references, with every forced path that serves it; and
  PyTorch's ``test_conv_transpose_with_output_size_and_no_batch_dim`` 3-D case
  on every path, with the native kernels and without.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import cpu_dense, cpu_input_grad, dispatch
from jax_conv_bpi._src.op.args import transpose_geometry

from .support import reference, run_child

_SLOW = "a program that grows with the stride again?"
MAX_SECONDS = 2.0  # each first call (trace, compile, run)
MAX_EQNS = 1000  # the largest program any CPU path may lower to (measured: at most ~650)


# ---------------------------------------------------------------------------
# Structure: program sizes and refusals, no compilation
# ---------------------------------------------------------------------------


def _geometries():
    """Geometries of 1-3 spatial dims with kernels up to 16 and strides up to 32 (y of 2 pixels per axis)."""
    for nd in (1, 2, 3):
        for k in (1, 3, 8, 16):
            for s in (1, 2, 5, 16, 32):
                for d in (1, 3):
                    for c_out, c_in in ((1, 16), (16, 1), (4, 4)):
                        yield transpose_geometry("t", (1, c_out, *(2,) * nd), (c_out, c_in, *(k,) * nd), s, 0, 0, d, 1)


def _eqns(fn, geom: ConvGeometry, *shapes) -> int:
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return len(jax.make_jaxpr(functools.partial(fn, geom=geom))(*args).jaxpr.eqns)


def test_no_path_emits_a_program_that_grows_with_the_stride():
    """Every serving input-gradient path, and the forward and weight-gradient paths the dispatcher picks."""
    largest: dict[str, tuple[int, ConvGeometry]] = {}
    seen_refused = set()
    for geom in _geometries():
        serving = dispatch.serving_paths(geom)
        assert "gemm" in serving  # gemm serves every geometry
        seen_refused |= set(dispatch.CPU_PATHS) - set(serving)
        programs = {name: (cpu_input_grad.PATHS[name], geom.y_shape, geom.w_shape) for name in serving}
        programs["conv:" + dispatch.select_forward_path(geom)] = (
            cpu_dense.CONV_PATHS[dispatch.select_forward_path(geom)],
            geom.x_shape,
            geom.w_shape,
        )
        programs["filter:" + dispatch.select_filter_path(geom)] = (
            cpu_dense.BACKPROP_FILTER_PATHS[dispatch.select_filter_path(geom)],
            geom.y_shape,
            geom.x_shape,
        )
        for name, (fn, *shapes) in programs.items():
            n = _eqns(fn, geom, *shapes)
            if n > largest.get(name, (0, geom))[0]:
                largest[name] = (n, geom)
    assert set(largest) >= set(dispatch.CPU_PATHS)  # every path served some geometry of the grid
    assert seen_refused == {"flipped_conv", "lhs_dilated", "phase_conv", "subpixel"}  # ... and each refusal was met
    too_large = {name: v for name, v in largest.items() if v[0] > MAX_EQNS}
    assert not too_large, too_large


def test_the_unrolled_forms_stay_below_the_bound_and_col2im_takes_over():
    """``unrolled_terms`` is what the unrolled forms emit; beyond the bound the same path is a fixed-size program."""
    small = transpose_geometry("t", (1, 4, 3, 3), (4, 2, 3, 3), 2, 0, 0, 1, 1)  # 9 taps, 4 phases
    big = transpose_geometry("t", (1, 4, 2, 2, 2), (4, 2, 16, 16, 16), 16, 0, 0, 1, 2)  # 4,096 taps and phases
    for name in ("gemm", "direct", "phase_gemm"):
        assert cpu_input_grad.unrolled(name, small), name
        assert not cpu_input_grad.unrolled(name, big), name
        assert cpu_input_grad.unrolled_terms(name, big) > 4096
        n_small = _eqns(cpu_input_grad.PATHS[name], small, small.y_shape, small.w_shape)
        n_big = _eqns(cpu_input_grad.PATHS[name], big, big.y_shape, big.w_shape)
        assert n_big <= 120, (name, n_big)  # a few ops per axis, whatever the 4,096 taps
        assert n_small >= 9, (name, n_small)  # the unrolled form: at least one op per tap
    assert cpu_input_grad.unrolled_terms("gemm", small) == 9 + 4
    assert cpu_input_grad.unrolled_terms("phase_conv", big) == 5 * 4096
    assert cpu_input_grad.unrolled_terms("subpixel", big) == 0


@pytest.mark.parametrize(
    "name, geom, pieces",
    [
        (
            "phase_conv",
            transpose_geometry("t", (1, 1, 2, 2, 2), (1, 1, 16, 16, 16), 16, 0, 0, 1, 1),
            ("4096 phases", "kernel (16, 16, 16), stride (16, 16, 16)", "limit of 128 terms"),
        ),
        (
            "lhs_dilated",
            transpose_geometry("t", (1, 1, 2, 2, 2), (1, 1, 16, 16, 16), 16, 0, 0, 1, 1),
            ("4096 multiply-adds per useful one", "limit of 64"),
        ),
        (
            "subpixel",
            transpose_geometry("t", (1, 1, 2, 2, 2), (1, 1, 2, 2, 2), 3, 0, 0, 100, 1),
            ("multiply-adds per useful one", "limit of 64"),
        ),
        ("flipped_conv", transpose_geometry("t", (1, 1, 2, 2), (1, 1, 3, 3), 2, 0, 0, 1, 1), ("stride 1",)),
        ("lhs_dilated", transpose_geometry("t", (1, 1, 4), (1, 1, 3), 2, 0, 0, 2, 1), ("abort", "dilation (2,)")),
    ],
)
def test_a_forced_path_that_does_not_serve_is_a_value_error(name, geom, pieces):
    """Through the primitive (trace time), ``cpu_paths`` and the dispatcher: the path, the reason, the way out."""
    forced = geom.replace(cpu_path=name)
    serving = dispatch.serving_paths(geom)
    assert name not in serving and "gemm" in serving
    y, w = jax.ShapeDtypeStruct(geom.y_shape, jnp.float32), jax.ShapeDtypeStruct(geom.w_shape, jnp.float32)
    calls = {
        "primitive": lambda: jax.eval_shape(lambda y, w: jcb.backprop_input_p.bind(y, w, geom=forced), y, w),
        "cpu_paths": lambda: jcb.cpu_paths(forced),
        "dispatch": lambda: dispatch.select_cpu_path(forced),
    }
    for where, call in calls.items():
        with pytest.raises(ValueError) as err:
            call()
        text = str(err.value)
        for piece in (f"cpu_path={name!r}", "the paths that serve it", str(serving), "cpu_path=None", *pieces):
            assert piece in text, (where, piece, text)


def test_an_unknown_forced_path_is_a_value_error():
    geom = transpose_geometry("t", (1, 1, 2, 2), (1, 1, 3, 3), 2, 0, 0, 1, 1).replace(cpu_path="fast")
    with pytest.raises(ValueError, match=r"cpu_path must be None or one of \('direct'"):
        jcb.cpu_paths(geom)


def test_the_dispatcher_replaces_a_refused_choice():
    """Rule 5 would pick ``phase_conv`` (few contraction channels, wasted taps): 225 phases are too many."""
    geom = transpose_geometry("t", (1, 8, 2, 2), (8, 8, 15, 15), 16, 0, 0, 1, 1)
    assert dispatch.refusal("phase_conv", geom) is not None
    chosen = dispatch.select_cpu_path(geom)
    assert chosen != "phase_conv" and dispatch.refusal(chosen, geom) is None
    # ... and where phase_conv serves, the same rule keeps it (resnet50_l2's k3s2)
    l2 = transpose_geometry("t", (16, 128, 28, 28), (128, 128, 3, 3), 2, 1, 1, 1, 1)
    assert dispatch.select_cpu_path(l2) == "phase_conv"


def test_the_forward_direct_form_is_bounded_too():
    """``conv_direct`` unrolls one multiply-add per tap and input channel of a group: at most the same bound."""
    few = transpose_geometry("t", (1, 16, 3, 3), (16, 1, 8, 8), 1, 0, 0, 1, 1)  # 64 taps x 1 channel
    many = transpose_geometry("t", (1, 1, 3, 3), (1, 16, 8, 8), 1, 0, 0, 1, 1)  # 64 taps x 16 channels
    assert dispatch.select_forward_path(few) == "direct"
    assert dispatch.select_forward_path(many) == "routed"


def test_a_forced_direct_over_many_channels_stays_bounded_and_exact():
    """``direct`` past the bound with 40 output channels per group: contracted as a matmul, not 40 unrolled adds."""
    geom = transpose_geometry("t", (1, 40, 3, 3), (40, 2, 9, 9), 2, 0, 0, 1, 1)
    assert not cpu_input_grad.unrolled("direct", geom)
    assert _eqns(cpu_input_grad.PATHS["direct"], geom, geom.y_shape, geom.w_shape) <= 60
    rng = np.random.default_rng(3)
    y, w = rng.standard_normal(geom.y_shape), rng.standard_normal(geom.w_shape) / 20
    x = jcb.conv_transpose(jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32), 2, "VALID", cpu_path="direct")
    expected = reference.conv_transpose_nd(y, w, geom.x_shape[2:], geom.stride, geom.dilation, geom.padding, 1)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Time: child processes
# ---------------------------------------------------------------------------

_SWEEP = r"""
import json, sys, time
import numpy as np
import jax
import jax_conv_bpi as jcb
from jax_conv_bpi._src.lowering import dispatch
from tests.support import reference

seed, count, forced_too = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rng = np.random.default_rng(abs(seed))


def case(y, w, s, p=0, op=0, d=1, g=1):
    n = len(y) - 2
    per = lambda v: [v] * n if isinstance(v, int) else list(v)
    return dict(y=list(y), w=list(w), s=per(s), d=per(d), p=per(p), op=per(op), g=g)


STRESS = [
    case((1, 1, 15, 13, 13), (1, 1, 16, 16, 16), 16, 7, (14, 6, 6)),  # PyTorch's no-batch-dim case
    case((1, 2, 2, 2, 2), (2, 2, 16, 16, 16), 2),  # 4,096 taps in 8 phases
    case((1, 2, 2, 2, 2), (2, 2, 16, 16, 16), 32, 0, 0, 3),  # dilated, 4,096 phases of one tap
    case((1, 16, 3, 3), (16, 1, 8, 8), 1),  # direct with 16 output channels per group
    case((1, 1, 3, 3), (1, 16, 8, 8), 3),  # 16 input channels, one output
    case((1, 4, 2, 2, 2), (4, 2, 4, 4, 4), 4),  # 64 phases of one tap
    case((1, 4, 3), (4, 4, 16), 32, 0, 0, 3),
    case((1, 8, 2, 2), (8, 8, 15, 15), 16),  # 225 phases
    case((1, 4, 2, 2, 2), (4, 1, 7, 7, 7), 2, 3),
]


def draw(rank):
    while True:
        k = [int(v) for v in rng.integers(1, 17, rank)]
        s = [int(v) for v in rng.integers(1, 33, rank)]
        d = [int(v) if rng.random() < 0.3 else 1 for v in rng.integers(2, 4, rank)]
        o = [int(v) for v in rng.integers(1, 4, rank)]
        p = [int(rng.integers(0, (kk - 1) * dd // 2 + 1)) for kk, dd in zip(k, d)]
        op = [int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d)]
        size = [(a - 1) * b - 2 * c + e * (f - 1) + 1 + h for a, b, c, e, f, h in zip(o, s, p, d, k, op)]
        if min(size) >= 1 and np.prod(size) <= 200_000:
            g = int(rng.choice([1, 1, 2]))
            c_in_g, c_out_g = (int(v) for v in rng.integers(1, 5, 2))
            y = [int(rng.integers(1, 3)), c_out_g * g, *o]
            return dict(y=y, w=[c_out_g * g, c_in_g, *k], s=s, d=d, p=p, op=op, g=g)


def rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30)) if b.size else 0.0


cases = (STRESS if seed < 0 else []) + [draw(1 + i % 3) for i in range(count)]
for c in cases:
    y = rng.standard_normal(c["y"]).astype(np.float32)
    w = (rng.standard_normal(c["w"]) / np.sqrt(np.prod(c["w"][1:]))).astype(np.float32)
    pads = [(p, p) for p in c["p"]]
    kw = dict(output_padding=c["op"], rhs_dilation=c["d"], feature_group_count=c["g"])
    f = lambda y, w, path=None: jcb.conv_transpose(y, w, c["s"], pads, cpu_path=path, **kw)
    t = time.perf_counter()
    x = np.asarray(jax.jit(f)(y, w))
    t_call = time.perf_counter() - t
    ct = rng.standard_normal(x.shape).astype(np.float32)
    t = time.perf_counter()
    gy, gw = (np.asarray(a) for a in jax.jit(lambda y, w, ct: jax.vjp(f, y, w)[1](ct))(y, w, ct))
    t_vjp = time.perf_counter() - t
    padding = [(p, p - q) for p, q in zip(c["p"], c["op"])]  # the forward's: hi = p - output_padding
    want = reference.conv_transpose_nd(y, w, x.shape[2:], c["s"], c["d"], padding, c["g"])
    want_gy = reference.conv_nd(ct, w, c["s"], c["d"], padding, c["g"])
    want_gw = reference.backprop_filter_nd(y, ct, w.shape, c["s"], c["d"], padding, c["g"])
    geom = jcb.ConvGeometry(x_shape=x.shape, w_shape=tuple(c["w"]), y_shape=tuple(c["y"]), stride=tuple(c["s"]),
                            dilation=tuple(c["d"]), padding=tuple(padding), group=c["g"])
    forced = {}
    for name in jcb.CPU_PATHS if forced_too else ():
        if name not in dispatch.serving_paths(geom):
            try:
                jax.eval_shape(lambda y, w: f(y, w, name), y, w)
                forced[name] = "accepted"
            except ValueError as e:
                forced[name] = "refused: " + str(e)
            continue
        t = time.perf_counter()
        xf = np.asarray(jax.jit(lambda y, w: f(y, w, name))(y, w))
        forced[name] = [time.perf_counter() - t, rel(xf, want)]
    print(json.dumps(dict(case=c, paths=jcb.cpu_paths(geom), t_call=t_call, t_vjp=t_vjp, forced=forced,
                          err=[rel(x, want), rel(gy, want_gy), rel(gw, want_gw)])), flush=True)
"""


def _sweep(seed: int, count: int, forced: bool, native: str) -> list[dict]:
    proc = run_child(_SWEEP, 600, str(seed), str(count), "1" if forced else "0", why_slow=_SLOW, JCB_NATIVE=native)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])  # a signal is a negative return code
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == count + (9 if seed < 0 else 0), proc.stdout[-2000:]
    return rows


def _check(rows: list[dict]) -> None:
    slow, wrong = [], []
    for r in rows:
        label = (r["case"], r["paths"])
        if max(r["t_call"], r["t_vjp"]) >= MAX_SECONDS:
            slow.append((label, r["t_call"], r["t_vjp"]))
        if max(r["err"]) > 1e-4:
            wrong.append((label, r["err"]))
        for name, result in r["forced"].items():
            if isinstance(result, str):  # a ValueError naming the path (the gate's own for its two checks)
                assert result.startswith("refused: ") and repr(name) in result, (label, name, result)
                gate = result.startswith(f"refused: conv_transpose: cpu_path {name!r}")
                assert gate or "the paths that serve it" in result, (label, name, result)
                continue
            seconds, err = result
            if seconds >= MAX_SECONDS:
                slow.append((label, name, seconds))
            if err > 1e-4:
                wrong.append((label, name, err))
    assert not slow, slow
    assert not wrong, wrong


def test_sweep_of_nd_geometries_compiles_fast_and_is_exact():
    """Pure-XLA paths (native kernels off): the stress cases and a seeded sweep, every serving path forced too."""
    rows = _sweep(-1, 18, forced=True, native="0")
    _check(rows)
    # the sweep is what it claims: every rank, strides up to 32, kernels up to 16, dilations, groups, many paths
    cases = [r["case"] for r in rows]
    assert {len(c["s"]) for c in cases} == {1, 2, 3}
    assert max(max(c["s"]) for c in cases) >= 30 and max(max(c["w"][2:]) for c in cases) == 16
    assert any(max(c["d"]) > 1 for c in cases) and any(c["g"] > 1 for c in cases)
    chosen = {r["paths"]["backprop_input"] for r in rows}
    assert {"direct", "gemm", "phase_gemm"} <= chosen, chosen
    refused = {name for r in rows for name, v in r["forced"].items() if isinstance(v, str)}
    assert {"phase_conv", "lhs_dilated", "flipped_conv"} <= refused, refused


def test_sweep_with_the_native_kernels():
    """The dispatcher's choices where the native kernels may be used (the forward and weight gradient of the VJP)."""
    _check(_sweep(-7, 6, forced=False, native="1"))


_NO_BATCH_DIM = r"""
import json, sys, time
import numpy as np
import jax
import jax_conv_bpi as jcb
rng = np.random.default_rng(0)
y = rng.standard_normal((1, 1, 15, 13, 13)).astype(np.float32)
w = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
out = {}
for name in [None, *jcb.CPU_PATHS]:
    f = jax.jit(lambda y, w: jcb.conv_transpose(y, w, 16, [(7, 7)] * 3, output_padding=(14, 6, 6), cpu_path=name))
    t = time.perf_counter()
    try:
        x = np.asarray(f(y, w))
    except ValueError as e:
        out[str(name)] = ["refused", str(e)]
        continue
    out[str(name)] = [time.perf_counter() - t, ""]
    np.save(sys.argv[1] + f"_{name}.npy", x)
print(json.dumps(out))
"""


@pytest.mark.parametrize("native", ["0", "1"])
def test_3d_stride_16_without_batch_dim_on_every_path(native, tmp_path):
    """PyTorch's ``ConvTranspose3d`` case: the reference's numbers in < 2 s, dispatched and with each serving path."""
    base = str(tmp_path / "x")
    proc = run_child(_NO_BATCH_DIM, 300, base, why_slow=_SLOW, JCB_NATIVE=native)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    y = rng.standard_normal((1, 1, 15, 13, 13)).astype(np.float32)
    w = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
    # padding 7 with output_padding (14, 6, 6): the forward's hi = 7 - output_padding per axis
    expected = reference.conv_transpose_nd(y, w, (240, 200, 200), (16,) * 3, (1,) * 3, ((7, -7), (7, 1), (7, 1)), 1)
    refused = {name for name, v in result.items() if v[0] == "refused"}
    assert refused == {"flipped_conv", "lhs_dilated", "phase_conv"}, refused
    for name, (seconds, _) in result.items():
        if name in refused:
            continue
        assert seconds < MAX_SECONDS, (name, seconds)
        np.testing.assert_allclose(np.load(f"{base}_{name}.npy"), expected, rtol=1e-5, atol=1e-5, err_msg=name)

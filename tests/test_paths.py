"""Every CPU formulation of the input gradient, run explicitly, and the dispatcher's rules.

Each path in ``cpu_input_grad.PATHS`` is checked on its own (not only where the
dispatcher would pick it) against the float64 NumPy reference on geometries
covering strides, dilations (also strided + dilated), groups, depthwise and
channel multipliers, pads larger than the kernel, ambiguous input sizes,
zero-size batches and zero-height ``dout``, and half precision; then against
every MindSpore golden case it applies to. ``lhs_dilated`` is left out where it
combines a stride with a dilation (XLA CPU may abort the process there) and
``flipped_conv`` is stride-1 only.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering import cpu_dense, cpu_input_grad, dispatch, options, xla_cpu
from jax_conv_bpi._src.mindspore import args_2d
from jax_conv_bpi._src.op import primitives

from .support import (
    as_nchw,
    compile_and_run,
    flat_padding,
    geometry,
    geometry_nd,
    lhs_dilated_convolutions,
    ref_conv,
    reference,
)

PATHS = sorted(cpu_input_grad.PATHS)


# id -> geometry; together they cover the features of the golden grid.
GEOMETRIES = {
    "k3s1p1": geometry(2, 3, 4, 7, 3, pad=1),
    "k1s1": geometry(2, 5, 3, 6, 1),
    "k3s1d2": geometry(1, 3, 2, 9, 3, dilation=2, pad=2),
    "k4s2p1": geometry(2, 3, 4, 8, 4, stride=2, pad=1),
    "k3s2_odd": geometry(1, 4, 3, 9, 3, stride=2),
    "k2s2": geometry(1, 4, 6, 8, 2, stride=2),
    "k1s2": geometry(2, 3, 4, 7, 1, stride=2),
    "k7s2p3": geometry(1, 2, 3, 11, 7, stride=2, pad=3),
    "k5s3_asym": geometry(1, 2, 3, (10, 8), (5, 2), stride=(3, 2), pad=(1, 2, 0, 1)),
    "k3s2d2": geometry(1, 2, 3, 11, 3, stride=2, dilation=2, pad=1),
    "k2x5s2x3d1x3": geometry(1, 2, 1, (4, 19), (2, 5), stride=(2, 3), dilation=(1, 3), pad=1),
    "k3s4d3": geometry(1, 2, 2, 13, 3, stride=4, dilation=3, pad=2),
    "pad_gt_kernel": geometry(1, 2, 3, 9, 2, stride=2, pad=(4, 3, 5, 2)),
    "ambiguous_size": geometry(1, 2, 3, 10, 3, stride=3, pad=(0, 1, 0, 2)),  # 10 and 11 give the same dout
    "group2": geometry(2, 4, 6, 7, 3, stride=2, pad=1, group=2),
    "depthwise": geometry(2, 6, 6, 8, 3, stride=2, pad=1, group=6),
    "channel_mult": geometry(1, 3, 6, 7, 3, stride=(1, 2), dilation=(2, 1), pad=2, group=3),
    "depthwise_s1": geometry(1, 4, 4, 6, 3, pad=1, group=4),
    "batch0": geometry(0, 3, 4, 6, 3, stride=2, pad=1),
    "dout_h0": geometry(1, 2, 3, (2, 6), (5, 3), stride=2, pad=(1, 0, 1, 1)),
}


def applicable(name: str, geom: ConvGeometry) -> bool:
    if name == "flipped_conv":
        return geom.stride == (1, 1)
    if name == "lhs_dilated":  # strided + dilated lhs-dilated convolutions can abort XLA CPU
        return geom.stride == (1, 1) or geom.dilation == (1, 1)
    return True


@functools.cache
def compiled(name: str, geom: ConvGeometry):
    return jax.jit(functools.partial(cpu_input_grad.PATHS[name], geom=geom))


def random_inputs(geom: ConvGeometry, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(geom.y_shape), rng.standard_normal(geom.w_shape)


def ref_of(geom: ConvGeometry, dout, w):
    if 0 in geom.y_shape:  # nothing to scatter: the reference's slicing needs a pixel
        return np.zeros(geom.x_shape)
    return reference.backprop_input(
        dout, w, geom.x_shape, geom.stride, geom.dilation, flat_padding(geom.padding), geom.group
    )


@pytest.mark.parametrize("gid", sorted(GEOMETRIES))
def test_every_path_matches_reference(gid):
    geom = GEOMETRIES[gid]
    dout, w = random_inputs(geom)
    expected = ref_of(geom, dout, w)
    assert expected.shape == geom.x_shape
    ran = []
    for name in PATHS:
        if not applicable(name, geom):
            continue
        out = compiled(name, geom)(dout.astype(np.float32), w.astype(np.float32))
        assert out.shape == geom.x_shape and out.dtype == jnp.float32, name
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5, err_msg=f"path {name}")
        ran.append(name)
    assert {"subpixel", "phase_conv", "gemm", "phase_gemm", "direct"} <= set(ran)


def test_zero_size_cases_are_zeros_of_the_right_shape():
    for gid in ("batch0", "dout_h0"):
        geom = GEOMETRIES[gid]
        assert 0 in (geom.y_shape[0], geom.y_shape[2])
        for name in PATHS:
            if applicable(name, geom):
                out = compiled(name, geom)(jnp.zeros(geom.y_shape), jnp.ones(geom.w_shape))
                assert out.shape == geom.x_shape and not np.asarray(out).any(), name


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    # 64 channels x 9 taps summed per output: accumulating in the half type would be far off.
    geom = geometry(1, 4, 64, 7, 3, stride=2, pad=1)
    dout, w = random_inputs(geom, seed=1)
    d_h, w_h = jnp.asarray(dout, dtype), jnp.asarray(w, dtype)
    expected = ref_of(geom, np.asarray(d_h, np.float64), np.asarray(w_h, np.float64))
    eps = float(jnp.finfo(dtype).eps)
    for name in PATHS:
        if not applicable(name, geom):
            continue
        out = compiled(name, geom)(d_h, w_h)
        assert out.dtype == dtype, name
        # one rounding of the float32 sum: half an ulp, plus float32 noise
        err = np.abs(np.asarray(out, np.float64) - expected)
        assert np.all(err <= 0.5 * eps * np.abs(expected) + 1e-3), (name, float(err.max()))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_filter_paths_accumulate_in_float32(dtype):
    # 2 samples x 49 pixels summed per weight entry (plus 3 channels' worth of taps): a half-type sum drifts.
    geom = geometry(2, 16, 16, 13, 3, stride=2, pad=1)
    rng = np.random.default_rng(6)
    d_h, x_h = (jnp.asarray(rng.standard_normal(s), dtype) for s in (geom.y_shape, geom.x_shape))
    expected = reference.backprop_filter(
        np.asarray(d_h, np.float64),
        np.asarray(x_h, np.float64),
        geom.w_shape,
        geom.stride,
        geom.dilation,
        flat_padding(geom.padding),
        geom.group,
    )
    eps = float(jnp.finfo(dtype).eps)
    for name, path in cpu_dense.BACKPROP_FILTER_PATHS.items():
        out = jax.jit(functools.partial(path, geom=geom))(d_h, x_h)
        assert out.dtype == dtype, name
        err = np.abs(np.asarray(out, np.float64) - expected)
        assert np.all(err <= 0.5 * eps * np.abs(expected) + 1e-3), (name, float(err.max()))


def test_flipped_conv_rejects_a_stride():
    geom = GEOMETRIES["k4s2p1"]
    with pytest.raises(ValueError, match="stride"):
        cpu_input_grad.PATHS["flipped_conv"](jnp.zeros(geom.y_shape), jnp.zeros(geom.w_shape), geom=geom)


@pytest.mark.parametrize("gid", ["k3s1p1", "k3s2d2", "k5s3_asym", "group2", "depthwise", "channel_mult", "batch0"])
def test_forward_and_filter_paths_match_reference(gid):
    geom = GEOMETRIES[gid]
    rng = np.random.default_rng(2)
    x, w, dout = (rng.standard_normal(s) for s in (geom.x_shape, geom.w_shape, geom.y_shape))
    conv_ref = reference.conv2d(x, w, geom.stride, geom.dilation, flat_padding(geom.padding), geom.group)
    filt_ref = reference.backprop_filter(
        dout, x, geom.w_shape, geom.stride, geom.dilation, flat_padding(geom.padding), geom.group
    )
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    for name, path in cpu_dense.CONV_PATHS.items():
        out = jax.jit(functools.partial(path, geom=geom))(f32(x), f32(w))
        np.testing.assert_allclose(np.asarray(out), conv_ref, rtol=1e-5, atol=1e-5, err_msg=f"conv2d path {name}")
    for name, path in cpu_dense.BACKPROP_FILTER_PATHS.items():
        out = jax.jit(functools.partial(path, geom=geom))(f32(dout), f32(x))
        np.testing.assert_allclose(np.asarray(out), filt_ref, rtol=1e-5, atol=2e-5, err_msg=f"filter path {name}")


@pytest.mark.parametrize(
    ("rank", "kwargs"),
    [
        (2, dict(stride=2, padding=3)),  # the stem's kind: rows past the end are zero dout over padding
        (2, dict(stride=(2, 1), dilation=(2, 1), padding=((2, -1), (0, 1)))),  # asymmetric, a negative pad
        (3, dict(stride=1, padding=1)),
        (1, dict(stride=3, padding=2)),
    ],
)
@pytest.mark.parametrize("rows", [1, 3])
def test_im2col_blocks_of_rows_add_up(rank, kwargs, rows):
    """``im2col`` over several blocks of output rows: one row each, or three with a short last block."""
    size, k = {1: (23, 5), 2: (17, 3), 3: (7, 3)}[rank]
    geom = geometry_nd(3, 3, 5, (size,) * rank, k, **kwargs)
    out_rows = geom.y_shape[2]
    assert out_rows > rows and (rows == 1 or out_rows % rows), "the case must take several blocks, a short last one"
    rng = np.random.default_rng(8)
    dout, x = (rng.standard_normal(s) for s in (geom.y_shape, geom.x_shape))
    row_bytes = 3 * 3 * k**rank * math.prod(geom.y_shape[3:]) * 4  # N * C_in * taps * pixels of a row, float32
    want = reference.backprop_filter_nd(dout, x, geom.w_shape, geom.stride, geom.dilation, geom.padding, geom.group)
    path = functools.partial(cpu_dense.backprop_filter_im2col, geom=geom, chunk_bytes=rows * row_bytes)
    got = jax.jit(path)(jnp.asarray(dout, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-5)


def test_dense_dispatcher_rule():
    select = dispatch.select_forward_path
    assert select(GEOMETRIES["depthwise"]) == "direct"
    assert select(GEOMETRIES["channel_mult"]) == "direct"
    assert select(geometry(1, 64, 64, 9, 3)) == "routed"
    assert select(geometry(1, 64, 64, 9, 3, group=2)) == "routed"
    filt = dispatch.select_filter_path
    assert filt(GEOMETRIES["depthwise"]) == "direct"
    assert filt(geometry(1, 64, 64, 9, 3, stride=2)) == "gemm"
    # gemm split over the batch: many samples, 16+ channels each side, partials <= 1/16 of the operands
    assert filt(geometry(32, 64, 64, 56, 3, pad=1)) == "gemm_batched"  # resnet50_l1
    assert filt(geometry(7, 64, 64, 56, 3, pad=1)) == "gemm"  # N < FILTER_BATCHED_MIN_N
    # fewer than SMALL_C_IN input channels: im2col (dcgan_torgb, resnet50_stem), whatever the batch
    assert filt(geometry(32, 3, 64, 64, 4, stride=2, pad=1)) == "im2col"
    assert filt(geometry(16, 3, 64, 224, 7, stride=2, pad=3)) == "im2col"
    assert filt(geometry(1, dispatch.SMALL_C_IN - 1, 64, 16, 3)) == "im2col"
    assert filt(geometry(1, dispatch.SMALL_C_IN, 64, 16, 3)) == "gemm"
    assert filt(geometry_nd(2, 3, 64, (8, 8, 8), 3)) == "im2col"  # 3-D
    assert filt(geometry_nd(4, 1, 512, (256,), 16, stride=8)) == "default"  # 1-D keeps XLA's form
    assert filt(geometry(32, 1024, 256, 14, 1)) == "gemm"  # 1024 x 256 partials over 196 pixels (resnet50_l3)
    assert dispatch.FILTER_BATCHED_MAX_PARTIAL == 16
    # 1-D: XLA's own 1-D form (unlifted), except for few channels
    assert filt(geometry_nd(16, 64, 128, (256,), 16, stride=8)) == "default"  # HiFi-GAN-like, ungrouped
    assert filt(geometry_nd(32, 64, 64, (3136,), 3, padding=1)) == "default"  # gemm_batched's shape, in 1-D
    assert filt(geometry_nd(2, 4, 4, (9,), 3, group=4)) == "direct"
    # the bound: 16 * 16 * 16 <= pixels * 32 needs pixels >= 128 (stride 2 on 16 x 16 gives 64, on 23 x 23 144)
    assert filt(geometry(8, 16, 16, 16, 3, stride=2, pad=1)) == "gemm"
    assert filt(geometry(8, 16, 16, 23, 3, stride=2, pad=1)) == "gemm_batched"
    assert filt(geometry(1, 64, 64, 9, 3, group=2)) == "default"  # gemm is ungrouped only
    assert filt(geometry(1, 16, 16, 40, 16, stride=8)) == "default"  # 256 taps > FILTER_GEMM_MAX_TAPS


# -- golden sweep per path ----------------------------------------------------


def _golden_inputs(golden, case):
    """NCHW inputs and geometry of one golden case, through the library's own validation."""
    kwargs = golden.ctor_kwargs(case)
    attrs = args_2d.normalize_attrs(
        "conv2d_backprop_input",
        **{k: kwargs[k] for k in ("pad_mode", "pad", "pad_list", "stride", "dilation", "group", "data_format")},
    )
    dout, w, geom = args_2d.bind_backprop_input(
        attrs, golden.array(case, "dout"), golden.array(case, "weight"), golden.input_size(case)
    )
    return attrs, dout, w, geom


def _accepted(case) -> bool:
    """Every golden case except the 4-tuple strides this library deliberately rejects (docs/differences.md, item 6)."""
    return not set(case["tags"]) & {"stride4_nonunit_lead", "dilation4_nonunit_lead"}


@pytest.mark.parametrize("name", PATHS)
def test_every_path_matches_the_whole_golden_suite(golden, name):
    """Each path, called explicitly, reproduces MindSpore's output on every golden case it applies to.

    Cases are compiled 16 to a program (``_golden_sweep``).
    """
    prepared = []
    for case in filter(_accepted, golden.cases):
        attrs, dout, w, geom = _golden_inputs(golden, case)
        if applicable(name, geom):
            prepared.append((case, attrs.data_format, (dout, w), geom))
    assert len(prepared) >= 60, f"path {name} applies to only {len(prepared)} golden cases"
    _golden_sweep(golden, prepared, "out", 16, cpu_input_grad.PATHS[name], f"path {name}")


def _golden_sweep(golden, prepared, key: str, chunk: int, path, what: str) -> None:
    """``path(*arrays, geom=geom)`` for each ``(case, data_format, arrays, geom)`` against ``golden.array(case, key)``.

    ``chunk`` cases are compiled to one program (compile time dominates); the
    results, NCHW, are compared with the golden arrays in NCHW to the golden
    README's tolerances.
    """
    for start in range(0, len(prepared), chunk):
        part = prepared[start : start + chunk]

        def run(args, geoms=tuple(g for *_, g in part)):
            return [path(*a, geom=g) for a, g in zip(args, geoms)]

        outs = compile_and_run(run, [arrays for _, _, arrays, _ in part])
        for (case, fmt, *_), out in zip(part, outs, strict=True):
            expected = as_nchw(golden.array(case, key), fmt)
            assert out.dtype == expected.dtype, (what, case["name"])
            np.testing.assert_allclose(
                out.astype(np.float32),
                expected.astype(np.float32),
                **golden.tolerance(case),
                err_msg=f"{what}, {case['name']} {key}",
            )


DENSE_PATHS = [("conv", n) for n in sorted(cpu_dense.CONV_PATHS)] + [
    ("filter", n) for n in sorted(cpu_dense.BACKPROP_FILTER_PATHS)
]


@pytest.mark.parametrize(("role", "name"), DENSE_PATHS, ids=[f"{r}-{n}" for r, n in DENSE_PATHS])
def test_every_dense_path_matches_mindspores_vjps(golden, role, name):
    """The op's backward, one path at a time: MindSpore's VJPs of every golden case that has them.

    For ``out = op(dout, w)`` and the cotangent ``cot``, MindSpore's ``vjp_dout``
    is the forward convolution of ``cot`` with ``w`` (the ``conv`` paths), its
    ``vjp_weight`` the weight gradient of ``dout`` and ``cot`` (the ``filter``
    paths). The cases where MindSpore's backward raised or ignores ``pad_list``
    (docs/differences.md, item 5) are left to ``test_golden``.
    """
    prepared = []
    for case in filter(_accepted, golden.cases):
        if not case["has_vjp"] or case["quirk"]:
            continue
        attrs, dout, w, geom = _golden_inputs(golden, case)
        cot = jnp.asarray(as_nchw(golden.array(case, "cot"), attrs.data_format))
        # conv: vjp_dout = conv(cot, w); filter: vjp_weight = the weight gradient of dout and cot
        prepared.append((case, attrs.data_format, (cot, w) if role == "conv" else (dout, cot), geom))
    assert len(prepared) >= 200, f"only {len(prepared)} golden cases with VJPs"
    paths = cpu_dense.CONV_PATHS if role == "conv" else cpu_dense.BACKPROP_FILTER_PATHS
    key = "vjp_dout" if role == "conv" else "vjp_weight"
    _golden_sweep(golden, prepared, key, 32, paths[name], f"{role} path {name}")


# -- dispatcher ---------------------------------------------------------------

SUITE = {  # (N, C_in, C_out, H/W, K, stride, dilation, pad, group) of the benchmark suite
    "ms_doc_k3s1_valid": (geometry(10, 32, 32, 32, 3), "flipped_conv"),
    "dcgan_g_k4s2p1": (geometry(32, 64, 128, 32, 4, stride=2, pad=1), "subpixel"),
    "dcgan_torgb_k4s2p1": (geometry(32, 3, 64, 64, 4, stride=2, pad=1), "gemm"),
    "stylegan2_up_k3s2p0": (geometry(1, 128, 256, 129, 3, stride=2), "gemm"),
    "cyclegan_up_k3s2p1op1": (geometry(1, 128, 256, 128, 3, stride=2, pad=1), "gemm"),
    "unet_up_k2s2": (geometry(1, 512, 1024, 64, 2, stride=2), "gemm"),
    "fcn8s_k16s8p4": (geometry(1, 21, 21, 256, 16, stride=8, pad=4), "subpixel"),
    "resnet50_l1_k3s1p1": (geometry(32, 64, 64, 56, 3, pad=1), "flipped_conv"),
    "resnet50_l3_k1s1": (geometry(32, 1024, 256, 14, 1), "gemm"),
    "resnet50_l2_k3s2p1": (geometry(16, 128, 128, 56, 3, stride=2, pad=1), "phase_conv"),
    "resnet50_stem_k7s2p3": (geometry(16, 3, 64, 224, 7, stride=2, pad=3), "phase_gemm"),
    "mobilenetv2_dw_k3s2p1": (geometry(32, 144, 144, 56, 3, stride=2, pad=1, group=144), "direct"),
    "deeplabv3_dil2_k3p2": (geometry(1, 512, 512, 33, 3, dilation=2, pad=2), "flipped_conv"),
}


@pytest.mark.parametrize("name", sorted(SUITE))
def test_dispatcher_on_the_benchmark_suite(name):
    geom, path = SUITE[name]
    assert dispatch.select_cpu_path(geom) == path


def test_dispatcher_rules():
    select = dispatch.select_cpu_path
    limit = dispatch.DIRECT_MAX_CHANNEL_PRODUCT
    # rule 1: few channels per group -> direct, whatever the stride
    assert select(geometry(1, 8, 16, 9, 3, stride=2, group=8)) == "direct"  # multiplier 2: 1*2 <= limit
    assert select(geometry(1, 4, 4, 9, 3, group=1)) == "direct"  # 4*4 == limit
    assert 4 * 4 == limit
    assert select(geometry(1, 8, 8, 9, 3, stride=2, group=2)) == "direct"  # 4*4 per group
    assert select(geometry(1, 10, 10, 9, 3, stride=2, group=2)) != "direct"  # 5*5 per group
    assert select(geometry(1, 64, 64, 9, 3, stride=2, group=2)) != "direct"
    # ... and at most DIRECT_MAX_TAPS taps (8x8 = 64 is the limit; 9x9 depthwise goes elsewhere)
    assert dispatch.DIRECT_MAX_TAPS == 64
    assert select(geometry(1, 8, 8, 20, 8, group=8)) == "direct"
    assert select(geometry(1, 8, 8, 20, 9, group=8)) == "flipped_conv"
    assert dispatch.select_forward_path(geometry(1, 8, 8, 20, 9, group=8)) == "routed"
    assert dispatch.select_filter_path(geometry(1, 8, 8, 20, 9, group=8)) == "default"
    # rule 2: stride 1
    assert select(geometry(1, 16, 16, 9, 1)) == "gemm"
    assert select(geometry(1, 16, 16, 9, (1, 3), pad=(0, 0, 1, 1))) == "flipped_conv"
    # strided 3-D (not direct): phase_gemm, whatever the taps
    for k in (2, 3):
        assert select(geometry_nd(1, 16, 32, (8, 8, 8), k, stride=2)) == "phase_gemm"
    assert select(geometry_nd(1, 16, 32, (8, 8, 8), 3, padding=1)) == "flipped_conv"  # stride 1
    # ... up to PHASE_GEMM_MAX_PHASES phases with taps; more take the general rules (its program grows per phase)
    assert dispatch.PHASE_GEMM_MAX_PHASES == 64
    assert select(geometry_nd(1, 16, 32, (4, 4, 4), 4, stride=4)) == "phase_gemm"  # 64 phases
    assert select(geometry_nd(1, 16, 32, (2, 2, 2), 16, stride=16)) == "gemm"  # 4,096 phases of one tap
    # rule 3: at most one tap per phase (kernel == stride, 1x1, dilation >= stride with k == 2)
    assert select(geometry(1, 16, 16, 8, 2, stride=2)) == "gemm"
    assert select(geometry(1, 16, 16, 9, 1, stride=3)) == "gemm"
    assert select(geometry(1, 16, 16, 12, (2, 3), stride=(2, 3))) == "gemm"
    # rule 4: kernel a multiple of the stride
    assert select(geometry(1, 16, 16, 16, 4, stride=2, pad=1)) == "subpixel"
    assert select(geometry(1, 4, 16, 16, 4, stride=2, pad=1)) == "gemm"  # C_in < SMALL_C_IN
    # rule 5: wasted taps
    assert select(geometry(1, 4, 16, 16, 3, stride=2, pad=1)) == "phase_gemm"  # C_in < SMALL_C_IN
    assert select(geometry(1, 16, 16, 32, 7, stride=2, pad=3)) == "subpixel"  # 49 planes of 1/4 the size > 4
    long_k = dispatch.GEMM_MIN_CONTRACTION
    assert select(geometry(1, 16, long_k, 16, 3, stride=2, pad=1)) == "gemm"  # 9/4 <= 4, long contraction
    assert select(geometry(1, 16, long_k - 1, 16, 3, stride=2, pad=1)) == "phase_conv"
    assert select(geometry(1, 16, long_k, 16, 3, stride=2, pad=1, group=2)) == "phase_conv"  # per group


def test_cpu_lowering_uses_the_dispatcher_and_no_lhs_dilation():
    # The strided + dilated geometry that aborts XLA CPU through lhs dilation.
    geom = GEOMETRIES["k2x5s2x3d1x3"]
    assert dispatch.select_cpu_path(geom) != "lhs_dilated"
    f = jax.jit(
        lambda d, w: jcb.conv2d_backprop_input(
            d, w, geom.x_shape, stride=(2, 3), pad_mode="pad", pad=1, dilation=(1, 3)
        )
    )
    d64, w64 = random_inputs(geom, seed=3)
    dout, w = jnp.asarray(d64, jnp.float32), jnp.asarray(w64, jnp.float32)
    hlo = f.lower(dout, w).as_text()
    assert lhs_dilated_convolutions(hlo) == 0
    np.testing.assert_allclose(np.asarray(f(dout, w)), ref_of(geom, d64, w64), rtol=1e-5, atol=1e-5)


def test_cpu_compiler_options_compile_and_keep_results():
    # The opt-in options: either empty (an older jaxlib) or accepted by this
    # jaxlib's CPU compiler, and the op compiled with them gives the same result.
    options = jcb.cpu_compiler_options()
    assert options == jcb.cpu_compiler_options() and options is not jcb.cpu_compiler_options()
    assert set(options) <= {xla_cpu.YNN_FUSION_OPTION}
    geom = GEOMETRIES["k3s1p1"]
    d64, w64 = random_inputs(geom, seed=4)
    dout, w = jnp.asarray(d64, jnp.float32), jnp.asarray(w64, jnp.float32)
    f = functools.partial(jcb.conv2d_backprop_input, input_size=geom.x_shape, pad_mode="pad", pad=1)
    out = jax.jit(f, compiler_options=options)(dout, w)
    np.testing.assert_allclose(np.asarray(out), ref_of(geom, d64, w64), rtol=1e-5, atol=1e-5)


def _ynn_fusions(fn, *args) -> int:
    return jax.jit(fn).lower(*args).compile().as_text().count("__ynn_fusion")


@pytest.mark.parametrize("rank", [2, 3])
def test_stride1_convolutions_stay_off_ynnpack_in_a_plain_jit(rank):
    # The stride-1 forward and input gradient (flipped_conv) run their convolution
    # through conv_off_ynn in a user's own jax.jit (default options); in 3-D that is
    # the 2-D convolution the depth fold leaves. Where this jaxlib does not hand a
    # "same"-padded 2-D convolution to YNNPACK at all, there is nothing to avoid.
    if jax.default_backend() != "cpu":
        pytest.skip("XLA CPU's convolution routing")
    plain = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(1, 1),
        padding=[(1, 1)] * 2,
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    if _ynn_fusions(plain, jnp.ones((6, 24, 6, 6)), jnp.ones((8, 24, 3, 3))) == 0:
        pytest.skip("this jaxlib does not hand a same-padded stride-1 convolution to YNNPACK")
    geom = geometry_nd(1, 8, 8, (6,) * rank, 3, padding=1)
    rng = np.random.default_rng(11)
    x64, w64, d64 = (rng.standard_normal(shape) for shape in (geom.x_shape, geom.w_shape, geom.y_shape))
    x, w, dout = (jnp.asarray(a, jnp.float32) for a in (x64, w64, d64))
    conv = lambda x, w: primitives.conv_p.bind(x, w, geom=geom)  # noqa: E731
    bpi = lambda d, w: primitives.backprop_input_p.bind(d, w, geom=geom)  # noqa: E731
    assert _ynn_fusions(conv, x, w) == 0
    assert _ynn_fusions(bpi, dout, w) == 0
    ref_x = reference.conv_transpose_nd(d64, w64, geom.x_shape[2:], geom.stride, geom.dilation, geom.padding, 1)
    np.testing.assert_allclose(np.asarray(jax.jit(bpi)(dout, w)), ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(conv)(x, w)), ref_conv(geom, x64, w64), rtol=1e-5, atol=1e-5)


def test_eager_call_compiles_with_the_cpu_options(monkeypatch):
    # Eager calls jit the primitive alone and, on CPU, pass cpu_compiler_options()
    # to that compilation: an option value the compiler rejects must surface.
    geom = geometry(2, 32, 32, 8, 3, pad=1)
    d64, w64 = random_inputs(geom, seed=5)
    dout, w = jnp.asarray(d64, jnp.float32), jnp.asarray(w64, jnp.float32)
    assert primitives._platform(dout, w) == jax.default_backend()
    call = functools.partial(jcb.conv2d_backprop_input, input_size=geom.x_shape, pad_mode="pad", pad=1)
    np.testing.assert_allclose(np.asarray(call(dout, w)), ref_of(geom, d64, w64), rtol=1e-5, atol=1e-5)
    if jax.default_backend() != "cpu" or not jcb.cpu_compiler_options():
        return
    bogus = {xla_cpu.YNN_FUSION_OPTION: "NOT_A_FUSION_TYPE"}
    monkeypatch.setattr(options, "cpu_compiler_options", lambda: dict(bogus))
    primitives._jitted.cache_clear()
    try:
        with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
            call(dout, w)
    finally:
        primitives._jitted.cache_clear()

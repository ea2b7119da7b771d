"""Shared test helpers: layouts, the spec's padding arithmetic, geometries, compilation.

Test modules import from here (and the independent float64 references from
``tests/reference.py``), never from one another. Nothing here computes a
result of the library: the padding and size arithmetic is the spec's, written
independently of ``jax_conv_bpi._padding``, and the geometries are built from
it (``ConvGeometry`` then checks its own invariant on construction).
"""

from __future__ import annotations

import functools
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

from jax_conv_bpi._src.base.geometry import ConvGeometry

# ``jax.enable_x64`` (a context manager) is public from JAX 0.5; the claimed
# lower bound 0.4.36 has it as ``jax.experimental.enable_x64``.
try:
    from jax import enable_x64  # noqa: F401 - re-exported to the test modules
except ImportError:  # exercised by `make test-min-jax`
    from jax.experimental import enable_x64  # noqa: F401

# ---------------------------------------------------------------------------
# Layouts and MindSpore's attribute forms
# ---------------------------------------------------------------------------


def hw(v) -> tuple[int, int]:
    """stride / dilation / kernel as MindSpore reads it: an int for both axes, else the last two entries."""
    return (v, v) if isinstance(v, int) else (v[-2], v[-1])


def to_nchw(a):
    """NHWC -> NCHW, and OHWI -> OIHW (the same permutation); NumPy or JAX arrays."""
    return a.transpose(0, 3, 1, 2)


def to_nhwc(a):
    """NCHW -> NHWC, and OIHW -> OHWI; NumPy or JAX arrays."""
    return a.transpose(0, 2, 3, 1)


def from_nchw(a, data_format: str):
    """An NCHW array in ``data_format``'s layout."""
    return a if data_format == "NCHW" else to_nhwc(a)


def as_nchw(a, data_format: str):
    """An array of ``data_format``'s layout in NCHW."""
    return a if data_format == "NCHW" else to_nchw(a)


def nhwc_shape(shape) -> tuple[int, ...]:
    """An NCHW shape in NHWC order."""
    n, c, h, w = shape
    return (n, h, w, c)


# ---------------------------------------------------------------------------
# The spec's padding and size arithmetic (sections 4 and 6)
# ---------------------------------------------------------------------------


def mindspore_padding(pad_mode, pad, pad_list, size_hw, kernel_hw, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) MindSpore pads the convolution input with.

    ``pad_mode`` in any letter case; in pad mode a 4-entry ``pad_list`` of
    entries >= 0 replaces ``pad``; ``same`` depends on the input size.
    """
    mode = pad_mode.lower()
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "pad":
        if isinstance(pad_list, (tuple, list)) and len(pad_list) == 4 and all(p >= 0 for p in pad_list):
            return tuple(pad_list)
        return (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    return reference.same_padding(size_hw, kernel_hw, hw(stride), hw(dilation))


def mindspore_geometry(kwargs: dict, x_nchw, w_oihw) -> tuple:
    """(stride, dilation, padding (t, b, l, r), group) of MindSpore keyword attributes, for ``reference``."""
    stride, dilation = hw(kwargs.get("stride", 1)), hw(kwargs.get("dilation", 1))
    padding = mindspore_padding(
        kwargs.get("pad_mode", "valid"),
        kwargs.get("pad", 0),
        kwargs.get("pad_list"),
        x_nchw[2:],
        w_oihw[2:],
        stride,
        dilation,
    )
    return stride, dilation, padding, kwargs.get("group", 1)


def dout_shape_2d(x_nchw, w_oihw, stride, dilation, padding) -> tuple[int, int, int, int]:
    """NCHW shape of the forward convolution's output (possibly with a negative size: nothing fits)."""
    out = [
        reference.output_size(x_nchw[2 + a], w_oihw[2 + a], stride[a], dilation[a], *padding[2 * a : 2 * a + 2])
        for a in range(2)
    ]
    return (x_nchw[0], w_oihw[0], *out)


def flat_padding(pairs) -> tuple[int, ...]:
    """``((lo, hi), ...)`` pairs as the 2-D reference's flat (top, bottom, left, right)."""
    return tuple(v for pair in pairs for v in pair)


def transpose_sizes(y_spatial, kernel, stride, dilation, padding, output_padding) -> tuple[tuple, tuple]:
    """Spatial size of ``conv_transpose``'s result (PyTorch's rule) and the forward padding it implies.

    Per axis ``size = (o - 1) * s - lo - hi + (k - 1) * d + 1 + p``; when that
    size would give more than ``o`` forward outputs (``p >= s``, only with
    ``d > s``), ``hi`` drops by whole strides until it gives ``o`` (a negative
    ``hi`` crops rows no remaining window reads).
    """
    sizes, pairs = [], []
    for o, k, s, d, (lo, hi), p in zip(y_spatial, kernel, stride, dilation, padding, output_padding):
        size = (o - 1) * s - lo - hi + (k - 1) * d + 1 + p
        extra = max(reference.output_size(size, k, s, d, lo, hi) - o, 0)
        sizes.append(size)
        pairs.append((lo, hi - s * extra))
    return tuple(sizes), tuple(pairs)


# ---------------------------------------------------------------------------
# Geometries
# ---------------------------------------------------------------------------


def _per_axis(v, n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def geometry_nd(n, c_in, c_out, spatial, kernel, stride=1, dilation=1, padding=0, group=1) -> ConvGeometry:
    """A channels-first ``ConvGeometry``; ints apply to every axis of ``spatial``.

    ``padding``: an int, or ``(lo, hi)`` pairs (``hi`` may be negative: a crop).
    The output size is the spec's forward rule (clamped at 0).
    """
    spatial = tuple(spatial)
    nd = len(spatial)
    k, s, d = (_per_axis(v, nd) for v in (kernel, stride, dilation))
    pairs = ((padding, padding),) * nd if isinstance(padding, int) else tuple(tuple(p) for p in padding)
    out = tuple(max(reference.output_size(spatial[a], k[a], s[a], d[a], *pairs[a]), 0) for a in range(nd))
    return ConvGeometry((n, c_in, *spatial), (c_out, c_in // group, *k), (n, c_out, *out), s, d, pairs, group)


def geometry(n, c_in, c_out, hw_size, k, stride=1, dilation=1, pad=0, group=1) -> ConvGeometry:
    """A 2-D geometry in MindSpore's terms: ints or (h, w) pairs, ``pad`` an int or (top, bottom, left, right)."""
    p = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    size = (hw_size, hw_size) if isinstance(hw_size, int) else tuple(hw_size)
    return geometry_nd(n, c_in, c_out, size, k, stride, dilation, ((p[0], p[1]), (p[2], p[3])), group)


def ref_input_grad(geom: ConvGeometry, dout, w) -> np.ndarray:
    """float64 reference of the geometry's input gradient (any rank)."""
    return reference.conv_transpose_nd(dout, w, geom.x_shape[2:], geom.stride, geom.dilation, geom.padding, geom.group)


def ref_conv(geom: ConvGeometry, x, w) -> np.ndarray:
    """float64 reference of the geometry's forward convolution (any rank)."""
    return reference.conv_nd(x, w, geom.stride, geom.dilation, geom.padding, geom.group)


def ref_filter(geom: ConvGeometry, dout, x) -> np.ndarray:
    """float64 reference of the geometry's weight gradient (any rank)."""
    return reference.backprop_filter_nd(dout, x, geom.w_shape, geom.stride, geom.dilation, geom.padding, geom.group)


def random_arrays(seed: int, *shapes, dtype=np.float64) -> list[np.ndarray]:
    """Standard normal arrays of ``shapes`` from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def assert_close(actual, expected, what: str, rtol=1e-5, scale_atol=1e-5):
    """Same shape, and values within ``rtol`` plus an absolute tolerance relative to the largest expected value."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    atol = scale_atol * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def lhs_dilations(hlo_text: str) -> list[tuple[int, ...]]:
    """The ``lhs_dilate`` of every convolution in a lowered program's text (StableHLO prints all-ones too)."""
    return [tuple(int(v) for v in m.split(",")) for m in re.findall(r"lhs_dilate = \[([0-9, ]*)\]", hlo_text)]


def lhs_dilated_convolutions(hlo_text: str) -> int:
    """How many convolutions of a lowered program dilate their input (a stride of the transposed convolution)."""
    return sum(any(v != 1 for v in d) for d in lhs_dilations(hlo_text))


# ---------------------------------------------------------------------------
# Compilation: several cases in one program, compiled for speed of compilation
# ---------------------------------------------------------------------------

_FAST_CPU_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}


requires_cpu = pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="CPU-specific: checks XLA CPU's lowering, cpu_path or CPU compiler options (run on CPU)",
)


@functools.cache
def fast_compile_options() -> dict | None:
    """Compile-time-only CPU options (results unchanged: the convolutions are library calls), or None.

    None off CPU, where this XLA does not know the options, and with ``JCB_TEST_XLA_DEFAULTS=1``.
    """
    if jax.default_backend() != "cpu" or os.environ.get("JCB_TEST_XLA_DEFAULTS") == "1":
        return None
    try:
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(_FAST_CPU_OPTIONS)
    except Exception:  # an XLA without these options: default compilation
        return None
    return _FAST_CPU_OPTIONS


def compile_and_run(fn, *args):
    """``jax.jit(fn)(*args)`` compiled with ``fast_compile_options``, results on the host.

    Batch many cases into one ``fn`` (a list or dict of results): compile time
    dominates, and one program of several cases costs less than one each.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # attribute mismatches: checked in their own test
        lowered = jax.jit(fn).lower(*args)
    opts = fast_compile_options()
    compiled = lowered.compile(opts) if opts else lowered.compile()
    return jax.device_get(compiled(*args))


def default_xla_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must compile with XLA's default options.

    The session's fast-compile flags (the repository's ``conftest.py``) are
    dropped from ``XLA_FLAGS``; whatever the flags were before the tests is kept.
    """
    env = dict(os.environ, **extra)
    if "JCB_XLA_FLAGS_OUTSIDE_TESTS" in env:
        env["XLA_FLAGS"] = env.pop("JCB_XLA_FLAGS_OUTSIDE_TESTS")
    return env


# ---------------------------------------------------------------------------
# Wave-2 golden files (conv3d.npz, functional.npz): loading and repr parsing
# ---------------------------------------------------------------------------


def _golden_dir():
    """conftest.golden_dir's rule: ``$JCB_GOLDEN_DIR``, else ``shared/golden`` inside the checkout, else beside it."""
    import os
    import pathlib

    if os.environ.get("JCB_GOLDEN_DIR"):
        return pathlib.Path(os.environ["JCB_GOLDEN_DIR"]).resolve()
    root = pathlib.Path(__file__).resolve().parents[1]
    inside = root / "shared" / "golden"
    return inside if inside.is_dir() else root.parent / "shared" / "golden"


WAVE2_DIR = _golden_dir()


def literal(text: str):
    """``ast.literal_eval`` plus the ``np.int64(3)``-style calls the wave-2 reprs use."""
    import ast

    def conv(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.value.id == "np":
            return getattr(np, node.func.attr)(*(conv(a) for a in node.args))
        if isinstance(node, ast.Tuple):
            return tuple(conv(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [conv(e) for e in node.elts]
        return ast.literal_eval(node)

    return conv(ast.parse(text, mode="eval").body)


WAVE2_MISSING = (
    f"MindSpore golden vectors not found at {WAVE2_DIR} (set JCB_GOLDEN_DIR, or put shared/golden inside or beside "
    "the checkout)"
)


def wave2_missing(name: str, n_args: int = 1):
    """The one parameter set of a golden-driven test when the golden folder is absent: a skip that says so."""
    return pytest.param(*([None] * n_args), marks=pytest.mark.skip(reason=WAVE2_MISSING), id=f"{name}-no-golden")


@functools.cache
def wave2_golden(name: str):
    """(npz, cases, probes) of ``../shared/golden/<name>.npz``, or None when the folder is absent."""
    import json

    path = WAVE2_DIR / f"{name}.npz"
    if not path.exists():
        return None
    z = np.load(path)
    return z, json.loads(str(z["meta_json"]))["cases"], json.loads(str(z["errors_json"]))


def probe_array(spec: dict, rng: np.random.Generator):
    """An error probe's call argument ``{kind, shape, dtype}``: a JAX or NumPy array, a list, a scalar or None."""
    kind, shape, dtype = spec["kind"], tuple(spec["shape"]), spec["dtype"]
    if kind == "none":
        return None
    if kind == "scalar":
        return 1.5
    if dtype == "bool":
        data = rng.random(shape) > 0.5
    elif dtype.startswith(("int", "uint")):
        data = rng.integers(0, 4, shape).astype(dtype)
    elif dtype.startswith("complex"):
        data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    else:
        data = rng.standard_normal(shape).astype(jnp.dtype(dtype))
    if kind == "pylist":
        return data.tolist()
    return data if kind == "numpy" else jnp.asarray(data)

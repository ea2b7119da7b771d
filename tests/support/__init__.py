"""The tests' one support module: layouts, the spec's arithmetic, geometries, compilation, golden files, grids.

Test modules import from here (``from .support import ...``; the independent
float64 NumPy references are ``support.reference``), never from one another or
from a ``conftest.py``. Nothing here computes a result of the library: the
padding and size arithmetic is the spec's, written independently of
``jax_conv_bpi._src.base.arithmetic``, and the geometries are built from it
(``ConvGeometry`` then checks its own invariant on construction).

* ``reference``: the float64 references (NumPy loops over the kernel taps);
* ``xla_flags``: the session's fast-compile options, the one list (the
  repository's ``conftest.py`` puts them in ``XLA_FLAGS``; ``compile_and_run``
  passes them to its compilations);
* ``sharding_worker``: the many-device grid of ``test_sharding.py``, a child
  script.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry

from . import reference, xla_flags
from .xla_flags import default_xla_env as default_xla_env  # re-exported: children with XLA's defaults

# ``jax.enable_x64`` (a context manager) is public from JAX 0.5; the claimed
# lower bound 0.4.36 has it as ``jax.experimental.enable_x64``.
try:
    from jax import enable_x64 as enable_x64
except ImportError:  # exercised by `make test-min-jax`
    from jax.experimental import enable_x64 as enable_x64

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

requires_cpu = pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="CPU-specific: checks XLA CPU's lowering, cpu_path or CPU compiler options (run on CPU)",
)


@functools.cache
def fast_compile_options() -> dict | None:
    """The session's fast-compile options (``xla_flags.FAST_COMPILE``) as compile options, or None.

    Compile-time only (results unchanged: the convolutions are library calls).
    None off CPU, where this XLA does not know the options, and with
    ``JCB_TEST_XLA_DEFAULTS=1``.
    """
    if jax.default_backend() != "cpu" or xla_flags.xla_defaults_requested():
        return None
    options = xla_flags.fast_compile_options()
    try:
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(options)
    except Exception:  # an XLA without these options: default compilation
        return None
    return options


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


# ---------------------------------------------------------------------------
# MindSpore's golden files: one folder, one loader
# ---------------------------------------------------------------------------


def golden_dir() -> pathlib.Path:
    """Where the golden vectors are: ``$JCB_GOLDEN_DIR``, else ``shared/golden`` inside the checkout (the device
    machine's copy, see docs/gpu.md), else ``../shared/golden`` beside it (a developer's checkout)."""
    if os.environ.get("JCB_GOLDEN_DIR"):
        return pathlib.Path(os.environ["JCB_GOLDEN_DIR"]).resolve()
    root = pathlib.Path(__file__).resolve().parents[2]
    inside = root / "shared" / "golden"
    return inside if inside.is_dir() else root.parent / "shared" / "golden"


GOLDEN_DIR = golden_dir()
GOLDEN_MISSING = (
    f"MindSpore golden vectors not found at {GOLDEN_DIR} (set JCB_GOLDEN_DIR, or put shared/golden inside or beside "
    "the checkout)"
)
MAIN_GOLDEN = "conv2d_backprop_input"  # the 2-D op's file; the others: conv3d, functional, nn_layers, networks/


def golden_available() -> bool:
    """Whether the golden folder is there. Tests skip (``GOLDEN_MISSING``) only when it is not: a file missing
    from a folder that is there is an error."""
    return GOLDEN_DIR.is_dir()


needs_golden = pytest.mark.skipif(not golden_available(), reason=GOLDEN_MISSING)


def skip_without_golden() -> None:
    """Inside a test or fixture: skip, saying where the golden folder was looked for, when it is absent."""
    if not golden_available():
        pytest.skip(GOLDEN_MISSING)


class Golden:
    """One golden npz (``<GOLDEN_DIR>/<name>.npz``): its cases, arrays and error probes."""

    def __init__(self, path: pathlib.Path):
        self.npz = np.load(path)
        self.meta = json.loads(str(self.npz["meta_json"]))
        self.cases = self.meta["cases"]
        self.probes = json.loads(str(self.npz["errors_json"]))

    def array(self, case: dict, key: str) -> np.ndarray:
        return self.npz[f"{case['name']}_{key}"]

    @staticmethod
    def ctor_kwargs(case_or_probe: dict) -> dict:
        return {k: ast.literal_eval(v) for k, v in case_or_probe["ctor_kwargs_repr"].items()}

    @staticmethod
    def input_size(case: dict):
        kind, value = case["input_size_kind"], case["input_size"]
        if kind == "tuple":
            return tuple(value)
        if kind == "list":
            return list(value)
        return np.asarray(value, np.int64)  # "tensor_int64"

    @staticmethod
    def tolerance(case: dict) -> dict:
        return dict(rtol=1e-5, atol=5e-5) if case["dtype"] == "float32" else dict(rtol=1e-2, atol=1e-2)


@functools.cache
def load_golden(name: str = MAIN_GOLDEN) -> Golden | None:
    """The golden file ``<GOLDEN_DIR>/<name>.npz``, loaded once; None when the golden folder is absent."""
    return Golden(GOLDEN_DIR / f"{name}.npz") if golden_available() else None


def golden_missing(name: str, n_args: int = 1):
    """The one parameter set of a golden-driven test when the golden folder is absent: a skip that says so."""
    return pytest.param(*([None] * n_args), marks=pytest.mark.skip(reason=GOLDEN_MISSING), id=f"{name}-no-golden")


def golden_cases(predicate=lambda case: True):
    """Parametrisation helper: the 2-D op's golden cases (or one skipped param when the data is absent)."""
    golden = load_golden()
    if golden is None:
        return [golden_missing(MAIN_GOLDEN)]
    return [pytest.param(c, id=f"{c['name']}-{'-'.join(c['tags'][:2])}") for c in golden.cases if predicate(c)]


def golden_probes(predicate=lambda probe: True):
    """Parametrisation helper: the 2-D op's golden error probes (or one skipped param when the data is absent)."""
    golden = load_golden()
    if golden is None:
        return [golden_missing(MAIN_GOLDEN)]
    return [pytest.param(p, id=f"{p['id']}-{p['category']}") for p in golden.probes if predicate(p)]


def literal(text: str):
    """``ast.literal_eval`` plus the ``np.int64(3)``-style calls the wave-2 reprs use."""

    def conv(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.value.id == "np":
            return getattr(np, node.func.attr)(*(conv(a) for a in node.args))
        if isinstance(node, ast.Tuple):
            return tuple(conv(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [conv(e) for e in node.elts]
        return ast.literal_eval(node)

    return conv(ast.parse(text, mode="eval").body)


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


# ---------------------------------------------------------------------------
# The N-D grid: conv_transpose calls in 1-D and 3-D (test_paths_nd.py, test_native.py)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NDCase:
    """One ``conv_transpose`` call, channels-first: ``conv_transpose(y, w, stride, padding, ...)``."""

    y: tuple[int, ...]
    w: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    group: int = 1

    @functools.cached_property
    def geom(self) -> ConvGeometry:
        """The forward convolution whose input-VJP this call is (the spec's arithmetic)."""
        sizes, pairs = transpose_sizes(
            self.y[2:], self.w[2:], self.stride, self.dilation, self.padding, self.output_padding
        )
        x = (self.y[0], self.group * self.w[1], *sizes)
        return ConvGeometry(x, self.w, self.y, self.stride, self.dilation, pairs, self.group)

    def call(self, y, w, cpu_path=None):
        return jcb.conv_transpose(
            y,
            w,
            self.stride,
            self.padding,
            output_padding=self.output_padding,
            rhs_dilation=self.dilation,
            feature_group_count=self.group,
            cpu_path=cpu_path,
        )


def nd_case(y, w, stride=1, padding=0, output_padding=0, dilation=1, group=1) -> NDCase:
    n = len(y) - 2
    per = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    pads = ((padding, padding),) * n if isinstance(padding, int) else tuple(tuple(p) for p in padding)
    return NDCase(tuple(y), tuple(w), per(stride), pads, per(output_padding), per(dilation), group)


ND_CASES = {
    1: {
        "s1_p1": nd_case((2, 4, 7), (4, 3, 3), padding=1),
        "s1_d2_asym": nd_case((1, 3, 6), (3, 2, 3), dilation=2, padding=[(2, 0)]),
        "s1_d3_op2_neg_hi": nd_case((1, 4, 5), (4, 3, 3), dilation=3, output_padding=2),
        "s2_k4_p1_op1": nd_case((2, 4, 6), (4, 3, 4), stride=2, padding=1, output_padding=1),
        "s3_k5_asym_op2": nd_case((1, 3, 5), (3, 2, 5), stride=3, padding=[(2, 0)], output_padding=2),
        "s2_d2": nd_case((1, 3, 5), (3, 2, 3), stride=2, dilation=2, padding=1),
        "s2_d3_op2_neg_hi": nd_case((2, 3, 4), (3, 2, 3), stride=2, dilation=3, padding=[(1, 0)], output_padding=2),
        "pad_gt_kernel": nd_case((1, 3, 9), (3, 2, 2), stride=2, padding=[(4, 3)]),
        "group2": nd_case((2, 6, 5), (6, 2, 3), stride=2, padding=1, group=2),
        "depthwise": nd_case((1, 6, 6), (6, 1, 3), stride=2, padding=1, group=6),
        "channel_mult_d2": nd_case((1, 6, 5), (6, 1, 3), dilation=2, padding=2, group=3),
        "k_eq_s": nd_case((1, 4, 5), (4, 3, 2), stride=2),
        "k1_s3_op2": nd_case((2, 4, 4), (4, 3, 1), stride=3, output_padding=2),
        "batch0": nd_case((0, 4, 5), (4, 3, 3), stride=2, padding=1),
        "y0": nd_case((1, 3, 0), (3, 2, 3), stride=2, output_padding=1),
    },
    3: {
        "s1_p1": nd_case((1, 3, 4, 3, 4), (3, 2, 3, 3, 2), padding=1),
        "s1_d_neg_hi": nd_case((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), dilation=(3, 2, 1), output_padding=(2, 1, 0)),
        "s1_depthwise_d2": nd_case((1, 3, 3, 4, 3), (3, 1, 3, 2, 3), dilation=(1, 2, 1), padding=1, group=3),
        "s1_k1": nd_case((2, 5, 3, 3, 2), (5, 3, 1, 1, 1)),
        "s1_group2_asym": nd_case((1, 4, 4, 3, 3), (4, 1, 2, 3, 2), padding=[(1, 0), (0, 2), (1, 1)], group=2),
        "s2_p1_op1": nd_case((1, 3, 3, 3, 3), (3, 2, 3, 3, 3), stride=2, padding=1, output_padding=1),
        "mixed_asym": nd_case(
            (1, 2, 3, 4, 2),
            (2, 3, 2, 3, 1),
            stride=(2, 1, 3),
            dilation=(1, 2, 1),
            padding=[(0, 1), (2, 0), (1, 1)],
            output_padding=(1, 0, 2),
        ),
        "s2x2x3_d1x1x3": nd_case((1, 2, 3, 3, 3), (2, 2, 2, 2, 5), stride=(2, 2, 3), dilation=(1, 1, 3), padding=1),
        "s2_d3_op2_neg_hi": nd_case(
            (1, 3, 2, 3, 2), (3, 2, 2, 1, 3), stride=(2, 1, 2), dilation=(3, 1, 3), output_padding=(2, 0, 2)
        ),
        "pad_gt_kernel": nd_case((1, 2, 3, 2, 3), (2, 2, 2, 2, 2), stride=2, padding=[(3, 2), (0, 1), (2, 2)]),
        "group2": nd_case((1, 4, 3, 3, 3), (4, 2, 3, 3, 3), stride=2, padding=1, group=2),
        "depthwise": nd_case((2, 4, 3, 3, 2), (4, 1, 3, 3, 3), stride=(1, 2, 2), padding=1, group=4),
        "k_eq_s": nd_case((1, 4, 2, 2, 2), (4, 3, 2, 2, 2), stride=2),
        "k1_s_op": nd_case((1, 4, 2, 3, 2), (4, 3, 1, 1, 1), stride=(2, 3, 2), output_padding=(1, 2, 0)),
        "batch0": nd_case((0, 3, 2, 2, 2), (3, 2, 2, 2, 2), stride=2),
        "y0": nd_case((1, 2, 2, 0, 2), (2, 2, 2, 3, 2), stride=(1, 2, 1), output_padding=(0, 1, 0)),
    },
}


REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_child(
    code: str, timeout: float, *args: str, why_slow: str = "", **env_extra: str
) -> subprocess.CompletedProcess:
    """``python -c code *args`` in a child process at the repository root (so ``tests`` imports), with
    ``env_extra`` added to the environment; a test failure (not a hang) past ``timeout`` seconds.

    For calls that could kill the interpreter (a signal is then a negative return code the caller
    asserts against) or whose first-call time is measured.
    """
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within {timeout} s{' (' + why_slow + ')' if why_slow else ''}")

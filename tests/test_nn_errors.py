"""Bad arguments for ``jax_conv_bpi.nn``: every MindSpore error probe of ``nn_layers_errors.json``.

A probe either has MindSpore's outcome (the same exception type at the same
stage, or accepted with MindSpore's output shape and dtype), or an entry in
``DECIDED`` naming the docs/differences.md item (subsection "nn layers") that changes
it. On top of the table one rule, as for the ops: where MindSpore leaks a
``RuntimeError`` (oneDNN, "Resize failed") or a ``ZeroDivisionError``, this
raises a ``ValueError`` (N6). Every message of ours starts with the layer's
name and names the argument.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .support import (
    GOLDEN_DIR,
    GOLDEN_MISSING,
    enable_x64,
    golden_available,
    golden_missing,
    literal,
    probe_array,
    reference,
)

nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
from jax_conv_bpi import nn  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Raise:
    exc: type[Exception]
    difference: str
    stage: str | None = None  # None: MindSpore's stage


@dataclasses.dataclass(frozen=True)
class Accept:
    difference: str


# docs/differences.md, subsection "nn layers":
#   N1 pad_mode in any letter case for every layer
#   N2 Conv2dTranspose checks output_padding at construction
#   N3 MindSpore CPU limits not copied (Conv3dTranspose depth dilation, kernel volume <= 343)
#   N4 NumPy arrays accepted as inputs and as weight_init / bias_init
#   N5 float64 (with x64) computed
#   N6 ZeroDivisionError / RuntimeError -> ValueError naming the argument
DECIDED: dict[str, Raise | Accept] = {
    **dict.fromkeys(["err0044", "err0045", "err0046"], Accept("N1")),  # Conv1d
    **dict.fromkeys(["err0129", "err0130", "err0131"], Accept("N1")),  # Conv2d
    **dict.fromkeys(["err0305", "err0306", "err0307"], Accept("N1")),  # Conv1dTranspose
    **dict.fromkeys(["err0389", "err0390", "err0391"], Accept("N1")),  # Conv2dTranspose
    **dict.fromkeys(["err0433", "err0434", "err0435", "err0436", "err0437"], Raise(ValueError, "N2", "construct")),
    **dict.fromkeys(["err0541", "err0542"], Accept("N3")),
    # numpy input; numpy weight_init
    **dict.fromkeys(["err0071", "err0160", "err0248", "err0332", "err0420", "err0518"], Accept("N4")),
    **dict.fromkeys(["err0077", "err0165", "err0253", "err0337", "err0424", "err0522"], Accept("N4")),
    **dict.fromkeys(["err0066", "err0155", "err0243", "err0327", "err0415", "err0513"], Accept("N5")),
}


def decided(probe: dict) -> tuple[Raise | Accept | None, str]:
    """(outcome, stage): Raise, Accept, or None for 'accepted, as MindSpore'."""
    if probe["id"] in DECIDED:
        outcome = DECIDED[probe["id"]]
        stage = outcome.stage if isinstance(outcome, Raise) and outcome.stage else probe["stage"]
        return outcome, stage
    if not probe["raised"]:
        return None, probe["stage"]
    kind = probe["exception_type"]
    if kind in ("RuntimeError", "ZeroDivisionError"):  # the N6 rule
        return Raise(ValueError, "N6"), probe["stage"]
    return Raise({"TypeError": TypeError, "ValueError": ValueError}[kind], ""), probe["stage"]


def _probes():
    if not golden_available():
        return [golden_missing("nn_layers_errors")]
    probes = json.loads((GOLDEN_DIR / "nn_layers_errors.json").read_text())["probes"]
    return [pytest.param(p, id=f"{p['id']}-{p['api'][3:]}-{p['category']}") for p in probes]


def _layer_name(probe: dict) -> str:
    return probe["api"].split(".", 1)[1]


def _needs_x64(probe: dict) -> bool:
    args = (probe["call"] or {}).get("args", [])
    return probe["ctor_dtype"] == "float64" or any(a.get("dtype") == "float64" for a in args)


def run_probe(probe: dict):
    """(stage reached, result or exception, layer)."""
    rng = np.random.default_rng(int(probe["id"][3:]))
    kw = {k: literal(v) for k, v in (probe["ctor_kwargs_repr"] or {}).items()}
    for arg, spec in (probe["ctor_tensor_kwargs"] or {}).items():
        kw[arg] = probe_array(spec, rng)
    if probe["ctor_dtype"]:
        kw["dtype"] = jnp.dtype(probe["ctor_dtype"])
    stage, layer = "construct", None
    try:
        layer = getattr(nn, _layer_name(probe))(**kw, rngs=nnx.Rngs(0))
        stage = "call"
        if probe["call"] is None:
            return "done", None, layer
        args = [probe_array(a, rng) for a in probe["call"]["args"]]
        out = jax.block_until_ready(layer(*args))
    except Exception as e:  # noqa: BLE001 - the test checks the type
        return stage, e, layer
    return "done", (out, args), layer


def _arg_names(desc: str) -> list[str]:
    return re.findall(r"(\w+)=", desc)


@pytest.mark.parametrize("probe", _probes())
def test_probe(probe):
    outcome, stage_want = decided(probe)
    with enable_x64(_needs_x64(probe)), warnings.catch_warnings():
        warnings.simplefilter("error")  # no probe warns
        stage, result, layer = run_probe(probe)
        if isinstance(outcome, Raise):
            assert stage == stage_want, f"expected {outcome.exc.__name__} at {stage_want}, got {stage}: {result!r}"
            assert type(result) is outcome.exc, f"{type(result).__name__}: {result}"
            msg, name = str(result), _layer_name(probe)
            if "unexpected keyword argument" in msg:  # Python's own check of the signature
                assert msg.startswith(f"{name}.__init__()"), msg
                return
            assert msg.startswith(f"{name}: "), msg
            if probe["category"].startswith("ctor_") and probe["category"] not in ("ctor_type", "ctor_value"):
                named = _arg_names(probe["desc"]) or re.findall(r"(\w+_init)", probe["desc"])
                assert any(f"'{a}" in msg for a in named), (named, msg)
            return
        assert stage == "done", f"raised {type(result).__name__}: {result}"
        if result is None:
            return  # construct-only and accepted
        out, args = result
        if not probe["raised"]:
            assert list(out.shape) == probe["output_shape"]
            assert str(out.dtype) == probe["output_dtype"].lower()
        else:  # accepted by a difference: the numbers of the float64 reference
            np.testing.assert_allclose(np.asarray(out, np.float64), _reference(layer, args[0]), rtol=1e-5, atol=1e-5)


def _reference(layer, x) -> np.ndarray:
    """The float64 NumPy reference of a pad/valid/same layer with stride 1 and dilation 1 (the probes' layers)."""
    cfg = layer.config
    a = cfg.attrs
    assert a.stride == (1,) * cfg.ndim and a.dilation == (1,) * cfg.ndim, "extend the reference"
    w = np.asarray(layer.weight[...], np.float64)
    w = w[:, :, 0] if cfg.ndim == 1 else w
    x = np.asarray(x, np.float64)
    k = w.shape[2:]
    if a.pad_mode == "same":
        pairs = tuple(((kk - 1) // 2, kk - 1 - (kk - 1) // 2) for kk in k)
    else:
        pairs = a.pad
    ones = (1,) * cfg.ndim
    if cfg.transpose:
        if a.pad_mode == "same":
            size = x.shape[2:]
        elif a.pad_mode == "valid":
            size = tuple(o + kk - 1 for o, kk in zip(x.shape[2:], k))
        else:
            size = tuple(o + kk - 1 - lo - hi for o, kk, (lo, hi) in zip(x.shape[2:], k, pairs))
        out = reference.conv_transpose_nd(x, w, size, ones, ones, pairs, a.group)
    else:
        out = reference.conv_nd(x, w, ones, ones, pairs, a.group)
    if layer.bias is not None:
        out = out + np.asarray(layer.bias[...], np.float64).reshape((1, -1) + (1,) * cfg.ndim)
    return out


def test_decision_table_is_current():
    """Every DECIDED entry is a real probe whose MindSpore outcome it really changes."""
    params = _probes()
    if params[0].values[0] is None:
        pytest.skip(GOLDEN_MISSING)
    by_id = {p.values[0]["id"]: p.values[0] for p in params}
    for pid, outcome in DECIDED.items():
        probe = by_id[pid]
        if isinstance(outcome, Accept):
            assert probe["raised"], pid
        else:
            assert outcome.stage != probe["stage"] or probe["exception_type"] != outcome.exc.__name__, pid


def test_probe_summary():
    """The counts docs/differences.md quotes: probes with MindSpore's outcome, and deviations per difference."""
    params = _probes()
    if params[0].values[0] is None:
        pytest.skip(GOLDEN_MISSING)
    matched, deviations = 0, collections.Counter()
    for p in params:
        outcome, _ = decided(p.values[0])
        if outcome is None or (isinstance(outcome, Raise) and not outcome.difference):
            matched += 1
        else:
            deviations[outcome.difference] += 1
    assert matched + sum(deviations.values()) == 543
    print(f"nn probes: {matched} with MindSpore's outcome, deviations {dict(sorted(deviations.items()))}")


# ---------------------------------------------------------------------------
# A float where an int belongs: MindSpore's TypeError, as its probes record
# ---------------------------------------------------------------------------

_LAYERS = ("Conv1d", "Conv2d", "Conv3d", "Conv1dTranspose", "Conv2dTranspose", "Conv3dTranspose")


def _float_probes() -> list[dict]:
    """The probes that pass a float for ``in_channels``, ``out_channels``, ``group`` or ``kernel_size``."""
    if not golden_available():
        pytest.skip(GOLDEN_MISSING)
    probes = json.loads((GOLDEN_DIR / "nn_layers_errors.json").read_text())["probes"]
    out = []
    for p in probes:
        kw = {k: literal(v) for k, v in (p["ctor_kwargs_repr"] or {}).items()}
        if any(isinstance(kw.get(k), float) for k in ("in_channels", "out_channels", "group", "kernel_size")):
            out.append(p)
    return out


@pytest.mark.parametrize("layer", _LAYERS)
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_channels=1.5, out_channels=4, kernel_size=3), "in_channels"),
        (dict(in_channels=4, out_channels=4.0, kernel_size=3), "out_channels"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, group=2.0), "group"),
    ],
)
def test_a_float_argument_is_mindsporess_type_error(layer, kwargs, name):
    """MindSpore 2.10 raises ``TypeError`` for every float it was probed with (``Validator.check_positive_int``:
    "the 'in_channels' must be int, but got 'float'"), at construction; the values of the issue included."""
    recorded = {p["exception_type"] for p in _float_probes()}
    assert recorded == {"TypeError"} and len(_float_probes()) >= 24  # 4 arguments x 6 layers, all TypeError
    with pytest.raises(TypeError) as err:
        getattr(nn, layer)(**kwargs, rngs=nnx.Rngs(0))
    assert str(err.value).startswith(f"{layer}: '{name}' must be a Python int"), str(err.value)


@pytest.mark.parametrize("layer", ["Conv2d", "Conv3d", "Conv2dTranspose", "Conv3dTranspose"])
def test_a_float_inside_kernel_size_is_a_type_error(layer):
    """A tuple entry: MindSpore's ``_Conv`` checks each item with ``check_positive_int`` (TypeError for a float)."""
    n = 3 if "3d" in layer else 2
    kernel = (3,) * (n - 1) + (2.5,)
    with pytest.raises(TypeError) as err:
        getattr(nn, layer)(4, 4, kernel, rngs=nnx.Rngs(0))
    assert "'kernel_size'" in str(err.value) and "2.5 (float)" in str(err.value), str(err.value)


# ---------------------------------------------------------------------------
# Errors that say the fix
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, x_shape",
    [
        ("Conv1d", (2, 32, 3)),
        ("Conv2d", (2, 32, 32, 3)),
        ("Conv3d", (2, 8, 8, 8, 3)),
        ("Conv1dTranspose", (2, 9, 3)),
        ("Conv2dTranspose", (2, 9, 9, 3)),
        ("Conv3dTranspose", (2, 5, 5, 5, 3)),
    ],
)
def test_a_channels_last_input_names_the_layout_and_the_fix(layer, x_shape):
    """``nn.Conv2d(3, 8, 3)`` on ``(N, H, W, 3)``: the layers are channels-first; ``jnp.moveaxis`` fixes it."""
    m = getattr(nn, layer)(3, 8, 3, rngs=nnx.Rngs(0))
    x = jnp.ones(x_shape)
    with pytest.raises(ValueError) as err:
        m(x)
    msg = str(err.value)
    assert msg.startswith(f"{layer}: 'x' has {x_shape[1]} channels"), msg
    assert "channels-first" in msg and "jnp.moveaxis(x, -1, 1)" in msg, msg
    assert m(jnp.moveaxis(x, -1, 1)).shape[:2] == (2, 8)  # the fix it names works


def test_an_unbatched_input_names_the_batch_axis():
    m = nn.Conv2d(3, 8, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as err:
        m(jnp.ones((3, 16, 16)))
    assert "x[None]" in str(err.value) and "(1, 3, 16, 16)" in str(err.value), str(err.value)
    with pytest.raises(ValueError) as err:
        m(jnp.ones((16, 16, 3)))  # unbatched and channels-last
    assert "jnp.moveaxis(x, -1, 0)[None]" in str(err.value), str(err.value)
    assert m(jnp.moveaxis(jnp.ones((16, 16, 3)), -1, 0)[None]).shape == (1, 8, 16, 16)


def test_no_layout_hint_where_no_layout_fits():
    with pytest.raises(ValueError) as err:
        nn.Conv2d(3, 8, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 4, 4, 4)))
    assert "looks" not in str(err.value), str(err.value)


@pytest.mark.parametrize("layer", ["Conv1d", "Conv2d"])
def test_an_input_one_short_of_the_kernel_is_a_value_error_with_the_sizes(layer):
    """Conv1d / Conv2d: MindSpore's Conv2D kernel needs the padded input to hold the kernel (no empty output)."""
    n = 1 if layer == "Conv1d" else 2
    m = getattr(nn, layer)(2, 4, 3, pad_mode="valid", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as err:
        m(jnp.ones((1, 2, *(2,) * n)))
    msg = str(err.value)
    assert msg.startswith(f"{layer}: the kernel does not fit"), msg
    assert "size 2 padded by (0, 0) is 2" in msg and "extent 3" in msg and ">= 3" in msg, msg

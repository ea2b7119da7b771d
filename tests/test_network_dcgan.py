"""A real MindSpore network, ported: the ``dcgan_g`` generator of the golden set.

The network is rebuilt from its recorded layer list (``net.json``) with
``jax_conv_bpi.nn`` layers and ``flax.nnx.Sequential`` for MindSpore's
``SequentialCell``; MindSpore's trained-state files (``model.ckpt`` and
``model.safetensors``, written by ``mindspore.save_checkpoint``) are loaded
into it, and its output and the gradients of ``sum(output * cot)`` with
respect to the input and every parameter are compared with MindSpore's
(``golden.npz``; float32 tolerances of the golden README). Saving the loaded
network reproduces MindSpore's ``.ckpt`` tags, tensor types and order, and
``save_checkpoint`` / ``load_checkpoint`` round-trips bit-exactly.
"""

from __future__ import annotations

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .support import GOLDEN_DIR, skip_without_golden

nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
import jax_conv_bpi as jcb  # noqa: E402
from jax_conv_bpi import nn  # noqa: E402

DCGAN = GOLDEN_DIR / "networks" / "dcgan_g"
RTOL, ATOL = 1e-5, 5e-5  # golden README, float32 row (networks)


def _function(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


class Net(nnx.Module):
    """The network of a ``net.json``: top-level attributes applied in ``forward`` order."""

    def __init__(self, doc: dict, *, rngs: nnx.Rngs):
        built = {}
        for m in doc["modules"]:
            if m["kind"] == "layer":
                built[m["path"]] = getattr(nn, m["class"])(**m["kwargs"], rngs=rngs)
            else:
                fn = _function(m["jax"])
                built[m["path"]] = (lambda f, kw: lambda x: f(x, **kw))(fn, m.get("jax_kwargs", {}))
        for c in doc["containers"]:
            assert c["class"] == "SequentialCell", c
            built[c["path"]] = nnx.Sequential(*(built.pop(child) for child in c["children"]))
        self.forward = tuple(doc["forward"])
        for name in self.forward:
            setattr(self, name, built.pop(name))
        assert not built, f"modules outside the forward list: {sorted(built)}"

    def __call__(self, x):
        for name in self.forward:
            x = getattr(self, name)(x)
        return x


@pytest.fixture(scope="module")
def doc():
    skip_without_golden()
    return json.loads((DCGAN / "net.json").read_text())


@pytest.fixture(scope="module")
def gold(doc):
    return dict(np.load(DCGAN / "golden.npz"))


def _fresh(doc) -> Net:
    return Net(doc, rngs=nnx.Rngs(0))


def _loaded(doc, filename: str) -> Net:
    net = _fresh(doc)
    not_loaded, unused = jcb.load_param_into_net(net, jcb.load_checkpoint(DCGAN / filename), strict_load=True)
    assert (not_loaded, unused) == ([], [])
    return net


def test_parameter_names_shapes_and_order_are_mindspores(doc):
    params = jcb.parameters_dict(_fresh(doc))
    assert [(k, list(v.shape), str(v.dtype)) for k, v in params.items()] == [
        (p["name"], p["shape"], p["dtype"]) for p in doc["parameters"]
    ]


@pytest.mark.parametrize("filename", ["model.ckpt", "model.safetensors"])
def test_checkpoint_loads_mindspores_parameters_exactly(doc, gold, filename):
    net = _loaded(doc, filename)
    for name, value in jcb.parameters_dict(net).items():
        np.testing.assert_array_equal(np.asarray(value), gold[f"param.{name}"], err_msg=name)


@pytest.mark.parametrize("filename", ["model.ckpt", "model.safetensors"])
def test_output_and_every_gradient_match_mindspore(doc, gold, filename):
    net = _loaded(doc, filename)
    graphdef, params = nnx.split(net, nnx.Param)
    x, cot = jnp.asarray(gold["input"]), jnp.asarray(gold["cot"])

    def forward(params, x):
        return nnx.merge(graphdef, params)(x)

    out, vjp = jax.vjp(jax.jit(forward), params, x)
    np.testing.assert_allclose(np.asarray(out), gold["output"], rtol=RTOL, atol=ATOL, err_msg="output")
    d_params, d_x = vjp(cot)
    np.testing.assert_allclose(np.asarray(d_x), gold["grad_input"], rtol=RTOL, atol=ATOL, err_msg="grad_input")
    grads = jcb.parameters_dict(nnx.merge(graphdef, d_params))
    assert sorted(grads) == sorted(p["name"] for p in doc["parameters"])
    for name, g in grads.items():
        np.testing.assert_allclose(np.asarray(g), gold[f"grad.{name}"], rtol=RTOL, atol=ATOL, err_msg=name)


def test_a_fresh_network_differs_until_loaded(doc, gold):
    """The comparison above is not vacuous: our own initialisation gives other numbers."""
    out = np.asarray(_fresh(doc)(jnp.asarray(gold["input"])))
    assert not np.allclose(out, gold["output"], rtol=RTOL, atol=ATOL)


def test_saved_ckpt_has_mindspores_tags_types_and_order(doc, tmp_path):
    net = _loaded(doc, "model.ckpt")
    path = tmp_path / "ported.ckpt"
    jcb.save_checkpoint(net, path)
    check = doc["checkpoint_check"]["ckpt"]
    data = path.read_bytes()
    assert len(data) == check["file_size"]
    assert data == (DCGAN / "model.ckpt").read_bytes()  # same tags, types, order and bytes as MindSpore's file
    assert list(jcb.load_checkpoint(path)) == check["tags_in_order"]


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_save_then_load_round_trips_bit_exactly(doc, tmp_path, fmt):
    net = _loaded(doc, "model.safetensors")
    path = tmp_path / f"ported.{fmt}"
    jcb.save_checkpoint(net, path, format=fmt)
    back = jcb.load_checkpoint(path)
    original = jcb.parameters_dict(net)
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        value = np.asarray(value)
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        assert back[name].tobytes() == value.tobytes(), name
    # and into a fresh network, which then computes MindSpore's output
    again = _fresh(doc)
    assert jcb.load_param_into_net(again, back, strict_load=True) == ([], [])
    for name, value in jcb.parameters_dict(again).items():
        assert np.asarray(value).tobytes() == np.asarray(original[name]).tobytes(), name

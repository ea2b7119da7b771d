# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Porting a MindSpore model to JAX
#
# A small DCGAN-style generator was built and initialised in MindSpore 2.10 and saved with
# `mindspore.save_checkpoint` as `model.ckpt` and `model.safetensors`. MindSpore also recorded its output
# for a fixed latent batch and the gradients of `sum(output * cot)`. This notebook ports the network to
# JAX with `jax_conv_bpi.nn` (Flax NNX layers with MindSpore's constructors and parameter layouts), loads
# the checkpoint without MindSpore, checks the numbers against MindSpore's, shows the generated images,
# takes a few optax training steps and saves a checkpoint MindSpore can read back.
#
# The MindSpore network:
#
# ```python
# class Generator(mindspore.nn.Cell):
#     def __init__(self):
#         super().__init__()
#         self.body = nn.SequentialCell(
#             nn.Conv2dTranspose(16, 32, 4, stride=1, pad_mode="valid"), nn.ReLU(),
#             nn.Conv2dTranspose(32, 16, 4, stride=2, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
#             nn.Conv2dTranspose(16, 8, 4, stride=2, pad_mode="same"))
#         self.to_rgb = nn.Conv2d(8, 3, 3, pad_mode="same", has_bias=True)
#         self.act = nn.Tanh()
#
#     def construct(self, z):
#         return self.act(self.to_rgb(self.body(z)))
# ```
#
# The files come from the project's golden set (`shared/golden/networks/dcgan_g`); set `JCB_GOLDEN_DIR`
# to the `golden` folder if it is elsewhere.

# %%
import os
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import jax_conv_bpi as jcb
from jax_conv_bpi import nn


def golden_dir() -> Path:
    """``$JCB_GOLDEN_DIR``, else ``shared/golden`` inside or beside the checkout."""
    if os.environ.get("JCB_GOLDEN_DIR"):
        return Path(os.environ["JCB_GOLDEN_DIR"])
    root = Path(jcb.__file__).resolve().parents[1]
    for candidate in (root / "shared" / "golden", root.parent / "shared" / "golden"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the golden set was not found: set JCB_GOLDEN_DIR to the shared/golden folder")


FIGURES = os.environ.get("JCB_NOTEBOOK_FIGURES")


def save(fig, name):
    """Write ``fig`` as ``<JCB_NOTEBOOK_FIGURES>/<name>.png`` when that variable is set."""
    if FIGURES:
        Path(FIGURES).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(FIGURES) / f"{name}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})


FILES = golden_dir() / "networks" / "dcgan_g"
print("jax", jax.__version__, "| jax_conv_bpi", jcb.__version__, "| files in", FILES)

# %% [markdown]
# ## 1. The same network in JAX
#
# Each MindSpore layer has a namesake in `jax_conv_bpi.nn` with the same arguments (plus `rngs`), and
# `nnx.Sequential` plays `SequentialCell`. The parameter names come from the attribute paths, so they are
# MindSpore's: `body.0.weight`, ..., `to_rgb.bias`. Note MindSpore's defaults: `pad_mode="same"` and no bias.


# %%
class Generator(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.body = nnx.Sequential(
            nn.Conv2dTranspose(16, 32, 4, stride=1, pad_mode="valid", rngs=rngs),
            jax.nn.relu,
            nn.Conv2dTranspose(32, 16, 4, stride=2, pad_mode="pad", padding=1, has_bias=True, rngs=rngs),
            jax.nn.relu,
            nn.Conv2dTranspose(16, 8, 4, stride=2, pad_mode="same", rngs=rngs),
        )
        self.to_rgb = nn.Conv2d(8, 3, 3, pad_mode="same", has_bias=True, rngs=rngs)

    def __call__(self, z):
        return jnp.tanh(self.to_rgb(self.body(z)))


model = Generator(rngs=nnx.Rngs(0))
for name, value in jcb.parameters_dict(model).items():
    print(f"{name:15s} {str(value.shape):16s} {value.dtype}")

# %% [markdown]
# ## 2. Loading MindSpore's checkpoint
#
# `load_checkpoint` reads either file (recognised by its content, not its name) into NumPy arrays with
# `protobuf` / `safetensors` only; `load_param_into_net` assigns them and returns, as MindSpore does, the
# parameters it did not load and the checkpoint entries it did not use. With `strict_load=True` a shape or
# dtype mismatch would raise an error naming the parameter, both shapes and the file.

# %%
from_ckpt = jcb.load_checkpoint(FILES / "model.ckpt")
from_safetensors = jcb.load_checkpoint(FILES / "model.safetensors")
assert sorted(from_ckpt) == sorted(from_safetensors)
for name in from_ckpt:
    np.testing.assert_array_equal(from_ckpt[name], from_safetensors[name])

not_loaded, unused = jcb.load_param_into_net(model, from_ckpt, strict_load=True)
print("parameters not loaded:", not_loaded, "| checkpoint entries not used:", unused)
assert not_loaded == [] and unused == []

# %% [markdown]
# ### When the names differ
#
# A checkpoint saved from a training wrapper has its names under a prefix (here `network.backbone.`), and
# one written by other code may name blocks differently (here the head `rgb` instead of `to_rgb`) and carry
# extra entries (an optimizer's step). Nothing then matches, and `load_param_into_net` says so: a
# `UserWarning` (and a WARNING record of the `jax_conv_bpi` logger) names the variables left with their
# initial values and the entries left unused. `strip_prefix`, `add_prefix` and `name_map` rename the entries
# before matching, in that order (`name_map`'s keys are spelled after the prefix options, `None` drops an
# entry), and `strict=True` turns any remaining mismatch into an error that loads nothing.

# %%
other_names = {f"network.backbone.{name.replace('to_rgb.', 'rgb.')}": value for name, value in from_ckpt.items()}
other_names["optimizer.step"] = np.array(100)
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "wrapped.ckpt"
    jcb.save_checkpoint(other_names, path, crc_check=True)  # crc_check: later damage to the file is detected
    wrapped = jcb.load_checkpoint(path)
print("the file's names:", list(wrapped))

fresh = Generator(rngs=nnx.Rngs(7))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    not_loaded, unused = jcb.load_param_into_net(fresh, wrapped, strict_load=True)
print("\nthe warning:", caught[0].message)
assert len(not_loaded) == len(from_ckpt) and len(unused) == len(wrapped)

rename = {"rgb.weight": "to_rgb.weight", "rgb.bias": "to_rgb.bias", "optimizer.step": None}
result = jcb.load_param_into_net(
    fresh, wrapped, strict_load=True, strict=True, strip_prefix="network.backbone.", name_map=rename
)
print("\nwith strip_prefix and name_map:", result)
for name, value in jcb.parameters_dict(fresh).items():
    np.testing.assert_array_equal(value, from_ckpt[name])

# %% [markdown]
# ## 3. Same numbers as MindSpore
#
# MindSpore's output for its latent batch `z` and its gradients (`GradOperation` with a sensitivity `cot`)
# were recorded. The JAX port gives them to float32 rounding: the output, the gradient with respect to
# `z` and the gradient of every parameter.

# %%
gold = np.load(FILES / "golden.npz")
z, cot = jnp.asarray(gold["input"]), jnp.asarray(gold["cot"])

graphdef, params = nnx.split(model, nnx.Param)


@jax.jit
def generate(params, z):
    return nnx.merge(graphdef, params)(z)


out, vjp = jax.vjp(generate, params, z)
d_params, d_z = vjp(cot)
grads = jcb.parameters_dict(nnx.merge(graphdef, d_params))

rows = [("output", out, gold["output"]), ("grad z", d_z, gold["grad_input"])]
rows += [(f"grad {name}", g, gold[f"grad.{name}"]) for name, g in grads.items()]
for what, ours, theirs in rows:
    err = float(np.max(np.abs(np.asarray(ours) - theirs)))
    print(f"{what:22s} max |JAX - MindSpore| = {err:.2e}   (max |MindSpore| = {np.max(np.abs(theirs)):.3f})")
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=5e-5, err_msg=what)

# %% [markdown]
# ## 4. The generated images
#
# The generator maps a 16-dimensional latent vector to a 3x16x16 image in `[-1, 1]`. It is untrained
# (MindSpore's random initialisation), so the images are structured noise of small amplitude around the
# head's bias (shown contrast-stretched: each colour channel of an image spread over its full range; the
# checkerboard of the strided layers is visible); what matters is that both frameworks draw the same picture. Top: MindSpore's two images; middle: the JAX port's; bottom: eight more
# latent vectors through the ported network.


# %%
def to_image(chw, stretch=True):
    """(3, H, W) in [-1, 1] as an RGB picture, optionally each channel spread over [0, 1]."""
    hwc = np.transpose(np.asarray(chw), (1, 2, 0))
    if not stretch:
        return np.clip((hwc + 1) / 2, 0, 1)
    low, high = hwc.min(axis=(0, 1)), hwc.max(axis=(0, 1))
    return (hwc - low) / np.maximum(high - low, 1e-12)


more = generate(params, jax.random.normal(jax.random.key(1), (8, 16, 1, 1)))
assert more.shape == (8, 3, 16, 16) and float(jnp.max(jnp.abs(more))) <= 1.0

fig, axes = plt.subplots(3, 8, figsize=(12, 4.8))
for ax in axes.ravel():
    ax.axis("off")
for i in range(2):
    axes[0, i].imshow(to_image(gold["output"][i]), interpolation="nearest")
    axes[0, i].set_title(f"MindSpore #{i}", fontsize=8)
    axes[1, i].imshow(to_image(out[i]), interpolation="nearest")
    axes[1, i].set_title(f"JAX #{i}", fontsize=8)
for i in range(8):
    axes[2, i].imshow(to_image(more[i]), interpolation="nearest")
fig.suptitle("dcgan_g: MindSpore's output, the JAX port's, and eight new samples", fontsize=10)
fig.tight_layout()
save(fig, "dcgan_samples")
plt.show()

# %% [markdown]
# ## 5. A few training steps with optax
#
# The ported layers are ordinary NNX modules: `nnx.Optimizer` with an optax transformation trains them,
# and the step compiles once under `nnx.jit`. As a small task, the generator learns to draw a fixed
# target image (a colour gradient) from one latent vector; the loss must fall.

# %%
yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
target = jnp.asarray(np.stack([xx, yy, -xx * yy])[None] * 0.8, jnp.float32)  # (1, 3, 16, 16) in [-1, 1]
z0 = z[:1]

optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, z, target):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(z) - target) ** 2))(model)
    optimizer.update(model, grads)
    return loss


losses = [float(train_step(model, optimizer, z0, target)) for _ in range(60)]
print("loss every 10 steps:", " ".join(f"{v:.4f}" for v in losses[::10]), "| last", f"{losses[-1]:.4f}")
assert losses[-1] < 0.5 * losses[0], losses

fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
axes[0].plot(losses)
axes[0].set_xlabel("step")
axes[0].set_ylabel("mean squared error")
axes[1].imshow(to_image(target[0], stretch=False), interpolation="nearest")
axes[1].set_title("target", fontsize=9)
axes[2].imshow(to_image(model(z0)[0], stretch=False), interpolation="nearest")
axes[2].set_title("after 60 steps", fontsize=9)
for ax in axes[1:]:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Back to MindSpore
#
# `save_checkpoint` writes the trained parameters in either format, with MindSpore's tags, tensor types
# and order, so `mindspore.load_checkpoint` reads the file back into the original `Generator`. Here the
# file is reloaded into a fresh JAX port, which then draws exactly what the trained one draws. (Saved from
# the untrained, freshly loaded network, the `.ckpt` is byte for byte MindSpore's own file; the tests check
# that.)

# %%
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "trained.ckpt"
    jcb.save_checkpoint(model, path)
    print(path.name, path.stat().st_size, "bytes")
    fresh = Generator(rngs=nnx.Rngs(42))
    assert jcb.load_param_into_net(fresh, jcb.load_checkpoint(path), strict_load=True) == ([], [])

np.testing.assert_array_equal(np.asarray(fresh(z0)), np.asarray(model(z0)))
print("the reloaded network reproduces the trained one exactly")

"""MindSpore's convolution layers as Flax NNX modules (the ``[nn]`` extra: ``pip install 'jax_conv_bpi[nn]'``).

``Conv1d``, ``Conv2d``, ``Conv3d``, ``Conv1dTranspose``, ``Conv2dTranspose`` and
``Conv3dTranspose`` take MindSpore 2.10's constructor arguments plus a
keyword-only ``rngs`` (``flax.nnx.Rngs``). Their parameters ``weight`` and
``bias`` have MindSpore's names, shapes and layouts, so a MindSpore checkpoint
loads into them without reshaping (``jax_conv_bpi.load_checkpoint`` and
``jax_conv_bpi.load_param_into_net``).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jax_conv_bpi import nn
  >>> up = nn.Conv2dTranspose(16, 8, 4, stride=2, has_bias=True, rngs=nnx.Rngs(0))
  >>> up.weight.shape, up.bias.shape, up(jnp.ones((1, 16, 5, 5))).shape
  ((16, 8, 4, 4), (8,), (1, 8, 10, 10))
"""

try:
    from jax_conv_bpi._src.mindspore.nn.layers import (
        Conv1d,
        Conv1dTranspose,
        Conv2d,
        Conv2dTranspose,
        Conv3d,
        Conv3dTranspose,
    )
except ModuleNotFoundError as e:  # pragma: no cover - exercised without the extra
    if e.name is None or not e.name.startswith("flax"):
        raise
    raise ModuleNotFoundError(
        "jax_conv_bpi.nn needs Flax: pip install 'jax_conv_bpi[nn]' (flax, optax, protobuf, safetensors)",
        name=e.name,
    ) from e

__all__ = ["Conv1d", "Conv1dTranspose", "Conv2d", "Conv2dTranspose", "Conv3d", "Conv3dTranspose"]

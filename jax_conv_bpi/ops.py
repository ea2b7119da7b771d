"""MindSpore's convolution operators under their MindSpore names: ``from jax_conv_bpi import ops``.

A port changes ``from mindspore import ops`` to ``from jax_conv_bpi import ops``;
names, signatures, defaults and numbers are MindSpore 2.10's (docs/differences.md
lists the deliberate exceptions).

Example:
  >>> import jax.numpy as jnp
  >>> from jax_conv_bpi import ops
  >>> ops.Conv3DTranspose(2, 3, kernel_size=2, stride=2)(jnp.ones((1, 2, 2, 2, 2)), jnp.ones((2, 3, 2, 2, 2))).shape
  (1, 3, 4, 4, 4)
  >>> ops.conv1d(jnp.ones((1, 2, 8)), jnp.ones((4, 2, 3)), stride=2, pad_mode="same").shape
  (1, 4, 4)
"""

from jax_conv_bpi._src.mindspore.classes_2d import Conv2D, Conv2DBackpropInput, Conv2DTranspose
from jax_conv_bpi._src.mindspore.classes_3d import Conv3D, Conv3DTranspose
from jax_conv_bpi._src.mindspore.functional import conv1d, conv2d, conv3d, conv3d_transpose, conv_transpose2d

__all__ = [
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv3d_transpose",
    "conv_transpose2d",
]

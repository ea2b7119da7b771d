"""Transposed convolutions for JAX: MindSpore's convolution family, exact, and a JAX-native N-D op.

Exact MindSpore semantics for ``ops.Conv2DBackpropInput`` and its family, a
JAX-native ``conv_transpose`` for 1, 2 and 3 spatial dimensions (groups,
PyTorch-consistent padding and output size), a custom backward that stays
inside the convolution family, and every JAX transformation. ``jax_conv_bpi.ops``
holds MindSpore's names: ``Conv3D``, ``Conv3DTranspose`` and the functional
``conv1d``, ``conv2d``, ``conv3d``, ``conv_transpose2d``, ``conv3d_transpose``.

Example:
  >>> import jax.numpy as jnp
  >>> import jax_conv_bpi as jcb
  >>> op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
  >>> op(jnp.ones((10, 32, 30, 30)), jnp.ones((32, 32, 3, 3)), (10, 32, 32, 32)).shape
  (10, 32, 32, 32)
  >>> jcb.conv_transpose(jnp.ones((1, 8, 5)), jnp.ones((8, 4, 4)), 2, [(1, 1)]).shape
  (1, 4, 10)
  >>> jcb.ops.conv3d(jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 3, 3, 3)), pad_mode="same").shape
  (1, 3, 4, 4, 4)
"""

import importlib.metadata

from jax_conv_bpi import ops  # MindSpore's names: ops.Conv3D, ops.conv1d, ...
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.lowering.dispatch import CPU_PATHS, cpu_paths
from jax_conv_bpi._src.lowering.options import cpu_compiler_options
from jax_conv_bpi._src.mindspore.checkpoint.api import (
    load_checkpoint,
    load_param_into_net,
    parameters_dict,
    save_checkpoint,
)
from jax_conv_bpi._src.mindspore.classes_2d import Conv2D, Conv2DBackpropFilter, Conv2DBackpropInput, Conv2DTranspose
from jax_conv_bpi._src.mindspore.functions_2d import conv2d, conv2d_backprop_filter, conv2d_backprop_input
from jax_conv_bpi._src.mindspore.sizes import conv2d_output_size, valid_input_sizes
from jax_conv_bpi._src.native.kernels import native_status
from jax_conv_bpi._src.op.conv_transpose import conv_transpose
from jax_conv_bpi._src.op.primitives import backprop_filter_p, backprop_input_p, conv_p
from jax_conv_bpi._src.op.sizes import conv_transpose_sizes

conv2d_p = conv_p  # the forward primitive under its 2-D name (it serves every rank)

try:
    __version__ = importlib.metadata.version("jax_conv_bpi")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CPU_PATHS",
    "Conv2D",
    "Conv2DBackpropFilter",
    "Conv2DBackpropInput",
    "Conv2DTranspose",
    "ConvGeometry",
    "backprop_filter_p",
    "backprop_input_p",
    "conv2d",
    "conv2d_backprop_filter",
    "conv2d_backprop_input",
    "conv2d_output_size",
    "conv2d_p",
    "conv_p",
    "conv_transpose",
    "conv_transpose_sizes",
    "cpu_compiler_options",
    "cpu_paths",
    "load_checkpoint",
    "load_param_into_net",
    "native_status",
    "ops",
    "parameters_dict",
    "save_checkpoint",
    "valid_input_sizes",
]

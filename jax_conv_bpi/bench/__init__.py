"""Benchmark of the transposed convolution against plain JAX and PyTorch, in 1-D, 2-D and 3-D.

Run ``python -m jax_conv_bpi.bench`` (``--quick`` for a run under a minute,
``--help`` for the options). It times two suites in one interleaved run:

* ``shapes.json``: 13 2-D layers of common networks (``Shape``), through the
  MindSpore API ``conv2d_backprop_input``;
* ``shapes_nd.json``: 8 1-D and 3-D layers (``ShapeND``: HiFi-GAN and
  Conv-TasNet upsamplers, V-Net and 3D U-Net), through ``conv_transpose``
  with the ``output_padding`` that gives the layer's exact input size.

``--suite PATH`` / ``--suite-nd PATH`` replace either suite, ``--no-nd``
leaves out the N-D one and ``--shapes`` picks names from both. For every
shape it checks that the implementations agree, then times, interleaved in
one process after warm-up:

* this library's op under ``jax.jit`` (``conv2d_backprop_input`` for the 2-D
  suite, ``conv_transpose`` for the N-D one);
* ``jax.vjp`` of ``lax.conv_general_dilated`` w.r.t. its input, under
  ``jax.jit`` (what plain JAX gives; a strided + dilated shape runs it in a
  child process first, since XLA CPU may abort on it);
* PyTorch ``F.conv_transpose{1,2,3}d`` and ``torch.nn.grad.conv{1,2,3}d_input``
  when PyTorch is installed (``pip install 'jax_conv_bpi[torch]'``);

and a training step (the library's forward convolution + both gradients)
against plain ``jax.grad`` and PyTorch autograd. It reports medians, speedups
(``t_peer / t_ours``), GFLOP/s, the share of the matmul peak measured in the
same run, geomean speedups per rank (1-D, 2-D, 3-D) and the peak memory of
each compiled executable on the largest shape, as tables, JSON (``--json``)
and a bar chart (``--png``, needs matplotlib). The 2-D tables are those of
the 2-D suite alone; the N-D shapes have their own.

The functions are importable for scripting::

    from jax_conv_bpi import bench
    result = bench.run(bench.Config(shapes=bench.load_suite()[:2], torch=False))
    result_nd = bench.run(bench.Config(shapes=bench.load_suite_nd()[:1], torch=False))
"""

from .cli import main
from .config import Config
from .runner import run
from .suite import Shape, ShapeND, load_suite, load_suite_nd, select, shape_from_dict

__all__ = ["Config", "Shape", "ShapeND", "load_suite", "load_suite_nd", "main", "run", "select", "shape_from_dict"]

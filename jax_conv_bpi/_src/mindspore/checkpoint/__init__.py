"""MindSpore checkpoints (``.ckpt`` and ``.safetensors``) for Flax NNX modules and plain dicts.

The public functions and the overview are in :mod:`jax_conv_bpi._src.mindspore.checkpoint.api`.
"""

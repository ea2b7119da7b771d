"""MindSpore's ``nn`` convolution layers as Flax NNX modules: constructor checks, initialisers, layers."""

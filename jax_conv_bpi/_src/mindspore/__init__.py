"""Layer 5: MindSpore's vocabulary: its gate, the 2-D and N-D ops, the ``nn`` layers and checkpoints."""

"""Layer 4: the three primitives and their rules, their sharding, and ``conv_transpose`` with lax's argument gate."""

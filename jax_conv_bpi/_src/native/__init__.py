"""Layer 2: the optional native CPU kernels: their build and FFI registration (``kernels``) and, in pure Python, where they compute directly (``rules``)."""

"""``python -m jax_conv_bpi.bench``: see ``--help``."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())

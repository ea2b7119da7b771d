"""``python -m jax_conv_bpi.bench``: see ``--help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""A run's outputs: the report on stdout, the JSON file, the chart; the exit status of the checks."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import TextIO

from . import report


def write(
    result: dict, *, json_path: str | None = None, png_path: str | None = None, stream: TextIO | None = None
) -> int:
    """Print ``result``'s report to ``stream`` (stdout), write ``json_path`` and ``png_path`` where given.

    Returns the command's exit status: 1 when a correctness check failed, else 0.
    """
    stream = stream or sys.stdout
    print(report.format_report(result), file=stream)
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(result, indent=1))
        print(f"\nJSON written to {json_path}", file=stream)
    if png_path:
        try:
            report.plot(result, png_path)
            print(f"chart written to {png_path}", file=stream)
        except ImportError:
            print("matplotlib is not installed: no chart (pip install 'jax_conv_bpi[bench]')", file=sys.stderr)
    if not result["checks_ok"]:
        print("\nCORRECTNESS CHECK FAILED (see the check column)", file=sys.stderr)
        return 1
    return 0

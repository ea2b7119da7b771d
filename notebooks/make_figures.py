"""Execute the notebook and save its pictures (``make notebook-png``).

Usage: ``python notebooks/make_figures.py [FOLDER] [--executed NOTEBOOK.ipynb]``

Converts ``explore_conv2d_backprop_input.py`` (jupytext percent format) to a
notebook, runs it top to bottom in a ``python3`` kernel of this interpreter
with ``JCB_NOTEBOOK_FIGURES=FOLDER`` (default ``docs/img``), so the PNGs come
from the very cells a reader runs. ``--executed`` also writes the notebook
with its outputs (for viewing; it is not committed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOK = HERE / "explore_conv2d_backprop_input.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "docs" / "img"), help="where the PNGs go")
    parser.add_argument("--executed", help="also write the executed notebook (with outputs) here")
    args = parser.parse_args()

    folder = Path(args.folder).resolve()
    os.environ["JCB_NOTEBOOK_FIGURES"] = str(folder)
    # The kernel imports the package from this checkout even when it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    nb = jupytext.read(NOTEBOOK)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(HERE)}}).execute()
    print(f"executed {NOTEBOOK.name} in {time.perf_counter() - start:.1f} s")
    for png in sorted(folder.glob("*.png")):
        print(f"  {png}")
    if args.executed:
        nbformat.write(nb, args.executed)
        print(f"executed notebook: {args.executed}")


if __name__ == "__main__":
    sys.exit(main())

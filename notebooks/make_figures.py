"""Execute the notebooks and save their pictures (``make notebook-png``).

Usage: ``python notebooks/make_figures.py [FOLDER] [--executed FOLDER]``

Converts each notebook (jupytext percent format) to an ``.ipynb``, runs it top
to bottom in a ``python3`` kernel of this interpreter with
``JCB_NOTEBOOK_FIGURES=FOLDER`` (default ``docs/img``), so the PNGs come from
the very cells a reader runs. ``--executed`` also writes the notebooks with
their outputs into that folder (for viewing; they are not committed).
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
NOTEBOOKS = (HERE / "explore_conv2d_backprop_input.py", HERE / "port_mindspore_model.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "docs" / "img"), help="where the PNGs go")
    parser.add_argument("--executed", help="also write the executed notebooks (with outputs) into this folder")
    args = parser.parse_args()

    folder = Path(args.folder).resolve()
    os.environ["JCB_NOTEBOOK_FIGURES"] = str(folder)
    # The kernel imports the package from this checkout even when it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    for notebook in NOTEBOOKS:
        nb = jupytext.read(notebook)
        start = time.perf_counter()
        NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(HERE)}}).execute()
        print(f"executed {notebook.name} in {time.perf_counter() - start:.1f} s")
        if args.executed:
            Path(args.executed).mkdir(parents=True, exist_ok=True)
            target = Path(args.executed) / f"{notebook.stem}.ipynb"
            nbformat.write(nb, target)
            print(f"executed notebook: {target}")
    for png in sorted(folder.glob("*.png")):
        print(f"  {png}")


if __name__ == "__main__":
    sys.exit(main())

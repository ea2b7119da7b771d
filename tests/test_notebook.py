"""Execute the exploration notebook top to bottom; any cell error fails the test.

The notebook lives in jupytext percent format (``notebooks/*.py``). It is
converted with jupytext and run by nbclient in a ``python3`` kernel of this
interpreter, inside a temporary folder, with every place a kernel or matplotlib
would write to (IPython history, Jupyter runtime files, matplotlib's cache)
redirected there. The notebook asserts its own results (against the op's
definition, ``jax.vjp`` of ``lax.conv_general_dilated`` and finite differences),
so a wrong number is a cell error too.

Skipped, with the reason, only when the ``notebook`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_conv2d_backprop_input.py"
BUDGET_S = 120.0  # the whole execution, kernel start included

_EXTRA = ("nbclient", "nbformat", "jupytext", "ipykernel", "matplotlib")
_MISSING = [name for name in _EXTRA if importlib.util.find_spec(name) is None]

pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the notebook extra is not installed (missing {', '.join(_MISSING)}): pip install -e '.[notebook]'",
)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run the kernel in ``tmp_path`` with every write it would make kept there."""
    monkeypatch.chdir(tmp_path)
    for var in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "MPLCONFIGDIR"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("JCB_NOTEBOOK_FIGURES", raising=False)  # pictures are shown, never saved
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return tmp_path


def test_notebook_executes_top_to_bottom(sandbox):
    import jupytext
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    # "python3" must resolve to this interpreter (ipykernel's native kernel), not another Python.
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert (
        spec.argv[0] in {sys.executable, "python", "python3"}
        or Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    ), f"kernel python3 runs {spec.argv[0]}, not {sys.executable}"

    nb = jupytext.read(NOTEBOOK)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code_cells) >= 8, "the notebook lost its cells"

    deadline = time.monotonic() + BUDGET_S
    client = NotebookClient(
        nb,
        kernel_name="python3",
        startup_timeout=60,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(sandbox)}},
        allow_errors=False,
    )
    start = time.monotonic()
    client.execute()  # raises CellExecutionError on any cell error, CellTimeoutError past the budget
    print(f"notebook executed in {time.monotonic() - start:.1f} s")

    # Every code cell ran, and the cells that draw produced pictures.
    assert all(cell.get("execution_count") for cell in code_cells)
    images = sum(1 for cell in code_cells for output in cell.outputs if "image/png" in output.get("data", {}))
    assert images >= 4, f"expected at least 4 pictures, got {images}"
    assert not list(sandbox.glob("*.png")), "the notebook wrote pictures although JCB_NOTEBOOK_FIGURES is unset"

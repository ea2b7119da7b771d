"""Sphinx configuration of the documentation site (``make docs``; sources in this folder).

MyST Markdown pages, the API reference generated from the public docstrings
(autodoc + napoleon, Google style), and the two notebooks of ``notebooks/``
(jupytext percent format) rendered by myst-nb with their outputs. The build is
offline: no intersphinx, no remote assets.
"""

from __future__ import annotations

import filecmp
import inspect
import os
import shutil
import sys
from pathlib import Path

from sphinx.util.inspect import stringify_signature

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, also when it is not installed

import jax_conv_bpi  # noqa: E402

project = "jax_conv_bpi"
author = "The jax_conv_bpi authors"
copyright = "the jax_conv_bpi authors, Apache-2.0"
release = jax_conv_bpi.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # brings myst_parser with it
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx-mathjax-offline",  # MathJax served from the site itself, not from a CDN
]

exclude_patterns = ["_build", "conf.py", "Thumbs.db", ".DS_Store"]
root_doc = "index"
nitpicky = True
# Annotations name types of other projects (no intersphinx offline) and private helper aliases;
# the cross-references checked are the ones to this project's pages and entries.
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jaxlib|numpy|np|jnp|flax|nnx|optax|collections|typing|os|pathlib)(\..*)?"),
    ("py:.*", r"(Any|Sequence|Mapping|Callable|Iterable|Init|DTypeLike|ArrayLike|Array|PathLike|Path)"),
    ("py:.*", r"_.*|.*\._.*"),
]

# MyST: Markdown pages with `{directive}` fences; heading anchors for in-page links like (#errors).
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath"]
myst_heading_anchors = 3

# The notebooks: each notebooks/*.py (jupytext percent format) is copied to docs/notebooks/ (gitignored)
# when it changed, and executed by myst-nb; outputs are cached in _build/.jupyter_cache.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "cache"
nb_execution_timeout = 300  # seconds per cell
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_excludepatterns: list[str] = []


def _golden_dir() -> Path | None:
    """The porting notebook's rule: ``$JCB_GOLDEN_DIR``, else ``shared/golden`` in or beside the checkout."""
    if os.environ.get("JCB_GOLDEN_DIR"):
        return Path(os.environ["JCB_GOLDEN_DIR"])
    for candidate in (ROOT / "shared" / "golden", ROOT.parent / "shared" / "golden"):
        if candidate.is_dir():
            return candidate
    return None


def _copy_notebooks() -> None:
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    for source in sorted((ROOT / "notebooks").glob("*.py")):
        if source.name == "make_figures.py":
            continue
        copy = target / source.name
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            shutil.copy2(source, copy)


_copy_notebooks()
GOLDEN = _golden_dir()
if GOLDEN is None or not (GOLDEN / "networks" / "dcgan_g").is_dir():
    # A checkout without MindSpore's golden files: the porting notebook is rendered without outputs.
    nb_execution_excludepatterns.append("notebooks/port_mindspore_model.py")

# autodoc: one entry per public name (api.md lists them); Google-style sections through napoleon.
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = f"jax_conv_bpi {release}"
html_static_path = ["_static"]
html_logo = "_static/logo.svg"
html_favicon = "_static/logo.svg"
html_css_files = ["custom.css"]
toc_object_entries_show_parents = "hide"  # the page contents list entries by their short names
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None
html_show_sourcelink = False


def _nnx_signature(app, what, name, obj, options, signature, return_annotation):
    """Flax NNX modules are built through their metaclass's ``__call__(*args, **kwargs)``: show ``__init__``'s."""
    if what != "class" or not isinstance(obj, type) or not type(obj).__module__.startswith("flax"):
        return None
    sig = inspect.signature(obj.__init__)
    params = [
        # a class as a default (dtype=jnp.float32) under its import name, not its repr
        p.replace(default=_Expression(f"{p.default.__module__}.{p.default.__qualname__}"))
        if isinstance(p.default, type) and p.default is not inspect.Parameter.empty
        else p
        for p in list(sig.parameters.values())[1:]  # without self
    ]
    return stringify_signature(sig.replace(parameters=params), show_return_annotation=False), None


class _Expression:
    """A default value shown as the given source text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _separate_examples(app, what, name, obj, options, lines):
    """An indented ``>>>`` example right under its introducing sentence gets a blank line before it.

    The docstrings introduce some examples with a sentence ending in a colon and no blank line
    (``Other names (...):`` then the indented doctest); reStructuredText wants one there.
    """
    i = 1
    while i < len(lines):
        line, before = lines[i], lines[i - 1]
        indent = len(line) - len(line.lstrip())
        if (
            line.lstrip().startswith(">>>")
            and before.strip()
            and not before.lstrip().startswith((">>>", "..."))
            and indent > len(before) - len(before.lstrip())
        ):
            lines.insert(i, "")
            i += 1
        i += 1


def setup(app):
    app.connect("autodoc-process-signature", _nnx_signature)
    app.connect("autodoc-process-docstring", _separate_examples)

"""Check the built documentation site in headless Chromium (``make docs-check``).

Usage: ``python scripts/docs_check.py [SITE] [SCREENSHOTS]`` (defaults ``docs/_build/html`` and
``docs/_build/screenshots``).

Chromium (Debian's ``chromium`` package, or ``$CHROMIUM``) opens three pages of the built site as
``file://`` URLs: the home page, the API reference entry of ``conv_transpose`` and the rendered
exploration notebook. For each it dumps the DOM after the page's scripts ran (``--dump-dom``) and
checks that it rendered: the page title and heading, a code block and an image whose file is a
real picture (on the notebook page, an image among the cells' outputs), then saves a screenshot
(``--screenshot``) and checks that it is not blank. Exit status 1 names every failed check.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup, Tag

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class Page:
    name: str  # the screenshot's file name, without .png
    path: str  # in the site, with an optional #fragment
    title: str  # the <title> starts with it
    heading: str  # the page's first <h1> contains it
    images: str  # CSS selector of the image that must be there
    code: str  # CSS selector of the code block that must be there
    scope: str | None = None  # id of the element the code block must be inside (an API entry)
    shot: str | None = None  # the page the screenshot shows, when not ``path``
    height: int = 1600  # of the screenshot's window, 1280 pixels wide


PAGES = (
    Page(
        "home",
        "index.html",
        title="jax_conv_bpi",
        heading="jax_conv_bpi",
        images="article img[src*='pad_modes']",
        code="article div.highlight pre",
    ),
    Page(
        "api_conv_transpose",
        "api.html#jax_conv_bpi.conv_transpose",
        title="API reference",
        heading="API reference",
        images="img.logo__image",
        code="div.highlight pre, pre.doctest-block",
        scope="jax_conv_bpi.conv_transpose",
        # Headless Chromium paints a page scrolled to a #fragment offset by the scroll in its
        # screenshot (blank above); conv_transpose is the first entry, on the page's first screen.
        shot="api.html",
    ),
    Page(
        "notebook_explore",
        "notebooks/explore_conv2d_backprop_input.html",
        title="Exploring",
        heading="Exploring",
        images="div.cell_output img",
        code="div.cell_input div.highlight pre",
        height=4900,  # down to the first plot (the pad modes)
    ),
)


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise SystemExit(
        "docs-check: no Chromium found. Install Debian's package (apt-get install chromium, as root), "
        "or set CHROMIUM to a Chromium or Chrome binary."
    )


def chromium(binary: str, profile: str, *args: str) -> str:
    """Run headless Chromium with ``args``; its stdout."""
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",  # let the theme's scripts run before the DOM is dumped
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def is_picture(path: Path) -> bool:
    """A non-empty PNG, JPEG or SVG file."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    head = path.read_bytes()[:512]
    return head.startswith((b"\x89PNG", b"\xff\xd8")) or b"<svg" in head


def local_file(page_url: str, src: str) -> Path:
    """The file an ``<img src>`` of a ``file://`` page points to."""
    base = Path(unquote(urlsplit(page_url).path)).parent
    return (base / unquote(urlsplit(src).path)).resolve()


def screenshot_is_blank(png: Path) -> bool:
    """True when almost every pixel has one colour (a page that did not paint)."""
    import matplotlib.image  # the docs extra brings matplotlib (the notebooks' plots)

    pixels = matplotlib.image.imread(str(png))[..., :3].reshape(-1, 3)
    background = pixels[0]
    differs = (abs(pixels - background).sum(axis=1) > 0.05).mean()
    return differs < 0.01


def page_url(site: Path, path: str) -> str:
    """The ``file://`` URL of ``path`` (with an optional ``#fragment``) in the built site."""
    file, _, fragment = path.partition("#")
    return (site / file).resolve().as_uri() + (f"#{fragment}" if fragment else "")


def check_page(binary: str, profile: str, site: Path, shots: Path, page: Page) -> list[str]:
    url = page_url(site, page.path)
    problems = []
    dom = BeautifulSoup(chromium(binary, profile, "--dump-dom", url), "html.parser")

    title = dom.title.get_text(strip=True) if dom.title else ""
    if not title.startswith(page.title):
        problems.append(f"title {title!r} does not start with {page.title!r}")
    h1 = dom.find("h1")
    if h1 is None or page.heading not in h1.get_text():
        problems.append(f"no <h1> containing {page.heading!r} (first h1: {h1.get_text(strip=True) if h1 else None!r})")

    scope: Tag | BeautifulSoup = dom
    if page.scope is not None:
        dt = dom.find(id=page.scope)
        if dt is None or dt.parent is None:
            problems.append(f"no element with id {page.scope!r}")
        else:
            scope = dt.parent  # the <dl> of the entry: its signature (dt) and its description (dd)
    blocks = [pre for pre in scope.select(page.code) if pre.get_text(strip=True)]
    if not blocks:
        problems.append(f"no non-empty code block ({page.code}) in {page.scope or 'the page'}")

    images = dom.select(page.images)
    if not images:
        problems.append(f"no image ({page.images})")
    for img in images:
        src = str(img.get("src", ""))
        if src.startswith("data:image/"):
            continue
        if not is_picture(local_file(url, src)):
            problems.append(f"image {src!r} is not a picture file")

    shots.mkdir(parents=True, exist_ok=True)
    png = shots / f"{page.name}.png"
    png.unlink(missing_ok=True)
    chromium(
        binary,
        profile,
        f"--screenshot={png}",
        f"--window-size=1280,{page.height}",
        page_url(site, page.shot or page.path),
    )
    if not png.is_file():
        problems.append(f"no screenshot was written to {png}")
    elif screenshot_is_blank(png):
        problems.append(f"the screenshot {png} is blank")
    status = "ok" if not problems else "FAILED"
    print(f"{status:6} {page.path}: title {title!r}, {len(blocks)} code block(s), {len(images)} image(s) -> {png}")
    return [f"{page.path}: {p}" for p in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built documentation site in headless Chromium.")
    parser.add_argument("site", nargs="?", default=str(ROOT / "docs" / "_build" / "html"))
    parser.add_argument("screenshots", nargs="?", default=str(ROOT / "docs" / "_build" / "screenshots"))
    args = parser.parse_args(argv)
    site, shots = Path(args.site), Path(args.screenshots)
    if not (site / "index.html").is_file():
        parser.error(f"no built site in {site} (run make docs first)")
    binary = find_chromium()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="jcb-docs-check-") as profile:
        for page in PAGES:
            problems += check_page(binary, profile, site, shots, page)
    for problem in problems:
        print(f"docs-check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

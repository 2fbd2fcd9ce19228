"""Shared helpers for the core tests; the server fixtures come from `stablecore.testing`."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import PIL.Image
import pytest

from stablecore.testing import install_private

TEST_PLUGINS = Path(__file__).parent / "plugins"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session", autouse=True)
def test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test plugins, installed into a folder that only the test servers see (PYTHONPATH),
    never into the environment `make run` serves."""
    target = install_private(TEST_PLUGINS, tmp_path_factory.mktemp("testplugins") / "site")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), old]))
    yield target
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture
def png(tmp_path: Path) -> Path:
    """A small RGB PNG on disk."""
    path = tmp_path / "in.png"
    PIL.Image.new("RGB", (16, 8), (10, 200, 30)).save(path)
    return path


def png_bytes(size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", size, (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Debian Chromium for every browser test (Playwright drives it; it is never
    downloaded by `playwright install`), with generous waits for a loaded CI machine."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium (.ci/apt-packages.txt)")
    sync_api.expect.set_options(timeout=30_000)  # an upper bound, never a timing assert
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()

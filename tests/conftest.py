"""Shared fixtures: real photographs that installed packages ship, and the command runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The real video clip lives beside the repository (../shared/media); KMQ_MEDIA names another folder.
SHARED_MEDIA = Path(os.environ.get("KMQ_MEDIA") or REPO.parent / "shared" / "media")


# Debian's Chromium (scripts/system-deps.sh installs it), never a browser Playwright downloads.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def launch_chromium(playwright):
    """Headless Debian Chromium through a Playwright instance; a skip when it is not installed."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/system-deps.sh installs it)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def _grace_hopper() -> np.ndarray:
    from kmq.media.demo import demo_photo_path
    from kmq.media.images import load_image

    return load_image(demo_photo_path())


def _skimage(name: str):
    data = pytest.importorskip("skimage.data")
    return lambda: getattr(data, name)()


def _sklearn(name: str):
    def load() -> np.ndarray:
        datasets = pytest.importorskip("sklearn.datasets")
        return datasets.load_sample_image(name)

    return load


PHOTOS = {
    "grace_hopper": _grace_hopper,
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (Grace Hopper, 512×600, shipped by matplotlib)."""
    return _grace_hopper()


@pytest.fixture(scope="session", params=sorted(PHOTOS))
def any_photo(request) -> np.ndarray:
    """Each of several real photographs that installed packages ship."""
    return PHOTOS[request.param]()


@pytest.fixture
def photo_file(tmp_path, photo) -> Path:
    """The real photograph saved as a PNG in a temporary folder."""
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    return path


def run_kmq(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``kmq`` command in a child process, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kmq", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, folder: Path, before: set[str]) -> None:
    """Bad input: exit code 2, one ``error:`` line, no traceback, and the folder left as it was."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name for p in folder.iterdir()} == before, "a partial output was left behind"


@pytest.fixture(scope="session")
def shared_clip() -> Path:
    """The real video clip in ../shared/media (or $KMQ_MEDIA), or a skip with the reason."""
    clip = SHARED_MEDIA / "bbb-480p-10s.mp4"
    if not clip.is_file():
        pytest.skip(f"shared media clip not present at {clip}")
    return clip

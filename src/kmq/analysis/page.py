"""The report folder and its one self-contained HTML page: layout, inlined figures, files on disk."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmq.errors import OutputError

__all__ = ["figure_html", "finite", "format_number", "page_html", "prepare_folder", "save_report"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1280px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 1em 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; } td.method, th.method { text-align: left; white-space: nowrap; }
tr.first td { border-top: 2px solid #bbb; } td.best { font-weight: bold; color: #0a5; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
.finding { background: #f6fbf4; border-left: 4px solid #4a4; padding: 0.5em 1em; }
.warning { background: #fff8e6; border-left: 4px solid #d90; padding: 0.5em 1em; } dt { font-weight: bold; }
"""


def finite(value: Any) -> Any:
    """A copy of nested dicts and lists with infinities and NaN as None: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def format_number(value: Any, digits: int) -> str:
    """A table cell: a dash for no value, "∞ (lossless)" for an infinite PSNR, else grouped digits."""
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (lossless)"
    return f"{value:,.{digits}f}"


def figure_html(images: dict[str, bytes], key: str, alt: str, caption: str) -> str:
    """A ``<figure>`` with the PNG ``images[key]`` inlined as a data URI (empty when absent)."""
    if key not in images:
        return ""
    encoded = base64.b64encode(images[key]).decode("ascii")
    picture = f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def page_html(title: str, body: str) -> str:
    """A whole HTML document: inline style, no scripts, nothing fetched from elsewhere."""
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def prepare_folder(folder: Path) -> None:
    """Create the report folder with its ``figures`` and ``coded`` subfolders."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "figures").mkdir(exist_ok=True)
        (folder / "coded").mkdir(exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write the report into {folder}: a file is in the way") from None
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None


def save_report(
    folder: Path,
    files: dict[str, str],
    images: dict[str, bytes],
    render: Callable[[], str],
    summary: Callable[[], dict[str, Any]],
) -> None:
    """Write ``figures/NAME.png``, ``report.html`` and ``report.json``, recording each in ``files``.

    ``render`` and ``summary`` are called after ``files`` lists the figures, so the page and the
    JSON can name them; every file is written atomically and replaces an earlier report's.
    """
    from kmq.media.files import write_bytes_atomic

    for name, data in images.items():
        path = folder / "figures" / f"{name}.png"
        write_bytes_atomic(path, data, force=True)
        files[name] = str(path)
    files["report"] = str(folder / "report.html")
    files["json"] = str(folder / "report.json")
    write_bytes_atomic(folder / "report.html", render().encode("utf-8"), force=True)
    write_bytes_atomic(folder / "report.json", json.dumps(finite(summary()), indent=2).encode("utf-8"), force=True)

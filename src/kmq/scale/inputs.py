"""Batch inputs: files, folders and globs expanded into (input, output) pairs that mirror the input tree."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kmq.errors import InputError

__all__ = ["BatchItem", "image_suffixes", "plan_batch"]

OUTPUT_SUFFIXES = {"kmq": ".kmq", "png": ".png"}


@dataclass(frozen=True)
class BatchItem:
    """One file of a batch: where it is read from and where its output goes.

    Attributes
    ----------
    input : str
        Absolute path of the image.
    output : str
        Absolute path of the output, inside the output folder.
    relative : str
        The output's path relative to the output folder (POSIX separators), as the manifest records it.
    size : int
        Bytes of the input when the batch was planned.
    """

    input: str
    output: str
    relative: str
    size: int


def image_suffixes() -> frozenset[str]:
    """File suffixes (lower case, with the dot) of the image formats Pillow can read."""
    from PIL import Image

    Image.init()
    return frozenset(suffix for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def plan_batch(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *, format: str = "kmq") -> list[BatchItem]:
    """Expand batch inputs and give each image an output path under ``outdir``.

    A folder contributes every image below it (recursively, hidden files and ``outdir`` left
    out); a glob (``*``, ``?``, ``[...]``, ``**``) every match; a file itself. Outputs mirror
    the input tree below the deepest folder common to all inputs, with the suffix of
    ``format`` (``a/b.jpg`` becomes ``OUTDIR/a/b.kmq``). Two inputs that would share an output
    (``b.jpg`` and ``b.png``) keep their full names (``b.jpg.kmq``, ``b.png.kmq``).

    Parameters
    ----------
    inputs : sequence of path-like
        Files, folders or glob patterns.
    outdir : path-like
        The output folder (it need not exist yet).
    format : {"kmq", "png"}
        Output format, which sets the output suffix.

    Returns
    -------
    list of BatchItem
        One item per distinct input file, in the order given (folders and globs sorted).

    Raises
    ------
    kmq.errors.InputError
        An input that matches nothing, or no image at all.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "photos" / "2024").mkdir(parents=True)
    >>> _ = (root / "photos" / "2024" / "a.jpg").write_bytes(b"")
    >>> [item.relative for item in plan_batch([root / "photos"], root / "out")]
    ['2024/a.kmq']
    """
    if format not in OUTPUT_SUFFIXES:
        raise InputError(f"format must be one of {', '.join(OUTPUT_SUFFIXES)}; got {format!r}")
    if not inputs:
        raise InputError("no inputs given")
    out_root = Path(os.path.abspath(outdir))
    suffixes = image_suffixes()
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for pattern in inputs:
        matches = list(_expand(str(pattern), out_root, suffixes))
        if not matches:
            raise InputError(f"{pattern}: no such file or folder, and no image matches it")
        for path, base in matches:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append((path, base))
    files = [path for path, _ in found]
    if not files:
        raise InputError(f"no images found in {', '.join(str(p) for p in inputs)}")
    common = Path(os.path.commonpath([str(base) for _, base in found]))
    relatives = _output_names([path.relative_to(common) for path in files], OUTPUT_SUFFIXES[format])
    return [
        BatchItem(input=str(path), output=str(out_root / relative), relative=relative.as_posix(), size=_size(path))
        for path, relative in zip(files, relatives)
    ]


def _expand(pattern: str, out_root: Path, suffixes: frozenset[str]) -> Iterator[tuple[Path, Path]]:
    """Yield (file, base folder) for one input; outputs mirror the tree below the base."""
    path = Path(os.path.abspath(pattern))
    if path.is_dir():
        if os.path.realpath(path) == os.path.realpath(out_root):
            raise InputError(f"the output folder {out_root} is also an input folder; choose another output folder")
        yield from ((file, path) for file in _walk_images(path, out_root, suffixes))
    elif path.is_file():
        yield path, path.parent
    elif glob.has_magic(pattern):
        base = _glob_base(path)
        for match in sorted(glob.glob(str(path), recursive=True)):
            matched = Path(match)
            if matched.is_dir():
                yield from ((file, base) for file in _walk_images(matched, out_root, suffixes))
            elif matched.is_file() and not _inside(matched, out_root):
                yield matched, base


def _glob_base(pattern: Path) -> Path:
    """The folder of a glob above its first wildcard: ``/p/**/*.jpg`` gives ``/p``."""
    parts = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts)


def _walk_images(folder: Path, out_root: Path, suffixes: frozenset[str]) -> Iterator[Path]:
    out_real = os.path.realpath(out_root)
    for root, dirs, names in os.walk(folder, followlinks=False):
        # the output folder may sit inside an input folder; its files are never inputs
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != out_real)
        for name in sorted(names):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                yield Path(root) / name


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def _output_names(relatives: Iterable[Path], suffix: str) -> list[Path]:
    relatives = list(relatives)
    plain = [relative.with_suffix(suffix) for relative in relatives]
    counts: dict[Path, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    return [
        name if counts[name] == 1 else relative.with_name(relative.name + suffix) for name, relative in zip(plain, relatives)
    ]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

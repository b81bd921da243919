"""The batch manifest, OUTDIR/manifest.csv: one row per input, appended as results arrive and kill-safe."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TextIO

from kmq.errors import InputError
from kmq.media.files import atomic_output

__all__ = ["COLUMNS", "ManifestRow", "ManifestWriter", "read_manifest"]

MANIFEST_NAME = "manifest.csv"

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class ManifestRow:
    """What happened to one input of a batch.

    Attributes
    ----------
    input : str
        Absolute path of the input image.
    output : str
        The output's path relative to the output folder.
    status : {"ok", "skipped", "failed"}
        Compressed by this run, found complete by ``--resume`` (the row of the run that wrote it),
        or failed with ``error``.
    k : int
        Requested palette size.
    format : {"kmq", "png"}
        Output format.
    width, height : int
        Pixels (0 when the input could not be read).
    bytes_in, bytes_out : int
        Sizes of the input and the output files.
    bits_per_pixel : float
        Output bits per pixel.
    psnr : float
        PSNR of the quantized image against the input in dB (``inf`` when identical).
    seconds : float
        Time spent on the file by a worker (reading, quantizing, coding, writing).
    input_sha256, output_sha256 : str
        Content hashes, used by ``--resume`` to trust an existing output.
    error : str
        Why the file failed; empty otherwise.
    """

    input: str
    output: str
    status: str
    k: int
    format: str
    width: int = 0
    height: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bits_per_pixel: float = 0.0
    psnr: float = 0.0
    seconds: float = 0.0
    input_sha256: str = ""
    output_sha256: str = ""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        """The output exists and is complete (compressed now or earlier)."""
        return self.status in (STATUS_OK, STATUS_SKIPPED)

    def to_record(self) -> list[str]:
        """The row as CSV fields, in :data:`COLUMNS` order."""
        values = asdict(self)
        record = []
        for column in COLUMNS:
            value = values[column]
            if isinstance(value, float):
                value = "inf" if math.isinf(value) else f"{value:.6g}"
            record.append(str(value))
        return record

    @classmethod
    def from_record(cls, record: dict[str, str]) -> ManifestRow:
        """Parse a CSV row (a dict keyed by column name)."""
        values: dict[str, object] = {}
        for field in fields(cls):
            text = record.get(field.name) or ""
            if field.type == "int":
                values[field.name] = int(text or 0)
            elif field.type == "float":
                values[field.name] = float(text or 0)
            else:
                values[field.name] = text
        return cls(**values)  # type: ignore[arg-type]

    def skipped(self) -> ManifestRow:
        """This row as ``--resume`` reports it: the output was already there."""
        return replace(self, status=STATUS_SKIPPED)


COLUMNS = tuple(field.name for field in fields(ManifestRow))


def read_manifest(path: str | os.PathLike) -> dict[str, ManifestRow]:
    """Read a manifest; the last row of each input wins.

    A final line cut short by a kill (no line end) is ignored, so a manifest survives being
    interrupted while a row was being appended.

    Parameters
    ----------
    path : path-like
        The manifest file; a missing file reads as empty.

    Returns
    -------
    dict
        Input path -> its latest :class:`ManifestRow`.

    Raises
    ------
    kmq.errors.InputError
        The file is not a kmq batch manifest.
    """
    source = Path(path)
    try:
        with open(source, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest {source}: {exc}") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if text and tuple(reader.fieldnames or ()) != COLUMNS:
        raise InputError(f"{source} is not a kmq batch manifest (its columns are {reader.fieldnames})")
    rows: dict[str, ManifestRow] = {}
    for line, record in enumerate(reader, start=2):
        try:
            row = ManifestRow.from_record(record)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}, line {line}: not a manifest row ({exc})") from None
        rows[row.input] = row
    return rows


class ManifestWriter:
    """Write a manifest that is valid whenever the run is killed.

    On opening, the file is rewritten atomically with the rows carried over from earlier runs;
    each new row is then appended and flushed as one write; :meth:`close` rewrites it atomically
    once more with one row per input. A kill at any moment leaves the old file, the new one, or
    the new one with at most a cut-off last line, which :func:`read_manifest` ignores.

    Parameters
    ----------
    path : path-like
        The manifest file.
    carried : iterable of ManifestRow
        Rows of earlier runs to keep.
    """

    def __init__(self, path: str | os.PathLike, carried: Iterable[ManifestRow] = ()) -> None:
        self.path = Path(path)
        self.rows: dict[str, ManifestRow] = {row.input: row for row in carried}
        self._write_all(self.rows.values())
        self._stream: TextIO | None = open(self.path, "a", encoding="utf-8", newline="")

    def append(self, row: ManifestRow) -> None:
        """Record one row: append it to the file and flush."""
        self.rows[row.input] = row
        if self._stream is None:
            raise ValueError("the manifest is closed")
        self._stream.write(_csv_line(row.to_record()))
        self._stream.flush()

    def close(self, order: Iterable[str] = ()) -> None:
        """Rewrite the manifest with one row per input: those of ``order`` first, then the others."""
        if self._stream is None:
            return
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._stream = None
        ordered = [self.rows[name] for name in dict.fromkeys(order) if name in self.rows]
        listed = {row.input for row in ordered}
        ordered += [row for name, row in self.rows.items() if name not in listed]
        self._write_all(ordered)

    def _write_all(self, rows: Iterable[ManifestRow]) -> None:
        with atomic_output(self.path, force=True) as stream:
            stream.write(_csv_line(COLUMNS).encode())
            for row in rows:
                stream.write(_csv_line(row.to_record()).encode())

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(self.rows)


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(list(values))
    return buffer.getvalue()

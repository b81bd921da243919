"""``kmq live --record``: every packet the live encoder makes, kept as a .kmqv file as it streams."""

from __future__ import annotations

import os
import threading

from kmq.codec.video import KmqvWriter, StreamHeader
from kmq.errors import OutputError
from kmq.media.files import check_output

__all__ = ["Recorder"]

#: Flush to the file at least this often (frames), so a killed server leaves a readable prefix.
FLUSH_EVERY = 30


class Recorder:
    """Writes the live stream to a .kmqv file frame by frame.

    The file is written in place, not renamed at the end: if the server is killed, what was
    written up to the last flush can still be read (``kmq video decode --salvage``). A clean stop
    closes it with its keyframe index and end record.

    Parameters
    ----------
    path : path-like
        The .kmqv file.
    header : StreamHeader
        The stream's header.
    force : bool
        Replace an existing file.
    """

    def __init__(self, path: str | os.PathLike, header: StreamHeader, *, force: bool = False) -> None:
        self.path = check_output(path, force=force)
        try:
            self._file = open(self.path, "wb" if force else "xb")  # noqa: SIM115 (closed by close())
        except FileExistsError:
            raise OutputError(f"output {self.path} exists (use --force to replace it)") from None
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._writer = KmqvWriter(self._file, header)
        self._lock = threading.Lock()
        self._closed = False
        self.frames = 0

    def write(self, packet: bytes, *, number: int, pts: int, keyframe: bool) -> None:
        """Append one frame packet."""
        with self._lock:
            if self._closed:
                return
            try:
                self._writer.write_packet(packet, number=number, pts=pts, keyframe=keyframe)
                self.frames += 1
                if self.frames % FLUSH_EVERY == 0:
                    self._file.flush()
            except OSError as exc:
                self._closed = True
                self._file.close()
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> int:
        """Finish the file (keyframe index and end record); return its size in bytes."""
        with self._lock:
            if self._closed:
                return self._writer.bytes_written
            self._closed = True
            try:
                size = self._writer.finish()
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            finally:
                self._file.close()
            return size

    @property
    def bytes_written(self) -> int:
        """Bytes written so far."""
        return self._writer.bytes_written

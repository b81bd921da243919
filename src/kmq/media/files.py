"""Safe file output: write to a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kmq.errors import InputError, LimitError, OutputError

__all__ = ["atomic_output", "check_output", "read_input_bytes", "write_bytes_atomic"]


def check_output(path: str | os.PathLike, *, force: bool = False, inputs: tuple = ()) -> Path:
    """Refuse an output that exists (unless ``force``) or that is one of the inputs.

    Parameters
    ----------
    path : path-like
        The output the caller is about to write.
    force : bool
        Allow replacing an existing file.
    inputs : tuple of path-like
        Inputs of the same command; an output may never replace one of them.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    for source in inputs:
        if _same_file(out, Path(source)):
            raise OutputError(f"output {out} is the input file; refusing to overwrite an input")
    if out.is_dir():
        raise OutputError(f"output {out} is a directory")
    if out.exists() and not force:
        raise OutputError(f"output {out} exists (use --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False, inputs: tuple = ()) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` only on success.

    A failure or an interruption inside the ``with`` block leaves no partial output:
    the temporary file is removed and an existing file at ``path`` is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_output(target) as stream:
    ...     _ = stream.write(b"kmq")
    >>> target.read_bytes()
    b'kmq'
    """
    out = check_output(path, force=force, inputs=inputs)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if out.exists() and not force:
            raise OutputError(f"output {out} appeared while writing (use --force to replace it)")
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, force: bool = False, inputs: tuple = ()) -> int:
    """Write ``data`` to ``path`` atomically; return the number of bytes written."""
    with atomic_output(path, force=force, inputs=inputs) as stream:
        stream.write(data)
    return len(data)


def read_input_bytes(path: str | os.PathLike, *, limit: int | None = None) -> bytes:
    """Read a whole input file, with one clear error for a missing or unreadable path.

    Parameters
    ----------
    path : path-like
        File to read.
    limit : int, optional
        Refuse files larger than this many bytes.
    """
    source = Path(path)
    try:
        size = source.stat().st_size
        if source.is_dir():
            raise InputError(f"{source} is a directory, not a file")
        if limit is not None and size > limit:
            raise LimitError(f"{source} is {size} bytes, above the limit of {limit}")
        return source.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{source} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None

"""One way to replace a file so that a crash leaves either the old or the new content, never a torn one:
write a temp file beside it, fsync, rename, fsync the folder. Serves the privacy ledger, the preprocessing
cache and checkpoints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, durable: bool = True) -> Path:
    """Write through `write(handle)` (a binary file) and move the result into place atomically. `durable=False`
    skips the fsyncs (a process crash still leaves old or new content; a power cut may leave an empty file),
    for data that can be made again, such as a cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), durable=durable)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on every platform, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Atomic file writes: write to a temp file in the same folder, then rename.

Nothing half-written is ever left at the destination path, even when the writer raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atft.errors import InputError, OutputError


def _cannot_write(dest: Path, what: str, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {what} {dest}: {reason}. Fix: choose a writable location with free space "
                      "(a directory you own, not a read-only file system) or free some space.")


def check_writable(dest: str | os.PathLike[str], what: str = "the output") -> Path:
    """Before any work: ``dest`` can be written (its folder, or the folder it would be created in,
    takes a small file) and is not a directory. Creates nothing.

    Raises:
        InputError: a directory where a file is wanted, or a folder that cannot be written (a
            read-only file system, no permission, no space), named with the fix.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"{what} {dest} is a directory. Fix: name a file inside it, e.g. {dest / 'out'}"
                         f"{dest.suffix or ''}.")
    _probe(dest.parent, dest, what)
    return dest


def _probe(folder: Path, shown: Path, what: str) -> None:
    """Write and remove a small temp file in ``folder``, or in its nearest existing ancestor when
    it does not exist yet (nothing is created: a failed command leaves no empty folders), or
    raise naming ``shown``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file, not a directory")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".atft_probe_"):
            pass
    except OSError as exc:
        raise _cannot_write(shown, what, exc) from None


def check_writable_dir(folder: str | os.PathLike[str], what: str) -> Path:
    """Before any work: the folder ``folder`` can be created and written (a small probe file);
    creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file, not a directory. Fix: point it at a directory.")
    _probe(folder, folder, what)
    return folder


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; rename it onto ``dest`` only if the block succeeds.

    An OS error while creating, writing or renaming (read-only file system, no space, no
    permission) is an ``InputError`` naming the destination; the temp file never stays.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise _cannot_write(dest, "the file", exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except OSError as exc:
        if isinstance(exc, IsADirectoryError) or dest.is_dir():
            raise OutputError(f"cannot write {dest}: it is a directory. Fix: name a file instead.") from None
        raise _cannot_write(dest, "the file", exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_paths(dests: list[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """Several files that appear together or not at all: temp paths for each, renamed in the given
    order only after the whole block succeeded (put the file whose presence means "complete"
    last); on any error or interrupt no temp file and no destination of this call remains."""
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(d)) for d in reversed(dests)][::-1]
        yield temps


def json_text(obj: Any, indent: int = 2) -> str:
    """``obj`` as JSON text, NaN written as null (JSON has no NaN)."""
    return json.dumps(_nan_to_none(obj), indent=indent, default=str) + "\n"


def write_json(dest: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON (NaN written as null)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json_text(obj, indent))


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj

"""Private state files: the databases of the node and the agents.

The agent's data store holds raw provider records; the node's database and
the agent's state store hold consents, request ids and the audit log. None
of it is for other local users, so each database file is created 0600
before SQLite opens it (SQLite then creates its ``-wal``, ``-shm`` and
``-journal`` files with the database's own mode), and a party refuses to
start on a file, or a leftover WAL/SHM/journal file, that its group or
others can read or write: a copy or a restore that widened the mode must
be fixed by the operator, not silently served from.

The same check refuses, with one line naming the path, a state directory
the process cannot write (a read-only mount, wrong owner): SQLite would
otherwise fail later with "unable to open database file" or
"attempt to write a readonly database", which names neither.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from xinrong.errors import StoreUnavailable

PRIVATE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def side_files(path: Path) -> list[Path]:
    """The database file and the files SQLite keeps beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)]


def check_private(path: Path, what: str) -> None:
    """Refuse if the database or a side file is group- or world-accessible (or not a file)."""
    for candidate in side_files(path):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreUnavailable(f"{what} {candidate}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreUnavailable(f"{what} {candidate} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise StoreUnavailable(
                f"{what} {candidate} is accessible to group or others (mode {mode:04o}); "
                f"it must be private to this service: chmod 600 {candidate}"
            )


def _not_writable(target: Path, what: str, exc: OSError | None = None) -> StoreUnavailable:
    if (exc is not None and exc.errno == errno.EROFS) or _read_only_fs(target):
        why = "is on a read-only file system"
    else:
        why = "is not writable by this process" + (f" ({exc.strerror})" if exc is not None and exc.strerror else "")
    return StoreUnavailable(f"{what}: {target} {why}; the service must be able to write its state there")


def _read_only_fs(target: Path) -> bool:
    try:
        return bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def prepare_private(path: str | Path, what: str, *, create_dir: bool = False) -> Path:
    """Check (and create) a database file so that SQLite opens a private, writable file.

    ``what`` names the file in messages ("node database"). A missing
    directory is created (0700) only with ``create_dir``. Returns the path.
    """
    path = Path(path)
    directory = path.parent
    if create_dir and not directory.exists():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _not_writable(directory, what, exc) from None
    if not directory.is_dir():
        raise StoreUnavailable(f"{what}: directory {directory} does not exist")
    check_private(path, what)
    # The directory must take new files: SQLite creates -wal / -shm beside the database.
    if _read_only_fs(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise _not_writable(directory, what)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE_MODE)
    except FileExistsError:
        if not os.access(path, os.R_OK | os.W_OK):
            raise _not_writable(path, what) from None
    except OSError as exc:
        raise _not_writable(directory, what, exc) from None
    else:
        os.close(fd)
    return path


__all__ = ["PRIVATE_MODE", "SIDE_FILES", "check_private", "prepare_private", "side_files"]

"""Private and public key files on disk.

A private key readable by group or others is refused on load rather than
silently used: a leaked file mode is how keys leak in practice.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from xinrong.errors import KeyFileError


def refuse_source_tree(directory: str | Path) -> None:
    """Refuse to put key material inside a Python package.

    ``xinrong keys init --dir keys`` run in a checkout once wrote the CA's
    private key into the ``keys/`` source package, where ``git add .`` and a
    wheel build would pick it up. A directory that is a package, or lies
    inside one (an ``__init__.py`` in it or in any ancestor), is never a
    keys directory.
    """
    here = Path(directory).resolve()
    for folder in (here, *here.parents):
        if (folder / "__init__.py").is_file():
            raise KeyFileError(
                f"{directory} is inside the Python package {folder}; "
                "keep keys outside source trees (for example ./run/keys)"
            )


def write_private_file(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write data to path with mode 0600, atomically (temp file + rename)."""
    path = Path(path)
    refuse_source_tree(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def write_public_file(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_private_file(path: str | Path) -> bytes:
    """Read a private key file, refusing it if group or others may read or write it."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"private key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"private key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"private key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            "it must not be accessible by group or others (chmod 600)"
        )
    return path.read_bytes()

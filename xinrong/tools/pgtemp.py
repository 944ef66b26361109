"""A throwaway PostgreSQL server for tests and benchmarks: initdb and pg_ctl on a
temporary directory, a free port on 127.0.0.1, stopped and removed on exit.

The binaries are PostgreSQL 15's (``/usr/lib/postgresql/15/bin``, as the
machine image and ``make`` install them; ``XINRONG_PG_BIN`` overrides).
initdb refuses to run as root, so as root the cluster is created and run as
the ``postgres`` system user (which the Debian package creates), with the
data directory handed to it. Clients connect over TCP with a password, as a
node in production would, never through a socket file.

The server is tuned for a throwaway instance, not for durability tests:
``fsync`` stays on unless ``fast=True`` (tests), so a benchmark pays for the
flushes a real deployment pays for.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (``make`` installs them)."""


def pg_bin() -> Path:
    """Where initdb and pg_ctl are; PostgresUnavailable if they are not there."""
    candidate = Path(os.environ.get("XINRONG_PG_BIN", str(DEFAULT_BIN)))
    if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
        return candidate
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    raise PostgresUnavailable(
        f"PostgreSQL binaries not found in {candidate}: run `make install` (as root it runs "
        "`apt-get install -y postgresql`) or set XINRONG_PG_BIN"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TempPostgres:
    """One running throwaway cluster; ``url`` and ``password_file`` are what a node config takes."""

    root: Path
    port: int
    user: str
    password: str
    database: str
    bindir: Path
    run_as: str | None
    _owned_root: bool = True
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        """A libpq URL without the password (the node reads it from ``password_file``)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def dsn(self) -> str:
        """With the password, for tests and tools that connect directly."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self.run_as is None:
            return argv
        return ["runuser", "-u", self.run_as, "--", *argv]

    def pids(self) -> list[int]:
        """The postmaster and its current children (to place them on CPUs)."""
        try:
            postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        children: list[int] = []
        with contextlib.suppress(OSError):
            children = [int(p) for p in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()]
        return [postmaster, *children]

    def create_database(self, name: str) -> str:
        """A fresh database in this cluster (one per test); returns its URL without the password."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
            timeout=60,
        )
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    *, fast: bool = False, root: Path | None = None, max_connections: int = 100, statements: bool = False
) -> TempPostgres:
    """initdb, start, wait until it accepts connections; the caller stops it (or uses ``with``).

    ``statements``: load ``pg_stat_statements`` (benchmarks' diagnostics: what each call costs the server).
    """
    bindir = pg_bin()
    owned = root is None
    root = Path(tempfile.mkdtemp(prefix="xinrong-pg-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            raise PostgresUnavailable(
                "running as root needs the postgres system user (apt-get install postgresql)"
            ) from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
    password = secrets.token_urlsafe(18)
    pg = TempPostgres(
        root=root,
        port=free_port(),
        user="xinrong",
        password=password,
        database="xinrong",
        bindir=bindir,
        run_as=run_as,
        _owned_root=owned,
    )
    pwfile = root / "initdb.pw"
    pwfile.write_text(password + "\n")
    pg.password_file.write_text(password + "\n")
    pg.password_file.chmod(0o600)
    if run_as is not None:
        owner = pwd.getpwnam(run_as)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    init = subprocess.run(
        pg._as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                pg.user,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    pwfile.unlink(missing_ok=True)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    options = [
        "-c listen_addresses=127.0.0.1",
        f"-c port={pg.port}",
        "-c unix_socket_directories=''",
        f"-c max_connections={max_connections}",
        "-c shared_buffers=128MB",
        "-c log_min_messages=warning",
        # WAL write and sync times in pg_stat_wal (what a flush costs on this disk).
        "-c track_wal_io_timing=on",
    ]
    if statements:
        options += ["-c shared_preload_libraries=pg_stat_statements", "-c pg_stat_statements.track=all"]
    if fast:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    log_file = root / "postgres.log"
    started = subprocess.run(
        pg._as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log_file),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    if started.returncode != 0:
        tail = log_file.read_text()[-2000:] if log_file.exists() else ""
        pg.stop()
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()} {tail}")
    try:
        _wait_ready(pg)
    except BaseException:
        pg.stop()
        raise
    return pg


def _wait_ready(pg: TempPostgres, timeout: float = 30.0) -> None:
    """Until the server takes connections; then create the database the URL names."""
    import psycopg

    admin = f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/postgres"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(admin, connect_timeout=2, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg.database}"')
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


__all__ = ["PostgresUnavailable", "TempPostgres", "free_port", "pg_bin", "start"]

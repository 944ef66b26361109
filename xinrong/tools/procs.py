"""Start and stop xinrong parties as real processes on 127.0.0.1.

Used by the demo, the benchmarks and the end-to-end tests: every party runs
as its own ``python -m xinrong.tools.cli ...`` process, binds port 0, writes the
port it got to a file, and is reached over mTLS like in production. The
group stops every process it started (SIGTERM, then SIGKILL) whatever
happens, so nothing outlives a failed run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Party:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port_file: Path | None
    port: int = 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@dataclass
class ProcessGroup:
    """Processes started together and always stopped together."""

    workdir: Path
    parties: dict[str, Party] = field(default_factory=dict)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def run_cli(self, args: Sequence[str], *, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run a one-shot xinrong command (import, keygen ...) to completion."""
        return subprocess.run(
            [sys.executable, "-m", "xinrong.tools.cli", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=_env(),
        )

    def start(self, name: str, args: Sequence[str], *, port_file: Path | None = None) -> Party:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        if port_file is not None:
            port_file.unlink(missing_ok=True)
        with open(log_path, "wb") as log_fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "xinrong.tools.cli", *args],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env=_env(),
                start_new_session=True,
            )
        party = Party(name=name, proc=proc, log_path=log_path, port_file=port_file)
        self.parties[name] = party
        return party

    def wait_port(self, name: str, *, timeout: float = 60.0) -> int:
        """Wait for a started party to write its port file; fail fast if it exits."""
        party = self.parties[name]
        assert party.port_file is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if party.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {party.proc.returncode}:\n{party.log_tail()}")
            try:
                text = party.port_file.read_text().strip()
                if text:
                    party.port = int(text)
                    return party.port
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not report a port within {timeout:.0f}s:\n{party.log_tail()}")

    def stop(self, name: str, *, grace: float = 10.0) -> int | None:
        party = self.parties.pop(name, None)
        if party is None:
            return None
        return _terminate(party.proc, grace)

    def kill(self, name: str) -> None:
        """Kill without grace (to test crash handling)."""
        party = self.parties.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(party.proc.pid, signal.SIGKILL)
        party.proc.wait(timeout=10)

    def stop_all(self, *, grace: float = 10.0) -> None:
        for name in list(self.parties)[::-1]:
            self.stop(name, grace=grace)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

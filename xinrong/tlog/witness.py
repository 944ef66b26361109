"""A witness: the newest checkpoint a party has seen of a log, and the split-view alarm.

Every party that receives a checkpoint (banks, agents, enterprises) keeps
the newest one it saw of each log and accepts a newer one only with a
consistency proof from the one it holds. Two checkpoints of one size with
different roots, or a pair no consistency proof joins, is a split view: the
log showed different histories to different parties (or to one party over
time). The alarm carries both signed notes, which together prove it to
anyone holding the log's key.

State is one small JSON file per party (the notes as served, per origin),
written atomically; a witness never forgets a checkpoint it accepted.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xinrong.tlog.merkle import EMPTY_ROOT, ProofError, verify_consistency
from xinrong.tlog.note import Checkpoint, NoteError, open_checkpoint

# Fetches a consistency proof between two tree sizes from the log.
ProofSource = Callable[[int, int], Sequence[bytes]]


class SplitView(Exception):
    """The log is not append-only as seen from here: two signed notes that cannot both be true."""

    def __init__(self, origin: str, held: str, offered: str, why: str) -> None:
        super().__init__(f"split view of {origin}: {why}")
        self.origin = origin
        self.held = held
        self.offered = offered
        self.why = why

    def evidence(self) -> dict[str, str]:
        return {"origin": self.origin, "why": self.why, "held": self.held, "offered": self.offered}


@dataclass(frozen=True)
class Seen:
    checkpoint: Checkpoint
    note: str


class Witness:
    """The newest checkpoint seen per log origin, kept in ``path`` (or in memory when None)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}
        self._keys: dict[str, bytes] = {}
        self.alarms: list[dict[str, str]] = []
        if path is not None and path.exists():
            doc = json.loads(path.read_text())
            self._notes = {str(k): str(v) for k, v in doc.get("checkpoints", {}).items()}
            self.alarms = [{str(k): str(v) for k, v in a.items()} for a in doc.get("alarms", [])]

    def trust(self, origin: str, public_raw: bytes) -> None:
        """The key that signs ``origin``'s checkpoints (from the log's CA-checked party binding)."""
        self._keys[origin] = public_raw

    def held(self, origin: str) -> Seen | None:
        with self._lock:
            note = self._notes.get(origin)
        if note is None:
            return None
        return Seen(open_checkpoint(note, origin, self._key(origin)), note)

    def _key(self, origin: str) -> bytes:
        key = self._keys.get(origin)
        if key is None:
            raise NoteError(f"no key is trusted for log {origin!r}")
        return key

    def observe(self, note: str, origin: str, proofs: ProofSource) -> Checkpoint:
        """Check a served checkpoint against the one held; keep it if it is newer.

        NoteError if it is not a validly signed checkpoint of ``origin``;
        SplitView if it contradicts what this witness holds.
        """
        offered = open_checkpoint(note, origin, self._key(origin))
        try:
            return self._observe(note, offered, origin, proofs)
        except SplitView as alarm:
            # Kept with both signed notes: the evidence outlives the process that saw it.
            with self._lock:
                self.alarms.append(alarm.evidence())
                self._write()
            raise

    def _observe(self, note: str, offered: Checkpoint, origin: str, proofs: ProofSource) -> Checkpoint:
        with self._lock:
            held_note = self._notes.get(origin)
            if offered.size == 0 and offered.root != EMPTY_ROOT:
                # A signed false statement: the empty tree's root is SHA-256 of nothing
                # (RFC 6962 2.1). Held, it would let the next checkpoint in unproven.
                raise SplitView(origin, held_note or "", note, "a checkpoint of size 0 with a non-empty root")
            if held_note is None:
                self._keep(origin, note)
                return offered
            held = open_checkpoint(held_note, origin, self._key(origin))
            if offered.size == held.size:
                if offered.root != held.root:
                    raise SplitView(origin, held_note, note, f"two roots for size {held.size}")
                return offered
            old, new = (held, offered) if offered.size > held.size else (offered, held)
            try:
                proof = list(proofs(old.size, new.size)) if old.size > 0 else []
                if old.size > 0:
                    verify_consistency(old.size, new.size, proof, old.root, new.root)
            except ProofError as exc:
                why = f"sizes {old.size} and {new.size} are inconsistent: {exc}"
                raise SplitView(origin, held_note, note, why) from None
            if offered.size > held.size:
                self._keep(origin, note)
            return offered

    def _keep(self, origin: str, note: str) -> None:
        self._notes[origin] = note
        self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"checkpoints": self._notes, "alarms": self.alarms}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)

    def summary(self) -> list[dict[str, object]]:
        """What this witness holds: origin, size, root (base64) per log."""
        out: list[dict[str, object]] = []
        with self._lock:
            notes = dict(self._notes)
        for origin, note in sorted(notes.items()):
            entry: dict[str, object] = {"origin": origin, "note": note}
            if origin in self._keys:
                checkpoint = open_checkpoint(note, origin, self._keys[origin])
                entry.update(size=checkpoint.size, root=checkpoint.text().split("\n")[2])
            out.append(entry)
        return out


def peer_notes(text: str) -> dict[str, str]:
    """The signed notes another party offers for gossip: its witness state file, or one signed note.

    Nothing in it is trusted: each note is checked against the log's key and
    against what this witness holds when it is observed.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        doc = json.loads(text)
        notes = doc.get("checkpoints", {}) if isinstance(doc, dict) else {}
        if not isinstance(notes, dict):
            raise NoteError("not a witness file: 'checkpoints' is not an object")
        return {str(k): str(v) for k, v in notes.items()}
    origin = stripped.split("\n", 1)[0]
    if not origin:
        raise NoteError("neither a witness file nor a signed note")
    return {origin: text}


def held_summary(path: Path) -> dict[str, object]:
    """What a witness file holds, for display: per origin, size and root as the held note says.

    The notes were verified when they were accepted; this reads them back as text.
    """
    from xinrong.tlog.note import parse_checkpoint_text

    logs: list[dict[str, object]] = []
    if path.exists():
        doc = json.loads(path.read_text())
        for origin, note in sorted(doc.get("checkpoints", {}).items()):
            text = str(note)[: str(note).rfind("\n\n") + 1]
            checkpoint = parse_checkpoint_text(text)
            logs.append({"origin": origin, "size": checkpoint.size, "root": text.split("\n")[2], "note": str(note)})
        alarms = doc.get("alarms", [])
    else:
        alarms = []
    return {"state_file": str(path), "logs": logs, "alarms": alarms}


__all__ = ["ProofSource", "Seen", "SplitView", "Witness", "held_summary", "peer_notes"]

"""Registry of parties and their CA-signed bindings.

Providers and institutions come from the config (each binding CA-checked at
start); enterprises are learned from the consents they sign. Every binding
is verified against the CA before it is stored and again when it is loaded,
so a row edited on disk cannot introduce a key. Other parties never trust
the node's copy anyway: they check the CA signature themselves.

Enterprise bindings are never listed to institutions: the list of
enterprises that ever consented would tell a bank which firms use the
platform, the very oracle the uniform denial exists to close.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.node.db import Database, Transaction
from xinrong.serde import ROLE_TO_PROTO
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

# Tables: schema steps in xinrong.node.migrations.

LISTED_ROLES = ("node", "provider", "institution")


def _not_before(binding: VerifiedBinding) -> int:
    parsed = common_pb2.PartyBinding()
    parsed.ParseFromString(binding.signed.binding)
    return int(parsed.not_before)


class PartyRegistry:
    """In-memory view of the ``parties`` table, written through."""

    def __init__(self, db: Database, ca: CaVerifier, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._ca = ca
        self._clock = clock
        self._lock = threading.Lock()
        self._bindings: dict[tuple[str, str], VerifiedBinding] = {}
        self._not_before: dict[tuple[str, str], int] = {}

    def load(self) -> int:
        """Load and re-verify every stored binding; skip (and log) any that no longer verify."""
        loaded = 0
        for role, party_id, raw, not_before in self._db.query(
            "SELECT role, party_id, binding, not_before FROM parties"
        ):
            signed = common_pb2.SignedPartyBinding()
            try:
                signed.ParseFromString(bytes(raw))
                verified = verify_binding(
                    self._ca, signed, expect_role=role, expect_party_id=party_id, now=self._clock()
                )
            except Exception:
                log.warning("stored binding of %s %s no longer verifies; ignored", role, party_id)
                continue
            with self._lock:
                self._bindings[(role, party_id)] = verified
                self._not_before[(role, party_id)] = int(not_before)
            loaded += 1
        return loaded

    def _read(self, role: str, party_id: str) -> VerifiedBinding | None:
        rows = self._db.query(
            "SELECT binding, not_before FROM parties WHERE role = ? AND party_id = ?", (role, party_id)
        )
        if not rows:
            return None
        signed = common_pb2.SignedPartyBinding()
        try:
            signed.ParseFromString(bytes(rows[0][0]))
            verified = verify_binding(self._ca, signed, expect_role=role, expect_party_id=party_id, now=self._clock())
        except Exception:
            log.warning("stored binding of %s %s no longer verifies; ignored", role, party_id)
            return None
        with self._lock:
            self._bindings[(role, party_id)] = verified
            self._not_before[(role, party_id)] = int(rows[0][1])
        return verified

    def reload(self, role: str, party_id: str) -> VerifiedBinding | None:
        """Re-read one binding from the database (one written by another replica, e.g. onboarded there)."""
        return self._read(role, party_id)

    def verify(
        self, signed: common_pb2.SignedPartyBinding, *, role: str, party_id: str | None = None
    ) -> VerifiedBinding:
        """CA check of a binding for a role (and party id); SignatureError on failure."""
        return verify_binding(self._ca, signed, expect_role=role, expect_party_id=party_id, now=self._clock())

    def upsert(self, tx: Transaction, binding: VerifiedBinding, *, source: str) -> bool:
        """Store a binding; True if stored.

        ``source="config"``: the operator's word, always stored (it may roll
        back to an older binding after a key compromise). Otherwise (learned
        from a consent) a binding never replaces a newer one (later not_before).
        """
        key = (binding.role, binding.party_id)
        not_before = _not_before(binding)
        with self._lock:
            current = self._bindings.get(key)
            if current is not None and current.signed.binding == binding.signed.binding:
                return False
            if source != "config" and current is not None and self._not_before.get(key, 0) > not_before:
                return False
        tx.execute(
            "INSERT INTO parties (role, party_id, binding, not_before, source, updated_ms) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (role, party_id) DO UPDATE SET binding=excluded.binding, not_before=excluded.not_before, "
            "source=excluded.source, updated_ms=excluded.updated_ms",
            (
                binding.role,
                binding.party_id,
                binding.signed.SerializeToString(deterministic=True),
                not_before,
                source,
                int(self._clock() * 1000),
            ),
        )

        def commit() -> None:
            with self._lock:
                self._bindings[key] = binding
                self._not_before[key] = not_before

        tx.on_commit(commit)
        return True

    def retain_configured(self, tx: Transaction, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forget node, provider and institution bindings the config no longer names.

        The config is authoritative for who may call and who is routed to: an
        institution removed from it must lose access at the next start, not
        linger because its binding was persisted by an earlier run.
        Enterprise bindings (learned from consents) are untouched.
        """
        with self._lock:
            stale = [k for k in self._bindings if k[0] in LISTED_ROLES and k not in keep]
        for role, party_id in stale:
            tx.execute("DELETE FROM parties WHERE role = ? AND party_id = ?", (role, party_id))

        def commit() -> None:
            with self._lock:
                for key in stale:
                    self._bindings.pop(key, None)
                    self._not_before.pop(key, None)

        tx.on_commit(commit)
        return stale

    def get(self, role: str, party_id: str) -> VerifiedBinding | None:
        """A held binding that is still inside its validity window.

        On a shared database an enterprise binding learned by another replica
        (from a consent registered there) is read from the database on a miss;
        configured parties come from every replica's own config.
        """
        with self._lock:
            binding = self._bindings.get((role, party_id))
        if binding is None and role not in LISTED_ROLES and self._db.shared:
            binding = self._read(role, party_id)
        if binding is None or binding.not_after < self._clock():
            return None
        return binding

    def list(
        self, role: str | None = None, *, include: Iterable[tuple[str, str]] = ()
    ) -> list[common_pb2.SignedPartyBinding]:
        """Bindings of node, providers and institutions (optionally one role), plus any
        explicitly included (role, party_id) pairs, e.g. the calling enterprise itself."""
        roles = LISTED_ROLES if role is None else ((role,) if role in LISTED_ROLES else ())
        now = self._clock()
        with self._lock:
            chosen = [b for (r, _p), b in self._bindings.items() if r in roles and b.not_after >= now]
            for key in include:
                extra = self._bindings.get(key)
                if extra is not None and (role is None or key[0] == role) and extra not in chosen:
                    chosen.append(extra)
        chosen.sort(key=lambda b: (ROLE_TO_PROTO[b.role], b.party_id))
        return [b.signed for b in chosen]


__all__ = ["LISTED_ROLES", "PartyRegistry"]

"""The node's alert queue over PostgreSQL (replicas share it): migration step 7's
PostgreSQL spelling, idempotent queueing with its audit entry, the cursor, the
bank's acknowledgement, and a second replica loading the watches."""

from __future__ import annotations

import time
from typing import Any

from xinrong.catalog import Catalog
from xinrong.keys.ca import CaVerifier
from xinrong.node.audit import open_audit_log
from xinrong.node.monitoring import WATCH_UPDATE_CONTENT_TYPE, Monitoring, WatchRow
from xinrong.node.pg import PgDatabase
from xinrong.node.registry import PartyRegistry
from xinrong.v1 import common_pb2, monitoring_pb2

from support.node_fakes import ACME
from support.pg import database_config, database_table


def _monitoring(db: PgDatabase, pki: Any, catalog: Catalog) -> Monitoring:
    creds = pki.party("node", "node")
    return Monitoring(
        db=db,
        admission=None,  # type: ignore[arg-type]  # registration is not exercised here
        audit=open_audit_log(db),
        registry=PartyRegistry(db, CaVerifier(creds.ca_cert_pem), clock=time.time),
        catalog=catalog,
        endpoints=(),
        credentials=creds,
        timeout=1.0,
    )


def test_alert_queue_on_postgresql(pg_cluster: Any, pki: Any, catalog: Catalog) -> None:
    table = database_table(pg_cluster)
    db = PgDatabase(database_config(table))
    try:
        mon = _monitoring(db, pki, catalog)
        mon._insert(WatchRow("w-1", "bank-a", ACME, "c-1", ("tax",), ("tax.in_arrears == true",), 4_000_000_000, 1, 0))
        box = common_pb2.SealedBox(recipient_id="bank-a", content_type=WATCH_UPDATE_CONTENT_TYPE, ciphertext=b"x" * 64)
        update = monitoring_pb2.SealedWatchUpdate(update_id="w-1.tax.1", watch_id="w-1", provider="tax", sealed=box)
        stranger = monitoring_pb2.SealedWatchUpdate(update_id="w-9.tax.1", watch_id="w-9", provider="tax", sealed=box)
        queued = [
            monitoring_pb2.QueuedWatchUpdate(seq=4, update=update),
            monitoring_pb2.QueuedWatchUpdate(seq=5, update=update),  # a redelivery
            monitoring_pb2.QueuedWatchUpdate(seq=6, update=stranger),  # no such watch: dropped
        ]
        assert mon.store_updates("tax", queued) == 6
        assert mon.stored == 1
        assert mon.cursor("tax") == 6
        rows = mon.queued("bank-a", 0)
        assert len(rows) == 1 and monitoring_pb2.SealedWatchUpdate.FromString(rows[0][1]) == update
        assert mon.queued("bank-b", 0) == []
        other = _monitoring(db, pki, catalog)  # another replica, started before the next watch was registered
        assert other.load() == 1
        mon._insert(WatchRow("w-2", "bank-a", ACME, "c-2", ("tax",), ("tax.in_arrears == true",), 4_000_000_000, 1, 0))
        late = monitoring_pb2.SealedWatchUpdate(update_id="w-2.tax.1", watch_id="w-2", provider="tax", sealed=box)
        assert other.store_updates("tax", [monitoring_pb2.QueuedWatchUpdate(seq=7, update=late)]) == 7
        assert other.stored == 1  # known from the shared database, not dropped
        assert len(mon.queued("bank-a", rows[0][0])) == 1
        other.acknowledge("bank-a", rows[0][0])
        assert len(mon.queued("bank-a", 0)) == 1
    finally:
        db.close()

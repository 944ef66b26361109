"""Issue 10, A13: a revocation reaches an agent that was down within seconds of its return.

Before: failed pushes backed off up to an hour, so an agent that came back
kept answering a revoked consent (if asked directly) until the next retry.
Now the node watches providers with pending pushes and delivers at once
when their agent connects again, whatever the backoff.
"""

from __future__ import annotations

import time
from typing import Any

from xinrong.catalog import Catalog
from xinrong.v1 import node_pb2

from support.node_fakes import ACME, consent_id_of, grant, register, revocation


def test_a_revocation_reaches_a_returning_agent_within_seconds(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    # A long retry interval: only the reconnect watch can deliver in time.
    h = make_harness(["tax"], revocation_retry_seconds=600)
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    agent = h.agents["tax"]
    agent.stop()
    resp = h.enterprise(ACME).RevokeConsent(
        node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10
    )
    assert "tax" not in resp.providers_notified
    time.sleep(1.0)  # the agent stays down a while: pushes fail and back off
    agent.start(pki)
    back = time.monotonic()
    while consent_id_of(consent) not in agent.fake.revoked:
        assert time.monotonic() - back < 3.0, "the returning agent did not learn of the revocation within 3 s"
        time.sleep(0.05)

"""Size limits of what crosses a trust boundary: one home, read by every party.

A limit that two parties must agree on (the bank chunks scoring requests at
the size the node accepts, the node relays what agents accept) is defined
once, here. Limits a single party enforces on its own input stay beside
the code that enforces them.
"""

from __future__ import annotations

# The transport's ceiling: no gRPC message in either direction is larger.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Claims or indicator queries in one Verify / GetIndicators request, at the agent.
MAX_ITEMS_PER_REQUEST = 64

# Joint modeling.
MAX_PROVIDERS = 16  # providers in one job
MAX_PSI_IDS = 1_000_000  # bank ids + decoys per job: 32 bytes per blinded id, a 32 MB request
MAX_PSI_POINTS = 2_000_000  # blinded points an agent takes in one PSI message (64 MB)
MAX_SCORE_ROWS = 200_000  # rows per ScoreJobRows call (the bank chunks larger sets)
MAX_SCORE_SUBJECTS = 20_000  # enterprises per ScoreEnterprises call: every signed consent goes to each agent

# Timestamps (Unix seconds) a party accepts from the wire: consents' validity
# and issue times, revocations. Outside this window a value is nonsense (and
# +-2**63 once crashed `node consents list` with OSError 75).
MIN_TIMESTAMP = 946_684_800  # 2000-01-01T00:00:00Z
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z

# Consents: a real one is ~300 bytes (a 16-byte nonce, a scope of catalog
# fields); everything is bounded so no caller can make a party hold or relay
# megabytes per consent (a 20 MB nonce was once accepted and kept forever).
MAX_CONSENT_BYTES = 16 * 1024  # the signed Consent message
MAX_SIGNED_CONSENT_BYTES = 32 * 1024  # consent + signature + enterprise binding
MAX_NONCE_BYTES = 64
MAX_SCOPE_ITEMS = 256
MAX_REVOCATION_BYTES = 4 * 1024

# Per-method request ceilings, far below the transport's: the server guard
# refuses a larger request with INVALID_ARGUMENT naming the limit before it
# is decoded. A Verify carries ids and up to 64 short claims (~10 KB at most);
# an agent request adds the signed consent and the audience's binding.
_SMALL = 16 * 1024
MAX_REQUEST_BYTES: dict[str, int] = {
    "/xinrong.v1.NodeService/RegisterConsent": 64 * 1024,
    "/xinrong.v1.NodeService/RevokeConsent": _SMALL,
    "/xinrong.v1.NodeService/GetConsentStatus": _SMALL,
    "/xinrong.v1.NodeService/Verify": 256 * 1024,
    "/xinrong.v1.NodeService/GetIndicators": 256 * 1024,
    "/xinrong.v1.NodeService/ListParties": _SMALL,
    "/xinrong.v1.NodeService/GetCatalog": _SMALL,
    "/xinrong.v1.AgentService/EvaluateClaims": 256 * 1024,
    "/xinrong.v1.AgentService/EvaluateIndicators": 256 * 1024,
    "/xinrong.v1.AgentService/UpdateConsentStatus": 64 * 1024,
    "/xinrong.v1.AgentService/GetAgentInfo": _SMALL,
    "/xinrong.v1.TransparencyService/GetCheckpoint": _SMALL,
    "/xinrong.v1.TransparencyService/GetInclusionProof": _SMALL,
    "/xinrong.v1.TransparencyService/GetConsistencyProof": _SMALL,
    "/xinrong.v1.TransparencyService/ListAccesses": _SMALL,
    # Subject rights: a signed query and the enterprise's binding; a case adds
    # its sealed evidence (xinrong.subject.MAX_EVIDENCE_BYTES, 256 KiB).
    "/xinrong.v1.SubjectService/GetMyData": 64 * 1024,
    "/xinrong.v1.SubjectService/FileCase": 512 * 1024,
    "/xinrong.v1.SubjectService/ListMyConsents": 64 * 1024,
    "/xinrong.v1.SubjectService/ChangeConsentState": 64 * 1024,
    "/xinrong.v1.AgentSubjectService/GetSubjectReport": 64 * 1024,
    "/xinrong.v1.AgentSubjectService/AcceptCase": 512 * 1024,
    "/xinrong.v1.AgentSubjectService/UpdateConsentPause": 64 * 1024,
    "/xinrong.v1.AgentSubjectService/GetCaseStats": _SMALL,
    "/xinrong.v1.EvaluationService/GetOwnEvaluation": 64 * 1024,
    # Public records: a batch of at most xinrong.public.MAX_BATCH_RECORDS
    # records (2 MiB of canonical JSON) plus its signature; a filing (32 KiB)
    # with its signature and the enterprise's binding.
    "/xinrong.v1.PublicService/PublishRecords": 2 * 1024 * 1024 + 1024,
    "/xinrong.v1.PublicService/GetPublishState": _SMALL,
    "/xinrong.v1.PublicService/GetPublicRecords": _SMALL,
    "/xinrong.v1.PublicService/FileSelfReport": 48 * 1024,
    "/xinrong.v1.PublicService/WithdrawFiling": _SMALL,
    "/xinrong.v1.PublicService/ListFilings": _SMALL,
    "/xinrong.v1.PublicService/GetCreditReport": _SMALL,
    # Access institutions (operator only): a binding is ~300 bytes.
    "/xinrong.v1.InstitutionAdminService/RegisterInstitution": _SMALL,
    "/xinrong.v1.InstitutionAdminService/ListInstitutions": _SMALL,
    "/xinrong.v1.InstitutionAdminService/GetInstitution": _SMALL,
    "/xinrong.v1.InstitutionAdminService/SuspendInstitution": _SMALL,
    "/xinrong.v1.InstitutionAdminService/ResumeInstitution": _SMALL,
    "/xinrong.v1.InstitutionAdminService/RecordAssessment": _SMALL,
    "/xinrong.v1.InstitutionAdminService/ListDueAssessments": _SMALL,
    "/xinrong.v1.InstitutionAdminService/SetQuota": _SMALL,
    "/xinrong.v1.InstitutionAdminService/GetInstitutionUsage": _SMALL,
    "/xinrong.v1.AgentModelingService/AbortJob": _SMALL,
    "/xinrong.v1.AgentSyncService/PullConsentUpdates": _SMALL,
    # Push: filters only (at most 64 regions, 64 industries, 64 topics of a few bytes each).
    "/xinrong.v1.PushService/Subscribe": _SMALL,
    # Demands: a signed demand (<= 16 KiB) and up to 32 signed consents (<= 32 KiB each).
    "/xinrong.v1.DemandService/RegisterDemand": 1024 * 1024 + 32 * 1024,
    "/xinrong.v1.DemandService/WithdrawDemand": _SMALL,
    "/xinrong.v1.DemandService/ListMyDemands": _SMALL,
    # Loan products (products.proto): a product is a few KB (rules, a 512-byte
    # Paillier modulus at most); a match call carries up to 2,000 signed consents.
    "/xinrong.v1.ProductService/PublishProduct": 64 * 1024,
    "/xinrong.v1.ProductService/WithdrawProduct": _SMALL,
    "/xinrong.v1.ProductService/ListProducts": _SMALL,
    "/xinrong.v1.ProductService/RunMatching": _SMALL,
    "/xinrong.v1.ProductService/ListMyMatches": _SMALL,
    "/xinrong.v1.ProductService/ApplyToProduct": 64 * 1024,
    "/xinrong.v1.ProductService/ListApplications": _SMALL,
    "/xinrong.v1.MatchingAgentService/ComputeMatch": 32 * 1024 * 1024,
    # Post-loan monitoring (issue 13 §4): a watch is a Verify's shape; the agent leg adds consent and binding.
    "/xinrong.v1.MonitoringService/RegisterWatch": 64 * 1024,
    "/xinrong.v1.MonitoringService/CancelWatch": _SMALL,
    "/xinrong.v1.MonitoringService/ListWatches": _SMALL,
    "/xinrong.v1.MonitoringService/StreamAlerts": _SMALL,
    "/xinrong.v1.AgentMonitoringService/AddWatch": 128 * 1024,
    "/xinrong.v1.AgentMonitoringService/RemoveWatch": _SMALL,
    "/xinrong.v1.AgentMonitoringService/PullWatchUpdates": _SMALL,
}

# Post-loan monitoring: claims in one watch, and the one length every sealed
# watch update is padded to (whatever its verdicts, whatever changed), so the
# node that queues them cannot tell whose status changed. Node and agents
# both enforce the claim count; the agent refuses a watch whose update
# could ever exceed the pad.
MAX_WATCH_CLAIMS = 8
WATCH_UPDATE_PAD_BYTES = 1024

__all__ = [
    "MAX_CONSENT_BYTES",
    "MAX_ITEMS_PER_REQUEST",
    "MAX_MESSAGE_BYTES",
    "MAX_NONCE_BYTES",
    "MAX_PROVIDERS",
    "MAX_PSI_IDS",
    "MAX_PSI_POINTS",
    "MAX_REQUEST_BYTES",
    "MAX_REVOCATION_BYTES",
    "MAX_SCOPE_ITEMS",
    "MAX_SCORE_ROWS",
    "MAX_SCORE_SUBJECTS",
    "MAX_SIGNED_CONSENT_BYTES",
    "MAX_TIMESTAMP",
    "MAX_WATCH_CLAIMS",
    "MIN_TIMESTAMP",
    "WATCH_UPDATE_PAD_BYTES",
]

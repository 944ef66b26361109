"""Typed domain errors with public reason codes.

Domain code raises these; one translator (``xinrong.rpc.errors``) maps each
reason to a gRPC status code and a public message, so every servicer refuses
the same thing the same way. ``detail`` is for the local log only and never
leaves the process. Reasons that could serve as an oracle about an enterprise
(unknown enterprise, no consent, forged consent) share one reason and one
message: ``Reason.ACCESS_DENIED``.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # The uniform denial: no such consent, consent not for this enterprise,
    # unknown enterprise, forged signature, unknown enterprise key. One status,
    # one message, whatever the cause.
    ACCESS_DENIED = "ACCESS_DENIED"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_NOT_YET_VALID = "CONSENT_NOT_YET_VALID"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_PAUSED = "CONSENT_PAUSED"
    CONSENT_GRANTEE_MISMATCH = "CONSENT_GRANTEE_MISMATCH"
    CLAIM_OUT_OF_SCOPE = "CLAIM_OUT_OF_SCOPE"
    CONSENT_USES_EXHAUSTED = "CONSENT_USES_EXHAUSTED"
    CONSENT_DAILY_LIMIT = "CONSENT_DAILY_LIMIT"
    CONSENT_PERIOD_MISMATCH = "CONSENT_PERIOD_MISMATCH"
    CONSENT_MALFORMED = "CONSENT_MALFORMED"
    REQUEST_REPLAYED = "REQUEST_REPLAYED"
    REQUEST_STALE = "REQUEST_STALE"
    THRESHOLD_NOT_PUBLISHED = "THRESHOLD_NOT_PUBLISHED"
    FORM_NOT_ALLOWED = "FORM_NOT_ALLOWED"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_CLAIM = "INVALID_CLAIM"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    ENTERPRISE_BUDGET_EXHAUSTED = "ENTERPRISE_BUDGET_EXHAUSTED"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    # The node routes no agent for a provider at all (public registry fact):
    # retrying will not help, so it is not PROVIDER_UNAVAILABLE.
    PROVIDER_NOT_CONNECTED = "PROVIDER_NOT_CONNECTED"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    JOB_FAILED = "JOB_FAILED"
    INTERNAL = "INTERNAL"
    # Access institutions (Issue 12 section 5): the caller's own status only.
    INSTITUTION_SUSPENDED = "INSTITUTION_SUSPENDED"
    QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"
    # The node's replay window (request ids kept to refuse replays) is at its byte bound.
    REPLAY_WINDOW_FULL = "REPLAY_WINDOW_FULL"
    # A log position past the log's end (a leaf or tree size it has not reached yet):
    # gRPC's OUT_OF_RANGE, so a client can tell "not yet" from "never" (NOT_FOUND).
    OUT_OF_RANGE = "OUT_OF_RANGE"


# Public messages: fixed per reason, so a refusal never echoes internal state.
PUBLIC_MESSAGES: dict[Reason, str] = {
    Reason.ACCESS_DENIED: "access denied: no valid consent covers this request",
    Reason.CONSENT_EXPIRED: "the consent has expired",
    Reason.CONSENT_NOT_YET_VALID: "the consent is not valid yet",
    Reason.CONSENT_REVOKED: "the consent was revoked by the enterprise",
    Reason.CONSENT_PAUSED: "the consent is paused by the enterprise",
    Reason.CONSENT_GRANTEE_MISMATCH: "the consent was granted to another institution",
    Reason.CLAIM_OUT_OF_SCOPE: "a requested field or form is outside the consent's scope",
    Reason.CONSENT_USES_EXHAUSTED: "the consent's maximum number of uses is reached",
    Reason.CONSENT_DAILY_LIMIT: "the consent's daily use limit is reached",
    Reason.CONSENT_PERIOD_MISMATCH: "the provider's data period is outside the consent's data period",
    Reason.CONSENT_MALFORMED: "the consent is malformed",
    Reason.REQUEST_REPLAYED: "this request id was used before",
    Reason.REQUEST_STALE: "the request timestamp is outside the accepted clock skew",
    Reason.THRESHOLD_NOT_PUBLISHED: "claims may only use the catalog's published ladder and bracket edges",
    Reason.FORM_NOT_ALLOWED: "the catalog does not allow this disclosure form for the field",
    Reason.UNKNOWN_FIELD: "the field is not in the catalog",
    Reason.INVALID_CLAIM: "the claim is malformed",
    Reason.INVALID_ARGUMENT: "the request is malformed",
    Reason.ENTERPRISE_BUDGET_EXHAUSTED: "the enterprise's query budget for this period is used up",
    Reason.CALLER_NOT_ALLOWED: "the caller's role may not call this method",
    Reason.PROVIDER_UNAVAILABLE: "a data provider did not answer in time",
    Reason.PROVIDER_NOT_CONNECTED: "a data provider asked for is not connected to this node",
    Reason.STORE_UNAVAILABLE: "the service's state store is busy or unavailable; retry shortly",
    Reason.NOT_FOUND: "not found",
    Reason.FAILED_PRECONDITION: "the operation is not allowed in the current state",
    Reason.JOB_FAILED: "the modeling job failed",
    Reason.INTERNAL: "internal error",
    Reason.INSTITUTION_SUSPENDED: "this institution's access to the platform is suspended",
    Reason.QUOTA_EXHAUSTED: "this institution's rate limit for the method is reached; retry later",
    Reason.REPLAY_WINDOW_FULL: "too many recent request ids are held to refuse replays; retry later",
    Reason.OUT_OF_RANGE: "the log does not reach that position yet",
}


class XinrongError(Exception):
    """Base of every domain error; carries a public reason and a private detail."""

    default_reason = Reason.INTERNAL
    # False when the request provably reached no data (the agent refused, or
    # was never reached): the node then refunds the enterprise's budget.
    data_read = True
    # Seconds after which a retry may succeed; sent as google.rpc.RetryInfo.
    retry_after: float | None = None

    def __init__(self, detail: str = "", *, reason: Reason | None = None, public: str | None = None) -> None:
        self.reason = reason or self.default_reason
        self.detail = detail
        self.public_message = public or PUBLIC_MESSAGES[self.reason]
        super().__init__(f"{self.reason}: {detail or self.public_message}")


class CatalogError(XinrongError):
    default_reason = Reason.INTERNAL


class ValidationError(XinrongError):
    default_reason = Reason.INVALID_ARGUMENT


def invalid(message: str) -> ValidationError:
    """INVALID_ARGUMENT whose public message is ``message``: for refusals about the caller's
    own bytes (a limit, a rule of syntax, a public size), which reveal nothing of anyone else."""
    return ValidationError(message, public=message)


class ClaimError(XinrongError):
    default_reason = Reason.INVALID_CLAIM


class ConsentError(XinrongError):
    default_reason = Reason.ACCESS_DENIED


class PolicyError(XinrongError):
    default_reason = Reason.THRESHOLD_NOT_PUBLISHED


class KeyFileError(XinrongError):
    """A key file is missing, malformed or readable by group/others."""

    default_reason = Reason.INTERNAL


class SignatureError(XinrongError):
    """One opaque error for every failed signature or seal check."""

    default_reason = Reason.ACCESS_DENIED


class ProviderUnavailable(XinrongError):
    default_reason = Reason.PROVIDER_UNAVAILABLE


def provider_not_connected(providers: list[str]) -> XinrongError:
    """The refusal for providers the node routes no agent for, naming them.

    Which providers a node connects is public (the registry), so naming them
    is no oracle; the request is refused before any consent is consulted.
    """
    names = ", ".join(providers)
    return XinrongError(
        f"no agent configured for {providers}",
        reason=Reason.PROVIDER_NOT_CONNECTED,
        public=f"provider {names} is not connected to this node",
    )


class StoreUnavailable(XinrongError):
    """The party's own state store is busy (locked by another process), read-only or down.

    The request may be retried, here or at another replica. When the reply
    to a write was lost (the connection dropped after the statement was sent)
    the write may have committed: on PostgreSQL a batch of admissions is one
    transaction (``xinrong.node.pg``), so then all of it stands, as spent.
    """

    default_reason = Reason.STORE_UNAVAILABLE


class ImportRejected(XinrongError):
    """A provider CSV failed validation; nothing was imported."""

    default_reason = Reason.INVALID_ARGUMENT

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"import rejected, nothing imported:\n{shown}{more}")

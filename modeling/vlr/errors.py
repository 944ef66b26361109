"""Why a training job stops: typed, with a ``detail`` that never holds a value."""

from __future__ import annotations

from xinrong.errors import Reason, XinrongError


class VlrError(XinrongError):
    """The modeling job cannot continue; ``detail`` says why (never any value)."""

    default_reason = Reason.JOB_FAILED


class LogitGuardError(VlrError):
    """Logits would leave the sigmoid's fitted interval and shrinking cannot contain them."""


class ProtocolViolation(VlrError):
    """A message out of order, for another job, or of the wrong shape."""

    default_reason = Reason.FAILED_PRECONDITION

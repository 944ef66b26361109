"""A bank that seals residuals naming another job, epoch or batch: the same tampering for both transports.

The driver seals every residual under the context of the batch it is
driving, so such a box opens fine at the provider; only the provider's own
check that what it opened is for the request's job, epoch and batch refuses
it. The in-process tests and the gRPC tests apply this one patch, so they
show the same refusal on both paths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from xinrong.modeling.vlr.bank import BankBackward, BankParty
from xinrong.modeling.vlr.messages import ForwardReply, PartialLogits

MISADDRESSED_RESIDUAL = "sealed residual is for another batch"  # the provider's refusal (INVALID_ARGUMENT)


def misaddress_residuals(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    """From now on the bank's residuals name another ``field`` ("job_id", "epoch" or "batch") than the batch's."""
    backward = BankParty.backward

    def tampered(self: BankParty, reply: ForwardReply, partials: Sequence[PartialLogits]) -> BankBackward:
        out = backward(self, reply, partials)
        change: dict[str, Any] = {"job_id": "another-job"} if field == "job_id" else {field: getattr(reply, field) + 1}
        return dataclasses.replace(out, residuals=tuple(dataclasses.replace(r, **change) for r in out.residuals))

    monkeypatch.setattr(BankParty, "backward", tampered)

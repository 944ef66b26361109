"""The node's in-process admission benchmark still runs and really admits.

Figures are not asserted (no timed tests); that every call went through
the node's checks and left an audit entry is."""

from __future__ import annotations

import pytest

import xinrong.tools.bench.node_micro as microbench
from xinrong.node import service


def test_admission_benchmark_runs_every_call_through_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    admitted: list[str] = []
    real = service.NodeCore.verify

    async def counting(self: service.NodeCore, caller: object, req: object) -> object:
        answers = await real(self, caller, req)  # type: ignore[arg-type]
        admitted.append(answers.request_id)
        return answers

    monkeypatch.setattr(service.NodeCore, "verify", counting)
    result = microbench.run_admission(calls=20)
    assert result["bench"] == "node_admission" and result["calls"] == 20
    assert len(admitted) == 60 and len(set(admitted)) == 60  # warm-up, grouped, commit-each
    for key in ("cpu_us_per_call_group_commit", "cpu_us_per_call_commit_each"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key

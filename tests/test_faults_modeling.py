"""Issue 10, A10: abandoned modeling jobs expire, and one institution cannot block another.

Before: four CREATED jobs from one bank blocked CreateJob for every bank
until the node restarted. Now each job holds a lease renewed whenever its
institution drives or reads it; an idle job expires (FAILED with the reason,
an audit entry, its HE key dropped) before the next CreateJob counts jobs,
and one institution holds at most ``modeling_max_jobs_per_institution``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.bank.modeling import ModelingClient
from xinrong.rpc.errors import RemoteError
from xinrong.v1 import modeling_pb2

from support.modeling_platform import PROVIDERS, Platform, modeling_platform, platform_creds, start_modeling_node

IDLE = 1.5


@pytest.fixture
def platform(pki: Any, tmp_path: Path) -> Iterator[Platform]:
    with modeling_platform(pki, tmp_path) as plat:
        yield plat


def _restart_with(platform: Platform, **options: object) -> None:
    text = platform.node_config.read_text()
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    platform.node_config.write_text(text.replace("[node]\n", "[node]\n" + extra, 1))
    platform.node.stop(0.2)
    platform.node = start_modeling_node(platform.node_config, platform.captured)


def _create(platform: Platform, bank: str, job_id: str) -> Any:
    with ModelingClient(f"127.0.0.1:{platform.node.port}", platform_creds(platform, bank)) as client:
        return client.call(
            "CreateJob", modeling_pb2.CreateJobRequest(job_id=job_id, provider_ids=list(PROVIDERS), backend="plain")
        )


def _state(platform: Platform, job_id: str) -> Any:
    with ModelingClient(f"127.0.0.1:{platform.node.port}", platform_creds(platform, "bank-a")) as client:
        return client.call("GetJob", modeling_pb2.GetJobRequest(job_id=job_id))


def test_abandoned_jobs_expire_and_one_institution_cannot_block_others(platform: Platform) -> None:
    _restart_with(platform, modeling_job_idle_seconds=IDLE, modeling_max_jobs=4, modeling_max_jobs_per_institution=2)
    _create(platform, "bank-a", "abandoned-1")
    _create(platform, "bank-a", "abandoned-2")
    with pytest.raises(RemoteError) as info:
        _create(platform, "bank-a", "abandoned-3")
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "per-institution limit is 2" in info.value.message
    # Another institution is not blocked by bank-a's jobs: its CreateJob reaches the agents
    # (which, in this fixture, do not allow bank-b).
    with pytest.raises(RemoteError) as info:
        _create(platform, "bank-b", "bank-b-job")
    assert "modeling jobs already" not in info.value.message and info.value.reason == "CALLER_NOT_ALLOWED"
    # A job that is read keeps its lease; abandoned ones expire.
    time.sleep(IDLE / 2)
    assert _state(platform, "abandoned-2").state == modeling_pb2.MODELING_JOB_STATE_CREATED
    time.sleep(IDLE / 2 + 0.3)
    _create(platform, "bank-a", "fresh-1")  # abandoned-1 expired: room again
    expired = _state(platform, "abandoned-1")
    assert expired.state == modeling_pb2.MODELING_JOB_STATE_FAILED and "expired" in expired.failure_reason
    assert not expired.resumable
    assert _state(platform, "abandoned-2").state == modeling_pb2.MODELING_JOB_STATE_CREATED
    with pytest.raises(RemoteError):  # abandoned-2 (leased) and fresh-1 fill bank-a's share
        _create(platform, "bank-a", "abandoned-3")


def test_the_config_defaults_bound_jobs_per_institution(tmp_path: Path) -> None:
    from xinrong.node.config import NodeConfig

    fields = NodeConfig.model_fields
    assert fields["modeling_max_jobs_per_institution"].default < fields["modeling_max_jobs"].default
    assert fields["modeling_job_idle_seconds"].default > 0


def test_opening_a_job_gets_the_step_deadline_not_the_reconnect_wait(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A15: OpenJob reads the provider's dataset (minutes at FATE's shape from a cold cache);
    its deadline is the step deadline. Only the wait for a reconnecting agent is short."""
    from xinrong.node import modeling, modeling_jobs
    from xinrong.provider_agent.modeling import AgentModeling

    monkeypatch.setattr(modeling_jobs, "OPEN_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(modeling, "OPEN_TIMEOUT_SECONDS", 0.5, raising=False)
    slow_open = AgentModeling.open_job

    def open_job(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # a cold dataset read
        return slow_open(self, *args, **kwargs)

    monkeypatch.setattr(AgentModeling, "open_job", open_job)
    _create(platform, "bank-a", "slow-open")
    assert _state(platform, "slow-open").state == modeling_pb2.MODELING_JOB_STATE_CREATED
    # A provider that is down is still reported at once, by name.
    platform.agents["tax"].stop(0.2)
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        _create(platform, "bank-a", "down-open")
    assert info.value.reason == "PROVIDER_UNAVAILABLE" and "provider tax" in info.value.message
    assert time.monotonic() - started < 5

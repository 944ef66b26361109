"""A short ``xinrong bench soak``: the steady-load machinery on real processes over mTLS.

The benchmark proper runs ten one-minute intervals; here three intervals of
five seconds check that the load is offered at half the measured capacity,
every interval reports its errors, latencies and both servers' memory, and
a healthy platform answers every call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xinrong.tools.bench import soak


@pytest.mark.e2e
@pytest.mark.slow
def test_soak_reports_each_interval_with_no_errors(tmp_path: Path) -> None:
    result = soak.run(minutes=0.25, interval_seconds=5.0, capacity_seconds=2.0, workdir=tmp_path)
    assert result["bench"] == "soak"
    for key in ("errors", "p50_ms", "p99_ms", "rss_node_mb", "rss_agent_mb", "qps", "wal_node_mb"):
        assert len(result[key]) == 3, key
    assert result["errors"] == [0, 0, 0], result["error_kinds"]
    assert result["servers_alive"]
    assert result["target_qps"] == pytest.approx(result["capacity_qps"] / 2, rel=0.01)
    for qps in result["qps"]:  # the open-loop schedule holds the offered rate
        assert qps == pytest.approx(result["target_qps"], rel=0.25)
    for p50, p99 in zip(result["p50_ms"], result["p99_ms"], strict=True):
        assert p50 is not None and p99 is not None and 0 < p50 <= p99
    assert all(50 < mb < 1024 for mb in result["rss_node_mb"] + result["rss_agent_mb"])
    assert all(0 <= mb < 200 for mb in result["wal_node_mb"])  # restarted, not grown (node.db checkpoint)
    assert len(result["load_average"]) == 2


def test_soak_refuses_a_load_above_capacity() -> None:
    with pytest.raises(ValueError, match="fraction of capacity"):
        soak.run(minutes=1, load=1.5)

"""``xinrong bench sequencer`` runs, really sequences and integrates, and reports each schedule.

Figures are not asserted (no timed tests): that every schedule chained every
staged entry, that the tree schedules end with a tree of all of them (the
bench refuses otherwise), and that the tree was integrated as often as the
schedule says, are.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from xinrong.node.tlog import TransparencyLog
from xinrong.tools.bench import sequencer
from xinrong.tools.cli import main


def test_the_sequencer_bench_runs_each_schedule_on_a_real_postgresql(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks: list[bool] = []
    real = TransparencyLog.tick

    def counting(self: TransparencyLog, *, force: bool = False) -> Any:
        ticks.append(force)
        return real(self, force=force)

    monkeypatch.setattr(TransparencyLog, "tick", counting)
    assert main(["bench", "sequencer", "--rounds", "41", "--per-round", "3", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "sequencer" and result["rounds"] == 41
    for schedule in sequencer.SCHEDULES:
        assert result[f"{schedule}_node_us"] > 0, schedule
    assert set(result["tree_every_round_over_chain_us"]) == {"node", "postgres"}
    # every_round: 41 ticks and the final forced one; once_a_second: rounds 0, 20, 40 and the forced one.
    assert ticks.count(False) == 41 + 3 and ticks.count(True) == 2

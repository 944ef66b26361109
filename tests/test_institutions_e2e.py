"""Access institutions end to end, real processes: ``xinrong node institutions add`` onboards a
bank at run time (no config edit, no restart) and the new bank verifies a claim with an
enterprise's consent; a rate limit and a suspension refuse it; the CLI lists and counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong.tools.demo_institutions import play_institutions
from xinrong.tools.localnet import LocalPlatform, deploy, first_enterprise, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = pytest.mark.e2e

AS_OF = "2026-09-30"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, Path]]:
    workdir = tmp_path_factory.mktemp("inst-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=200, seed=11, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        yield deploy(workdir, providers=["tax"], institutions=["bank-a"], data_dir=data, group=group), data


def _cli(plat: LocalPlatform, *args: str) -> list[dict[str, object]]:
    result = plat.group.run_cli(
        ["node", "institutions", *args, "--config", str(plat.node_config), "--address", plat.node_address, "--json"]
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_onboard_at_run_time_verify_quota_and_suspension(platform: tuple[LocalPlatform, Path]) -> None:
    plat, data = platform
    counters = play_institutions(plat, first_enterprise(data, "tax"), AS_OF, say=lambda _line: None)
    assert counters == {"suspended_refused": 1, "quota_refused": 1, "institutions_onboarded": 1}
    listed = {i["id"]: i for i in _cli(plat, "list")}
    assert listed["bank-a"]["source"] == "config" and listed["bank-c"]["source"] == "registered"
    assert listed["bank-c"]["status"] == "active"
    usage = _cli(plat, "usage", "--id", "bank-c")[0]
    assert usage["decision"] == {"ALLOWED": 3}  # the guard's refusals reach no admission, so no audit row
    assert usage["purpose"] == {"Verify": 3} and usage["provider"] == {"tax": 3}
    # The handed-over credentials directory holds the institution's keys.
    creds = plat.keys_dir / "institutions" / "bank-c"
    assert {"tls.key", "tls.crt", "signing.key", "sealing.key", "binding.pb", "ca.crt"} <= {
        p.name for p in creds.iterdir()
    }
    due = _cli(plat, "due", "--days", "30")
    assert {i["id"] for i in due} == {"bank-a", "bank-c"}  # never assessed
    assessed = _cli(
        plat, "assess", "--id", "bank-c", "--result", "pass", "--valid-until", "2099-01-01", "--assessor", "lab"
    )[0]
    assert assessed["assessment"]["result"] == "pass"  # type: ignore[index]
    assert {i["id"] for i in _cli(plat, "due", "--days", "30")} == {"bank-a"}

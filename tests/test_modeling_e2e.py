"""Joint modeling end to end with real processes: ``xinrong model train`` and ``xinrong bank score``.

The node and two provider agents run as separate processes (``xinrong.tools.localnet``)
on synthetic data (``xinrong data generate``): the agents model on their own
imported stores (catalog fields of the active period), the bank on its loan
book (``bank_loans.csv``). Checked through the command line, as an operator
would run it: a training job with its reports and the node's record of it;
scoring an enterprise with its consent, and refusing one without; the batch
form; and a provider killed mid-training: the command fails with a clear
message, the node lists the job FAILED, no share exists anywhere, and after
the provider comes back ``--resume`` finishes the job.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong.bank.modeling import ModelingClient
from xinrong.consent import write_consent
from xinrong.enterprise.client import ConsentRequest, grant
from xinrong.keys.layout import PartyCredentials, load_ca, load_party, party_dir, provision_party
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import modeling_pb2

pytestmark = pytest.mark.e2e

PROVIDERS = ["tax", "electricity"]
PERIOD = ("2025-01-01", "2026-12-31")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    workdir = tmp_path_factory.mktemp("modeling-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=1500, seed=11, as_of="2026-09-30")
    modeling = {p: {"enabled": True, "allowed_institutions": ["bank-a"], "allow_insecure": True} for p in PROVIDERS}
    with ProcessGroup(workdir) as group:
        yield deploy(
            workdir,
            providers=PROVIDERS,
            institutions=["bank-a", "bank-b"],
            data_dir=data,
            group=group,
            verbose=True,
            agent_modeling=modeling,
            node_overrides={"modeling_allow_insecure": True, "modeling_step_timeout_seconds": 30},
        )


def _job_file(plat: LocalPlatform, job_id: str, **train: object) -> Path:
    cfg = {"epochs": 8, "batch_size": 64, "learning_rate": 0.3, **train}
    lines = [
        "[job]",
        f'id = "{job_id}"',
        f'node = "{plat.node_address}"',
        f'credentials = "{party_dir(plat.keys_dir, "institution", "bank-a")}"',
        'providers = ["tax", "electricity"]',
        'backend = "plain"',
        "allow_plain = true",
        f'output = "{plat.workdir / "models" / job_id}"',
        "",
        "[data]",
        f'labels = "{plat.workdir / "data" / "bank_loans.csv"}"',
        'label_column = "defaulted"',
        "",
        "[train]",
        *[f"{k} = {v}" for k, v in cfg.items()],
    ]
    path = plat.workdir / f"{job_id}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(plat: LocalPlatform, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return plat.group.run_cli(list(args), timeout=timeout)


def _models(plat: LocalPlatform, *extra: str) -> list[dict[str, object]]:
    assert plat.node_config is not None
    out = _cli(plat, "node", "models", "list", "--config", str(plat.node_config), *extra)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _enterprise(plat: LocalPlatform, code: str) -> PartyCredentials:
    directory = party_dir(plat.keys_dir, "enterprise", code)
    if not (directory / "binding.pb").exists():
        provision_party(load_ca(plat.keys_dir), plat.keys_dir, role="enterprise", party_id=code, with_sealing=False)
    return load_party(directory)


def _borrowers(plat: LocalPlatform) -> list[str]:
    with open(plat.workdir / "data" / "bank_loans.csv", newline="") as fh:
        return [row["uscc"] for row in csv.DictReader(fh)]


def test_train_then_score_through_the_cli(platform: LocalPlatform) -> None:
    plat = platform
    job = _job_file(plat, "loans-e2e")
    out = _cli(plat, "model", "train", "--config", str(job), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["epochs"] == 8 and result["rows_aligned"] > 400 and result["rows_test"] > 100
    assert result["auc"] > 0.6, result  # the synthetic providers' data predicts defaults
    assert set(result["wire_bytes"]) == {"bank-a", "tax", "electricity", "node"}
    model_dir = plat.workdir / "models" / "loans-e2e"
    for name in (
        "bank.share.json",
        "model.json",
        "model_card.json",
        "model_card.md",
        "roc.png",
        "ks.png",
        "weights_report.md",
    ):
        assert (model_dir / name).is_file(), name
    for provider in PROVIDERS:
        share = plat.workdir / "state" / f"agent-{provider}.modeling" / "loans-e2e" / "share.json"
        names = json.loads(share.read_text())["feature_names"]
        assert names and all(n.startswith(f"{provider}.") for n in names)  # catalog fields of its own store
    (record,) = [m for m in _models(plat) if m["job_id"] == "loans-e2e"]
    assert record["state"] == "SUCCEEDED" and record["institution"] == "bank-a"
    model = record["model"]
    assert isinstance(model, dict) and model["parties"] == {
        "bank-a": "bank",
        "tax": "provider",
        "electricity": "provider",
    }
    assert "weights" not in json.dumps(model)

    # score one enterprise with its consent (purpose credit_scoring, scope over the model's providers) ...
    borrowers = _borrowers(plat)
    scored_one, unconsented = borrowers[3], borrowers[4]
    ent = _enterprise(plat, scored_one)
    consent = grant(ent, ConsentRequest("bank-a", "credit_scoring", ("tax.*", "electricity.*"), *PERIOD, max_uses=5))
    consent_file = plat.workdir / f"consent-{scored_one}.pb"
    write_consent(consent_file, consent)
    out = _cli(
        plat,
        "bank",
        "score",
        "--model",
        str(model_dir),
        "--enterprise",
        scored_one,
        "--consent",
        str(consent_file),
        "--json",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    answer = json.loads(out.stdout)
    assert answer["status"] == "scored" and 0 < answer["probability"] < 1
    assert answer["grade"] in {"A", "B", "C", "D", "E"} and 300 < answer["score"] < 900
    # ... and refuse one without
    out = _cli(plat, "bank", "score", "--model", str(model_dir), "--enterprise", unconsented)
    assert out.returncode == 1
    assert "refused: ACCESS_DENIED" in out.stderr
    # a consent for another purpose does not do either
    other = _enterprise(plat, unconsented)
    wrong = grant(other, ConsentRequest("bank-a", "loan_application", ("tax.*", "electricity.*"), *PERIOD))
    write_consent(plat.workdir / "wrong.pb", wrong)
    out = _cli(
        plat,
        "bank",
        "score",
        "--model",
        str(model_dir),
        "--enterprise",
        unconsented,
        "--consent",
        str(plat.workdir / "wrong.pb"),
    )
    assert out.returncode == 1 and "CLAIM_OUT_OF_SCOPE" in out.stderr and "credit_scoring" in out.stderr

    # the batch form: each row with its own consent; a row without one is refused, not scored
    batch = plat.workdir / "batch.csv"
    batch.write_text(f"uscc,consent\n{scored_one},{consent_file.name}\n{unconsented},\n")
    out = _cli(
        plat,
        "bank",
        "score",
        "--model",
        str(model_dir),
        "--input",
        str(batch),
        "--output",
        str(plat.workdir / "scores.csv"),
    )
    assert out.returncode == 0, out.stderr
    assert "scored 1 of 2" in out.stdout and "ACCESS_DENIED x1" in out.stdout
    with open(plat.workdir / "scores.csv", newline="") as fh:
        rows = {r["uscc"]: r for r in csv.DictReader(fh)}
    assert rows[scored_one]["status"] == "scored"
    assert abs(float(rows[scored_one]["probability"]) - answer["probability"]) < 1e-4
    assert rows[unconsented]["status"] == "refused" and rows[unconsented]["reason"] == "ACCESS_DENIED"
    assert rows[unconsented]["probability"] == ""


def test_a_killed_provider_fails_the_job_cleanly_and_resume_finishes_it(platform: LocalPlatform) -> None:
    plat = platform
    job = _job_file(plat, "loans-kill", epochs=40)
    train = subprocess.Popen(
        [sys.executable, "-m", "xinrong.tools.cli", "model", "train", "--config", str(job), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    creds = load_party(party_dir(plat.keys_dir, "institution", "bank-a"))
    deadline = time.monotonic() + 120
    with ModelingClient(plat.node_address, creds, timeout=10) as client:
        while True:
            assert time.monotonic() < deadline and train.poll() is None, "training ended before the kill"
            try:
                status = client.call("GetJob", modeling_pb2.GetJobRequest(job_id="loans-kill"))
                if status.epochs_done >= 2:
                    break
            except Exception:
                pass
            time.sleep(0.05)
    old_port = plat.provider_ports["electricity"]
    plat.group.kill("agent-electricity")
    stdout, stderr = train.communicate(timeout=120)
    assert train.returncode == 1, stdout + stderr
    assert "PROVIDER_UNAVAILABLE" in stderr and "provider electricity did not answer" in stderr
    assert "--resume" in stderr
    (record,) = _models(plat, "--state", "failed")
    assert record["job_id"] == "loans-kill" and "electricity" in str(record["failure_reason"])
    # nothing half-written: no share at the bank or at any provider
    assert not (plat.workdir / "models" / "loans-kill" / "bank.share.json").exists()
    assert not list(plat.workdir.glob("state/*.modeling/loans-kill/share.json"))
    # the provider comes back at its address; the job resumes from the last common checkpoint
    config = plat.agent_configs["electricity"]
    config.write_text(config.read_text().replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{old_port}"'))
    plat.start_agents(["electricity"])
    out = _cli(plat, "model", "train", "--config", str(job), "--resume", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["resumed_from"] >= 2 and result["epochs"] == 40
    assert len(result["epoch_losses"]) == 40
    assert len(list(plat.workdir.glob("state/*.modeling/loans-kill/share.json"))) == 2
    assert [m["state"] for m in _models(plat) if m["job_id"] == "loans-kill"] == ["SUCCEEDED"]

"""``xinrong demo``: the whole verification story on one machine, checked.

Generates keys and synthetic data, starts every provider agent and the node
as separate processes on 127.0.0.1 over mTLS, and plays a scripted bank
session: consent -> verify -> indicators -> revoke -> refused -> probing
refused. Every verdict and indicator is checked against the generated CSVs
(read here independently of the agent's code). Ends with one JSON line and
exits non-zero if any check fails; every process it started is stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from xinrong.bank.client import BankClient, CheckedIndicator, CheckedVerdict
from xinrong.catalog import Catalog, FieldSpec, FieldType, default_catalog
from xinrong.claims import check_claim, parse_claim
from xinrong.config import ConfigError
from xinrong.consent import parse_consent, write_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import common_pb2

DEFAULT_PROVIDERS = [
    "tax",
    "social_insurance",
    "housing_fund",
    "electricity",
    "water",
    "gas",
    "market",
    "judicial",
    "real_estate",
]

VERIFY_CLAIMS = [
    "tax.credit_grade in A,B",
    "tax.in_arrears == false",
    "tax.consecutive_normal_months >= 12",
    "social_insurance.consecutive_months >= 12",
    "social_insurance.avg_insured_headcount in [10,50)",
    "housing_fund.consecutive_normal_months >= 6",
    "electricity.avg_spend_6m in [5000,20000)",
    "electricity.in_arrears == false",
    "water.avg_use_3m >= 50",
    "gas.in_arrears == false",
    "market.status in in_business",
    "judicial.dishonest_debtor == false",
    "real_estate.property_count >= 1",
]

INDICATOR_QUERIES = [
    ("tax.credit_grade", "grade"),
    ("tax.in_arrears", "flag"),
    ("electricity.avg_spend_12m", "bracket"),
    ("housing_fund.avg_contributors", "bracket"),
    ("market.registered_capital", "bracket"),
    ("water.avg_use_6m", "bracket"),
]


# --- ground truth, read straight from the generated CSVs -----------------------------


def _typed(spec: FieldSpec, text: str) -> Any:
    if text == "":
        return None
    if spec.type is FieldType.BOOL:
        return text == "true"
    if spec.type in (FieldType.INT, FieldType.DECIMAL):
        return Decimal(text)
    return text


class GroundTruth:
    """The generated CSVs, to check every signed answer against."""

    def __init__(self, data_dir: Path, catalog: Catalog, providers: list[str]) -> None:
        self.catalog = catalog
        self.rows: dict[str, dict[str, dict[str, str]]] = {}
        for provider in providers:
            with open(data_dir / f"{provider}.csv", newline="") as fh:
                self.rows[provider] = {row["uscc"]: row for row in csv.DictReader(fh)}

    def value(self, field: str, enterprise: str) -> Any:
        spec = self.catalog.field(field)
        row = self.rows[spec.provider].get(enterprise)
        return None if row is None else _typed(spec, row[spec.column])

    def expected_verdict(self, claim: str, enterprise: str) -> str:
        checked = check_claim(self.catalog, parse_claim(claim))
        c = checked.claim
        value = self.value(c.field, enterprise)
        if value is None:
            return "NO_DATA"
        op = c.op
        if op == common_pb2.CLAIM_OPERATOR_EQ:
            truth = value == (c.values[0] == "true")
        elif op == common_pb2.CLAIM_OPERATOR_IN:
            truth = value in set(c.values)
        elif op == common_pb2.CLAIM_OPERATOR_GE:
            truth = value >= Decimal(c.values[0])
        elif op == common_pb2.CLAIM_OPERATOR_LT:
            truth = value < Decimal(c.values[0])
        else:
            lo, hi = Decimal(c.values[0]), (Decimal(c.values[1]) if c.values[1] else None)
            truth = value >= lo and (hi is None or value < hi)
        return "TRUE" if truth else "FALSE"

    def expected_indicator(self, field: str, enterprise: str) -> Any:
        spec = self.catalog.field(field)
        value = self.value(field, enterprise)
        if value is None:
            return None
        if spec.type is FieldType.BOOL or spec.type is FieldType.ENUM:
            return value
        index = -1
        for i, edge in enumerate(spec.edges):
            if value >= edge:
                index = i
        return index

    def enterprises_present_everywhere(self) -> list[str]:
        sets = [set(rows) for rows in self.rows.values()]
        return sorted(set.intersection(*sets))

    def enterprises_with_gap(self, present: str, absent: str) -> list[str]:
        """Enterprises one provider knows and another does not (to show NO_DATA)."""
        return sorted(set(self.rows[present]) - set(self.rows[absent]))


# --- the scripted session -----------------------------------------------------------


@dataclass
class Tally:
    verified: int = 0
    signatures_ok: int = 0
    indicators: int = 0
    denied_as_expected: int = 0
    refusals_attempted: int = 0
    mismatches_vs_ground_truth: int = 0
    unexpected: list[str] = field(default_factory=list)


def _say(text: str) -> None:
    print(text, flush=True)


def _check_verdicts(verdicts: list[CheckedVerdict], truth: GroundTruth, enterprise: str, tally: Tally) -> None:
    for v in verdicts:
        expected = truth.expected_verdict(v.claim, enterprise)
        ok = v.result == expected
        tally.verified += 1
        tally.signatures_ok += 1  # BankClient returns only signature-checked verdicts
        if not ok:
            tally.mismatches_vs_ground_truth += 1
        mark = "ok" if ok else f"MISMATCH (csv says {expected})"
        _say(f"    {v.result:8s} {v.claim:52s} signed by {v.provider:17s} {mark}")


def _check_indicators(indicators: list[CheckedIndicator], truth: GroundTruth, enterprise: str, tally: Tally) -> None:
    for ind in indicators:
        expected = truth.expected_indicator(ind.field, enterprise)
        got: Any = ind.value
        if isinstance(got, dict):
            got = got["index"]
        ok = got == expected
        tally.indicators += 1
        tally.signatures_ok += 1
        if not ok:
            tally.mismatches_vs_ground_truth += 1
        mark = "ok" if ok else f"MISMATCH (csv says {expected})"
        _say(f"    {ind.field:38s} {ind.form:8s} {json.dumps(ind.value):40s} {mark}")


def _expect_refusal(tally: Tally, label: str, reason: str, action: Callable[[], object]) -> None:
    tally.refusals_attempted += 1
    try:
        action()
    except RemoteError as exc:
        if exc.reason == reason:
            tally.denied_as_expected += 1
            _say(f"    refused as expected: {label}: {exc.code.name} {exc.reason}")
            return
        tally.unexpected.append(f"{label}: expected {reason}, got {exc.reason}")
        _say(f"    UNEXPECTED refusal for {label}: {exc}")
        return
    except Exception as exc:
        tally.unexpected.append(f"{label}: expected {reason}, got {type(exc).__name__}: {exc}")
        _say(f"    UNEXPECTED error for {label}: {exc}")
        return
    tally.unexpected.append(f"{label}: expected refusal {reason}, but it was allowed")
    _say(f"    NOT REFUSED: {label}")


def play_session(platform: LocalPlatform, truth: GroundTruth, as_of: str) -> Tally:
    tally = Tally()
    catalog = truth.catalog
    full = truth.enterprises_present_everywhere()
    partial = truth.enterprises_with_gap("tax", "housing_fund")
    if not full or not partial:
        raise RuntimeError("generated data has no enterprise present everywhere / missing at the housing fund")
    e1, e2 = full[len(full) // 2], partial[len(partial) // 3]
    bank_a = load_party(party_dir(platform.keys_dir, "institution", "bank-a"))
    bank_b = load_party(party_dir(platform.keys_dir, "institution", "bank-b"))
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{as_of[:4]}-12-31")
    all_scope = tuple(f"{p}.*" for p in truth.rows)
    deployed = tuple(f"{p}." for p in truth.rows)
    verify_claims = [c for c in VERIFY_CLAIMS if c.startswith(deployed)]
    indicator_queries = [q for q in INDICATOR_QUERIES if q[0].startswith(deployed)]

    with (
        BankClient(platform.node_address, bank_a, catalog=catalog) as bank,
        BankClient(platform.node_address, bank_b, catalog=catalog) as other_bank,
    ):
        _say("\n[1] enterprises sign consents for bank-a (Ed25519, CA-bound keys)")
        creds1, creds2 = platform.enterprise(e1), platform.enterprise(e2)
        consent1 = grant(creds1, ConsentRequest("bank-a", "loan_application", all_scope, *period, max_uses=20))
        consent2 = grant(
            creds2,
            ConsentRequest(
                "bank-a", "loan_application", ("tax.*", "electricity.*", "housing_fund.*"), *period, max_uses=20
            ),
        )
        with EnterpriseClient(platform.node_address, creds1) as ent1:
            ent1.register(consent1)
        bank.register_consent(consent2)  # a grantee may register the consent it holds
        id1, id2 = parse_consent(consent1).consent_id, parse_consent(consent2).consent_id
        _say(f"    {e1}: consent {id1} (all providers, 20 uses)")
        _say(f"    {e2}: consent {id2} (tax, electricity and housing fund only)")

        _say(f"\n[2] bank-a verifies {len(verify_claims)} claims about {e1} across {len(truth.rows)} providers")
        _check_verdicts(bank.verify(e1, verify_claims, id1), truth, e1, tally)
        claims2 = [c for c in verify_claims if c.startswith(("tax.", "electricity.", "housing_fund."))]
        _say(f"    ... and {len(claims2)} claims about {e2}, unknown to the housing fund (NO_DATA)")
        _check_verdicts(bank.verify(e2, claims2, id2), truth, e2, tally)

        _say("\n[3] bank-a reads indicators in their published forms")
        _check_indicators(bank.indicators(e1, indicator_queries, id1), truth, e1, tally)

        _say("\n[4] probing and misuse are refused")
        _expect_refusal(
            tally,
            "threshold off the published ladder (>= 13)",
            "THRESHOLD_NOT_PUBLISHED",
            lambda: bank.verify(e1, ["social_insurance.consecutive_months >= 13"], id1, precheck=False),
        )
        _expect_refusal(
            tally,
            "bracket with an unpublished edge [1234,5000)",
            "THRESHOLD_NOT_PUBLISHED",
            lambda: bank.verify(e1, ["electricity.avg_spend_6m in [1234,5000)"], id1, precheck=False),
        )
        _expect_refusal(
            tally,
            "value of a verification-only field",
            "FORM_NOT_ALLOWED",
            lambda: bank.indicators(e1, [("social_insurance.avg_insured_headcount", "bracket")], id1),
        )
        _expect_refusal(
            tally,
            "field outside the consent's scope",
            "CLAIM_OUT_OF_SCOPE",
            lambda: bank.verify(e2, ["social_insurance.in_arrears == false"], id2),
        )
        _expect_refusal(
            tally,
            "bank-b using bank-a's consent",
            "ACCESS_DENIED",
            lambda: other_bank.verify(e1, ["tax.in_arrears == false"], id1),
        )
        _expect_refusal(
            tally,
            "a consent id the node never saw",
            "ACCESS_DENIED",
            lambda: bank.verify(e1, ["tax.in_arrears == false"], str(uuid.uuid4())),
        )
        _expect_refusal(
            tally,
            "e2's consent used for e1",
            "ACCESS_DENIED",
            lambda: bank.verify(e1, ["tax.in_arrears == false"], id2),
        )
        replay_id = str(uuid.uuid4())
        _check_verdicts(bank.verify(e2, ["tax.in_arrears == false"], id2, request_id=replay_id), truth, e2, tally)
        _expect_refusal(
            tally,
            "the same request id again",
            "REQUEST_REPLAYED",
            lambda: bank.verify(e2, ["tax.in_arrears == false"], id2, request_id=replay_id),
        )

        _say(f"\n[5] {e1} revokes its consent; the node pushes the revocation to every agent")
        with EnterpriseClient(platform.node_address, creds1) as ent1:
            resp = ent1.revoke(id1)
        _say(
            f"    state {common_pb2.ConsentState.Name(resp.state)}, "
            f"acknowledged by {len(resp.providers_notified)} providers"
        )
        _expect_refusal(
            tally,
            "verify after revocation",
            "CONSENT_REVOKED",
            lambda: bank.verify(e1, ["tax.credit_grade in A,B"], id1),
        )
    return tally


@dataclass
class LogTally:
    checkpoints_verified: int = 0
    inclusion_proofs_ok: int = 0
    consistency_proofs_ok: int = 0
    split_view_detected: bool = False
    reconcile_mismatches: int = -1

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoints_verified": self.checkpoints_verified,
            "inclusion_proofs_ok": self.inclusion_proofs_ok,
            "consistency_proofs_ok": self.consistency_proofs_ok,
            "split_view_detected": self.split_view_detected,
            "reconcile_mismatches": self.reconcile_mismatches,
        }


def transparency_session(platform: LocalPlatform, truth: GroundTruth, as_of: str) -> LogTally:
    """The log side: a bank proves its accesses, an enterprise lists and proves who accessed it,
    witnesses demand consistency, a forged checkpoint is caught, agents' answers reconcile."""
    from xinrong.tlog.client import audit_origin
    from xinrong.tlog.note import Checkpoint, sign_checkpoint
    from xinrong.tlog.witness import SplitView, Witness

    logs = LogTally()
    catalog = truth.catalog
    enterprise = truth.enterprises_present_everywhere()[0]
    creds = platform.enterprise(enterprise)
    state = platform.workdir / "state"
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{as_of[:4]}-12-31")
    consent = grant(creds, ConsentRequest("bank-a", "loan_application", ("tax.*",), *period, max_uses=10))
    consent_id = parse_consent(consent).consent_id
    bank_witness = Witness(state / "bank-a.witness.json")
    _say("\n[7] the transparency log: proofs a bank and an enterprise check themselves")
    with BankClient(
        platform.node_address,
        load_party(party_dir(platform.keys_dir, "institution", "bank-a")),
        catalog=catalog,
        witness=bank_witness,
    ) as bank:
        bank.register_consent(consent)
        log = bank.node_log()
        for _ in range(3):
            held = log.witness.held(log.origin)
            bank.verify(enterprise, ["tax.in_arrears == false"], consent_id)
            leaf = bank.last_audit_leaf
            if leaf is None:
                raise RuntimeError("the node named no audit leaf for an admitted verify")
            checkpoint = bank.prove_access(leaf)  # a newer checkpoint is accepted only with a consistency proof
            logs.checkpoints_verified += 1
            logs.inclusion_proofs_ok += 1
            grown = held is not None and checkpoint.size > held.checkpoint.size
            logs.consistency_proofs_ok += int(grown)
            since = f", consistent with the {held.checkpoint.size} held" if grown and held else ""
            _say(
                f"    bank-a: verify of {enterprise} is audit leaf {leaf}, proven in the signed tree of {checkpoint.size}{since}"
            )
        newer = log.checkpoint()
        # A node that equivocates: a second checkpoint of the same size with another root.
        node_key = load_party(party_dir(platform.keys_dir, "node", "node")).signing_key
        forged = sign_checkpoint(Checkpoint(audit_origin("node"), newer.size, bytes(32)), node_key)
        try:
            log.accept(forged)
        except SplitView as alarm:
            logs.split_view_detected = True
            _say(f"    forged checkpoint caught: {alarm.why} (both signed notes kept as evidence)")
    with EnterpriseClient(platform.node_address, creds, witness=Witness(state / "enterprise.witness.json")) as ent:
        accesses = ent.accesses()
    logs.checkpoints_verified += 1
    logs.inclusion_proofs_ok += len(accesses)
    verifies = [a for a in accesses if a.method == "Verify" and a.decision == "ALLOWED"]
    _say(f"    {enterprise}: {len(accesses)} entries about it, each proven; {len(verifies)} verifies by bank-a")
    logs.reconcile_mismatches = _reconcile(platform)
    return logs


def _reconcile(platform: LocalPlatform) -> int:
    """Export every agent's signed answer log and match it with the node's ALLOWED entries."""
    assert platform.node_config is not None
    time.sleep(1.5)  # agents fold and sign their answers every second
    exports = []
    for provider, config in platform.agent_configs.items():
        out = platform.workdir / "state" / f"answers-{provider}.json"
        result = platform.group.run_cli(["agent", "audit", "export", "--config", str(config), "--out", str(out)])
        if result.returncode != 0:
            raise RuntimeError(f"answer log export of {provider} failed: {result.stderr.strip()}")
        exports += ["--agent-export", str(out)]
    result = platform.group.run_cli(["node", "audit", "reconcile", "--config", str(platform.node_config), *exports])
    report = json.loads(result.stdout)
    _say(
        f"    reconcile: {report['matched']} admissions matched with agents' signed answers, "
        f"{report['mismatches']} on one side only"
    )
    return int(report["mismatches"])


def play_evaluation(platform: LocalPlatform, truth: GroundTruth, period: str) -> tuple[int, int]:
    """Full-coverage evaluation of every demo enterprise; (evaluated, mismatches vs the CSVs).

    ``xinrong node evaluate`` as an operator runs it, every stored score and
    grade checked against the index applied to the generated CSVs, and one
    enterprise reading its own score and breakdown (``xinrong enterprise score``).
    """
    from xinrong.index import default_index
    from xinrong.node.config import load_config
    from xinrong.node.evaluation import EvaluationStore

    if "market" not in truth.rows or platform.node_config is None:
        _say("\n[7] full-coverage evaluation skipped: it needs the market register agent")
        return 0, 0
    result = platform.group.run_cli(
        ["node", "evaluate", "--config", str(platform.node_config), "--period", period], timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"node evaluate failed: {result.stderr.strip()}")
    run = json.loads(result.stdout.strip().splitlines()[-1])
    _say(
        f"\n[7] full-coverage evaluation {run['evaluation_id']}: {run['enterprises']} enterprises, "
        f"{run['evaluated']} scored, {run['withheld']} withheld (< 2 providers), {run['seconds']} s; grades {run['grades']}"
    )
    index = default_index()
    store = EvaluationStore(load_config(platform.node_config).evaluation_path())
    mismatches = 0
    for code in sorted(truth.rows["market"]):
        present = sum(code in rows for rows in truth.rows.values())
        total = sum(item.points(truth.value(item.field, code)) for item in index.items if item.provider in truth.rows)
        record = store.lookup(code, period)
        expected = (index.score(total), index.grade(index.score(total))) if present >= index.min_providers else None
        got = (record.score, record.grade) if record is not None and record.scored else None
        mismatches += expected != got
    code = truth.enterprises_present_everywhere()[0]
    creds_dir = party_dir(platform.keys_dir, "enterprise", code)
    platform.enterprise(code)
    own = platform.group.run_cli(
        ["enterprise", "score", "--credentials", str(creds_dir), "--node", platform.node_address, "--period", period]
    )
    if own.returncode != 0:
        raise RuntimeError(f"enterprise score failed: {own.stderr.strip()}")
    view = json.loads(own.stdout)
    _say(
        f"    enterprise {code} sees its own score {view['score']} ({view['grade']}), breakdown from "
        f"{len(view['breakdown'])} providers summing to {view['breakdown_points']} of the index's "
        f"{index.max_total} points (score = 1000 x points / {index.max_total}); mismatches: {mismatches}"
    )
    return int(run["evaluated"]), mismatches


def _audit_ok(platform: LocalPlatform) -> bool:
    assert platform.node_config is not None
    result = platform.group.run_cli(["node", "audit", "verify", "--config", str(platform.node_config)])
    _say(f"\n[8] node audit log: {result.stdout.strip() or result.stderr.strip()}")
    return result.returncode == 0


# A demo work dir carries this file; a folder without it is never deleted.
MARKER = ".xinrong-demo"
REQUIRED_PROVIDERS = {"tax", "social_insurance", "housing_fund", "electricity"}
# The port docs/examples/job.toml names: --keep binds the node there unless told otherwise.
KEEP_NODE_PORT = 50051
JOB_PROVIDERS = ("tax", "social_insurance", "electricity")


def _check_args(args: argparse.Namespace, catalog: Catalog) -> list[str]:
    """Everything about the arguments, before anything is touched on disk."""
    providers = [p for p in args.providers.split(",") if p]
    unknown = sorted(set(providers) - set(catalog.providers))
    if unknown:
        raise ConfigError(f"--providers: {unknown} are not catalog providers {sorted(catalog.providers)}")
    if not set(providers) >= REQUIRED_PROVIDERS:
        raise ConfigError(f"--providers: the demo needs at least {sorted(REQUIRED_PROVIDERS)}")
    if args.enterprises < 100:
        raise ConfigError("--enterprises: the demo needs at least 100 enterprises")
    if args.node_port is None:
        args.node_port = KEEP_NODE_PORT if args.keep else 0
    if not 0 <= args.node_port <= 65535:
        raise ConfigError(f"--node-port {args.node_port} is out of range")
    return providers


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` for a new run, refusing any folder the demo did not make.

    Only a folder holding the demo's marker file is deleted; an empty or
    missing folder is (re)created; the folder the user stands in is never
    removed from under them.
    """
    if workdir.exists():
        if not workdir.is_dir():
            raise ConfigError(f"--workdir {workdir} exists and is not a folder")
        if any(workdir.iterdir()):
            if not (workdir / MARKER).is_file():
                raise ConfigError(
                    f"--workdir {workdir} is not empty and was not made by xinrong demo (no {MARKER} in it); "
                    "give a new or empty folder (a folder left by an older demo: remove it yourself)"
                )
            cwd = Path.cwd().resolve()
            if cwd == workdir or workdir in cwd.parents:
                raise ConfigError(f"--workdir {workdir} holds the current directory; run the demo from elsewhere")
            shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by xinrong demo: the next demo run may delete this folder\n")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    catalog = default_catalog()
    providers = _check_args(args, catalog)
    workdir = Path(args.workdir).resolve()
    prepare_workdir(workdir)
    data_dir = workdir / "data"
    _say(
        f"xinrong demo: {args.enterprises} synthetic enterprises, {len(providers)} provider agents, "
        f"node, 2 banks - all on 127.0.0.1 over mTLS (work dir {workdir})"
    )
    generate_data(data_dir, enterprises=args.enterprises, seed=args.seed, as_of=args.as_of)
    summary: dict[str, Any] = {}
    ok = False
    institutions = ["bank-a", "bank-b"]
    with ProcessGroup(workdir) as group:
        try:
            platform = deploy(
                workdir,
                providers=providers,
                institutions=institutions,
                data_dir=data_dir,
                group=group,
                node_overrides={"bind": f"127.0.0.1:{args.node_port}"},
                # --keep leaves a network to try joint modeling against.
                agent_modeling={p: {"enabled": True, "allowed_institutions": institutions} for p in providers}
                if args.keep
                else None,
            )
            _say(
                f"    node on {platform.node_address}; agents: "
                + ", ".join(f"{p}:{port}" for p, port in platform.provider_ports.items())
            )
            truth = GroundTruth(data_dir, catalog, providers)
            tally = play_session(platform, truth, args.as_of)
            rights = _subject_rights(platform, truth, args.as_of, tally)
            logs = transparency_session(platform, truth, args.as_of)
            audit_ok = _audit_ok(platform)
            evaluated, evaluation_mismatches = play_evaluation(platform, truth, args.as_of[:7])
            institutions_tally = _institutions(platform, truth, args.as_of)
            push = _push(platform, truth, args.as_of[:7]) if evaluated else {}
            from xinrong.tools.demo_public import play_public  # Issue 12: public records, filing, signed report

            public = play_public(platform, truth.enterprises_present_everywhere()[0], data_dir=data_dir)
            _say(f"\n[9] public records, a voluntary filing and a node-signed credit report verified offline: {public}")
            from xinrong.tools.demo_match import play_matching

            matching = play_matching(platform, truth, args.as_of)
            from xinrong.tools.demo_alerts import play_alerts  # post-loan monitoring (issue 13 §4)

            alerts = play_alerts(platform, data_dir, args.as_of, _say)
        except Exception as exc:
            _say(f"\ndemo failed: {type(exc).__name__}: {exc}")
            for party in group.parties.values():
                tail = party.log_tail(15)
                if tail:
                    _say(f"--- {party.name} log ---\n{tail}")
            tally, audit_ok = Tally(unexpected=[f"{type(exc).__name__}: {exc}"]), False
            rights = {}
            logs = LogTally()
            evaluated, evaluation_mismatches = 0, -1
            institutions_tally = {}
            push = {}
            public = {}
            matching = {"matches_correct": 0, "matches_total": -1, "applications": 0}
            alerts = {"alerts_delivered": 0, "alerts_expected": 1}
        summary = {
            "verified": tally.verified,
            "signatures_ok": tally.signatures_ok,
            "indicators": tally.indicators,
            "denied_as_expected": tally.denied_as_expected,
            "mismatches_vs_ground_truth": tally.mismatches_vs_ground_truth,
            "unexpected": len(tally.unexpected),
            "audit_chain_ok": audit_ok,
            **rights,
            **logs.as_dict(),
            "evaluated": evaluated,
            "evaluation_mismatches": evaluation_mismatches,
            **institutions_tally,
            **push,
            **public,
            # Pushed to subscribed banks: the whitelist addition and the public-record change of a new period.
            "pushed_events": int(push.get("pushed_events", 0)) + int(public.get("public_changes_pushed", 0)),
            **matching,
            **alerts,
            "providers": len(providers),
            "enterprises": args.enterprises,
            "seconds": round(time.monotonic() - started, 1),
        }
        ok = (
            not tally.unexpected
            and tally.mismatches_vs_ground_truth == 0
            and tally.verified > 0
            and tally.signatures_ok == tally.verified + tally.indicators
            and tally.denied_as_expected == tally.refusals_attempted >= 9
            and audit_ok
            and logs.split_view_detected
            and logs.reconcile_mismatches == 0
            and logs.inclusion_proofs_ok > 0
            and logs.consistency_proofs_ok > 0
            and evaluation_mismatches == 0
            and push.get("whitelist_pushed", 0) == push.get("whitelist_expected", 0)
            and push.get("whitelist_leaked", 0) == 0
            and public.get("reports_verified") == 1
            and public.get("public_changes_pushed") == 1
            and public.get("reports_rendered") == 1
            and matching["matches_correct"] == matching["matches_total"]
            and alerts.get("alerts_delivered") == alerts.get("alerts_expected")
        )
        for problem in tally.unexpected:
            print(f"problem: {problem}", file=sys.stderr)
        print(json.dumps(summary), flush=True)
        if ok and args.keep:
            keep_running(platform, truth, args.as_of)
    return 0 if ok else 1


def _institutions(platform: LocalPlatform, truth: GroundTruth, as_of: str) -> dict[str, int]:
    """A third bank onboarded at run time, a quota and a suspension refusal (xinrong.tools.demo_institutions)."""
    if "tax" not in truth.rows:
        return {}
    from xinrong.tools.demo_institutions import play_institutions

    return play_institutions(platform, truth.enterprises_present_everywhere()[0], as_of, _say)


def _subject_rights(platform: LocalPlatform, truth: GroundTruth, as_of: str, tally: Tally) -> dict[str, int]:
    """The enterprise's rights (xinrong.tools.subject_demo); its problems join the session's."""
    if "tax" not in truth.rows:
        return {}
    from xinrong.tools.subject_demo import play_subject_rights

    rights = play_subject_rights(platform, truth.rows["tax"], as_of, _say)
    tally.unexpected.extend(f"subject rights: {p}" for p in rights.problems)
    return rights.summary()


def _push(platform: LocalPlatform, truth: GroundTruth, period: str) -> dict[str, int]:
    """Financing demands, the whitelist and the push stream (xinrong.tools.demo_push)."""
    from xinrong.tools.demo_push import play_push

    _say("\n[9] financing demands, the whitelist and the push stream")
    return play_push(platform, truth.rows.get("market", {}), period, _say)


def _shown(path: Path) -> str:
    """A path as the user would type it from where they stand."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _write_job(platform: LocalPlatform, workdir: Path) -> Path:
    """A job file for the kept network, as docs/examples/job.toml but with this run's paths."""
    job = workdir / "config" / "job.toml"
    job.write_text(
        "# Written by xinrong demo --keep: xinrong model train --config THIS\n"
        "[job]\n"
        'id = "demo-default"\n'
        f"node = {json.dumps(platform.node_address)}\n"
        f"credentials = {json.dumps(str(party_dir(platform.keys_dir, 'institution', 'bank-a')))}\n"
        f"providers = {json.dumps(list(JOB_PROVIDERS))}\n"
        'backend = "ckks"\n'
        f"output = {json.dumps(str(workdir / 'models' / 'demo-default'))}\n\n"
        "[data]\n"
        f"labels = {json.dumps(str(workdir / 'data' / 'bank_loans.csv'))}\n"
        'label_column = "defaulted"\n'
        'features = ["loan_amount", "years_with_bank"]\n\n'
        "[train]\nepochs = 4\nbatch_size = 4096\nlearning_rate = 0.5\n"
    )
    return job


# A one-page PDF, as the evidence a README example attaches to an objection.
_EVIDENCE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def _write_env(platform: LocalPlatform, workdir: Path, enterprise: str, job: Path) -> Path:
    """``env.sh`` for the README's sections after the walk-through: they run as written
    against the kept network once it is sourced (paths absolute, so from any folder)."""
    assert platform.node_config is not None
    bank = party_dir(platform.keys_dir, "institution", "bank-a")
    bank_toml = workdir / "config" / "bank.toml"
    bank_toml.write_text(
        "# Written by xinrong demo --keep: the bank CLI's --config (node address and bank-a's credentials)\n"
        f"[bank]\nnode = {json.dumps(platform.node_address)}\ncredentials = {json.dumps(str(bank))}\n"
    )
    evidence = workdir / "letter.pdf"
    evidence.write_bytes(_EVIDENCE_PDF)
    values = {
        "XR": workdir,
        "N": platform.node_address,
        "USCC": enterprise,
        "E": party_dir(platform.keys_dir, "enterprise", enterprise),
        "B": bank,
        "NODE_TOML": platform.node_config,
        "BANK_TOML": bank_toml,
        "JOB_TOML": job,
        "CONSENT": workdir / "consents" / "try.pb",
        "SCORING": workdir / "consents" / "scoring.pb",
        "MONITORING": workdir / "consents" / "monitoring.pb",
        "EVIDENCE": evidence,
    }
    for provider, config in sorted(platform.agent_configs.items()):
        values[f"AGENT_{provider.upper()}"] = config
    lines = ["# Written by xinrong demo --keep; `source` it in another shell while the demo runs."]
    lines += [
        f"export {name}={shlex.quote(str(value.resolve() if isinstance(value, Path) else value))}"
        for name, value in values.items()
    ]
    env = workdir / "env.sh"
    env.write_text("\n".join(lines) + "\n")
    return env


def keep_running(platform: LocalPlatform, truth: GroundTruth, as_of: str) -> None:
    """Leave the network up, print what to try against it, and wait for Ctrl-C or SIGTERM."""
    workdir = platform.workdir
    enterprise = truth.enterprises_present_everywhere()[0]
    creds = platform.enterprise(enterprise)
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{as_of[:4]}-12-31")
    scope = tuple(f"{p}.*" for p in truth.rows)
    consent = grant(creds, ConsentRequest("bank-a", "loan_application", scope, *period, max_uses=1000))
    scoring = grant(creds, ConsentRequest("bank-a", "credit_scoring", scope, *period, max_uses=1000))
    monitoring = grant(creds, ConsentRequest("bank-a", "post_loan_monitoring", scope, *period, max_uses=1000))
    consents = workdir / "consents"
    consents.mkdir(exist_ok=True)
    write_consent(consents / "try.pb", consent)
    write_consent(consents / "scoring.pb", scoring)
    write_consent(consents / "monitoring.pb", monitoring)
    with EnterpriseClient(platform.node_address, creds) as client:
        client.register(consent)
        client.register(scoring)
        client.register(monitoring)
    job = _write_job(platform, workdir)
    env = _write_env(platform, workdir, enterprise, job)
    node, bank = platform.node_address, _shown(party_dir(platform.keys_dir, "institution", "bank-a"))
    ent = _shown(party_dir(platform.keys_dir, "enterprise", enterprise))
    try_pb, scoring_pb = _shown(consents / "try.pb"), _shown(consents / "scoring.pb")
    assert platform.node_config is not None
    commands = [
        f"xinrong bank verify --node {node} --credentials {bank} --enterprise {enterprise} --consent {try_pb} "
        "--claim 'tax.credit_grade in A,B' --claim 'electricity.in_arrears == false' --json",
        f"xinrong bank indicators --node {node} --credentials {bank} --enterprise {enterprise} --consent {try_pb} "
        "--field tax.credit_grade --field electricity.avg_spend_12m:bracket --json",
        f"xinrong enterprise consent status --credentials {ent} --node {node} --consent {try_pb}",
        f"xinrong node audit tail --config {_shown(platform.node_config)} -n 5",
        f"xinrong model train --config {_shown(job)}",
        f"xinrong bank score --model {_shown(workdir / 'models' / 'demo-default')} --node {node} "
        f"--credentials {bank} --enterprise {enterprise} --consent {scoring_pb} --json",
    ]
    if platform.node_port == KEEP_NODE_PORT:
        commands.append("xinrong model train --config docs/examples/job.toml   # from the repository root")
    _say(f"\nThe network stays up (node on {node}, modeling on for bank-a and bank-b).")
    _say(f"In another shell, `source {_shown(env)}` sets what the README's sections use ($N, $E, $B, ...). Try:")
    for command in commands:
        _say(f"  {command}")
    _say("Ctrl-C (or SIGTERM) stops every process the demo started.")

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            for party in platform.group.parties.values():
                if party.proc.poll() is not None:
                    _say(f"{party.name} exited with status {party.proc.returncode}; stopping the demo")
                    return
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping node and agents")
    finally:
        signal.signal(signal.SIGTERM, previous)


def register_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enterprises", type=int, default=2000, help="synthetic enterprises (default 2000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data (default 7)")
    parser.add_argument("--as-of", default="2026-09-30", help="data-as-of date of the providers' exports")
    parser.add_argument(
        "--providers", default=",".join(DEFAULT_PROVIDERS), help="comma-separated catalog providers to run agents for"
    )
    parser.add_argument(
        "--workdir", default="demo-run", help=f"work folder; replaced on every run (only if it holds {MARKER})"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the scripted run keep node and agents up (modeling on) and print commands to try; Ctrl-C stops",
    )
    parser.add_argument(
        "--node-port", type=int, default=None, help="node port (default: 50051 with --keep, else any free port)"
    )
    parser.set_defaults(func=run)

"""A fixed-seed sample of ``xinrong bench fuzz`` on every RPC, against real servers over mTLS.

One platform (tax agent with joint modeling, node) is stood up for the
module and every RPC the descriptors name gets ``SAMPLE`` hypothesis inputs,
from undecodable bytes to structurally valid messages with extreme values.
Each RPC is its own test: no UNKNOWN, no INTERNAL, no traceback in the
hosting server's log, and a caller whose role may not call the method is
refused whatever it sends. The servers must be alive afterwards with their
memory bounded. RPCs join automatically: the list comes from ``xinrong.v1``.
"""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from xinrong.tools.bench import fuzz
from xinrong.v1 import common_pb2, node_pb2

SAMPLE = 200  # inputs per RPC (the benchmark runs >= 10,000)
DRAWN = 100  # of those, drawn by hypothesis; the mutation stage breeds the rest (as in the benchmark)
SEED = 20261202
# Resident memory either server may hold after the sample (it starts near 100 MB).
MAX_RSS_MB = 512.0

ALL_RPCS = [m.path for methods in fuzz.services().values() for m in methods]

# RPCs still failing because of another issue's open defect: xfail(strict=True), so a fix
# that makes one pass turns this test red until the entry is removed.
KNOWN_DEFECTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return fuzz.run(inputs=SAMPLE, drawn=DRAWN, seed=SEED, workdir=tmp_path_factory.mktemp("fuzz"))


def test_every_service_of_the_contract_is_enumerated() -> None:
    found = fuzz.services()
    assert {
        "xinrong.v1.NodeService",
        "xinrong.v1.AgentService",
        "xinrong.v1.ModelingService",
        "xinrong.v1.AgentModelingService",
    } <= set(found)
    assert "/xinrong.v1.NodeService/Verify" in ALL_RPCS
    assert len(ALL_RPCS) >= 40
    stream = next(m for m in found["xinrong.v1.AgentService"] if m.name == "EvaluateStream")
    assert stream.client_streaming and stream.server_streaming


def test_structured_inputs_decode_and_undecodable_ones_do_not() -> None:
    strategies = fuzz.Strategies(fuzz.Corpus(strings=["r-1", "tax.credit_grade"]))
    inputs: list[bytes] = []
    fuzz.generate(strategies.message(node_pb2.VerifyRequest.DESCRIPTOR), 150, SEED, inputs.append)
    decoded = 0
    for data in inputs:
        try:
            node_pb2.VerifyRequest.FromString(data)
            decoded += 1
        except DecodeError:
            pass  # invalid UTF-8 somewhere inside
    assert len(inputs) == 150
    assert decoded >= 75  # structurally valid: at least half decode
    assert decoded < 150  # and some carry invalid UTF-8 in a string, which must not
    assert max(len(x) for x in inputs) > 100_000  # extreme sizes are drawn
    with pytest.raises(DecodeError):
        node_pb2.VerifyRequest.FromString(b"\x0a\x01\xff")
    claim = common_pb2.Claim(field="tax.credit_grade")
    # The encoder writes what protobuf writes (varints, negative int64 as ten bytes).
    req = node_pb2.VerifyRequest(request_id="r", requested_at=-1, claims=[claim])
    ours = fuzz._encode_message(
        [
            (req.DESCRIPTOR.fields_by_name["request_id"], "r"),
            (req.DESCRIPTOR.fields_by_name["requested_at"], -1),
            (req.DESCRIPTOR.fields_by_name["claims"], claim.SerializeToString()),
        ]
    )
    assert ours == req.SerializeToString()


def test_the_mutation_stage_breeds_structured_and_extreme_inputs_from_the_seeds() -> None:
    """Most of a 10k-per-RPC run comes from the mutator, so it must keep what hypothesis
    makes: decodable messages, undecodable ones, megabyte values and 10,000-element
    repeats, deterministic for a seed."""
    strategies = fuzz.Strategies(fuzz.Corpus(strings=["r-1", "tax.credit_grade"]))
    seeds: list[bytes] = []
    fuzz.generate(strategies.message(node_pb2.VerifyRequest.DESCRIPTOR), 60, SEED, seeds.append)
    desc = node_pb2.VerifyRequest.DESCRIPTOR
    mutator = fuzz.Mutator(desc, seeds, strategies.corpus, random.Random(SEED))
    children = [mutator.child() for _ in range(3000)]
    again = fuzz.Mutator(desc, seeds, strategies.corpus, random.Random(SEED))
    assert [again.child() for _ in range(200)] == children[:200]
    decoded = []
    unknown = 0
    for data in children:
        try:
            decoded.append(node_pb2.VerifyRequest.FromString(data))
        except DecodeError:
            continue
        unknown += any(n not in desc.fields_by_number for n, _, _, _ in fuzz.split_fields(data) or ())
    assert 0.2 * len(children) < len(decoded) < 0.9 * len(children)
    assert len(set(children)) > 0.7 * len(children)
    assert set(mutator.counts) == {name for name, _ in fuzz.Mutator.OPERATORS}
    assert any(len(data) > 1_000_000 for data in children)  # huge values
    assert any(len(m.claims) >= 1000 for m in decoded)  # thousands of repeated elements
    assert any(m.requested_at in (2**63 - 1, -(2**63)) for m in decoded)  # boundary ints
    assert any(m.ByteSize() == 0 for m in decoded)  # empty everything
    assert unknown > 0  # unknown fields


def test_fields_are_split_at_the_wire_level() -> None:
    req = node_pb2.VerifyRequest(request_id="r", requested_at=-1, claims=[common_pb2.Claim(field="f")])
    data = req.SerializeToString()
    fields = fuzz.split_fields(data)
    assert fields is not None
    assert [(n, w) for n, w, _, _ in fields] == [(1, 2), (2, 0), (5, 2)]
    assert b"".join(data[s:e] for _, _, s, e in fields) == data
    assert fuzz.split_fields(b"\x0a\x05ab") is None  # a length past the end
    assert fuzz.split_fields(b"\x0f") is None  # wire type 7


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_RPCS)
def test_rpc_answers_every_decodable_input_precisely(fuzzed: dict[str, Any], path: str) -> None:
    """Inputs that parse as the request reach the handler: never UNKNOWN, INTERNAL or a hang."""
    assert path in fuzzed["rpcs"], f"{path} was not fuzzed (not served: {fuzzed['services_not_served']})"
    result = fuzzed["rpcs"][path]
    assert result["inputs"] == SAMPLE
    assert result["drawn"] == DRAWN and result["mutated"] == SAMPLE - DRAWN
    assert result["roles"], "no role may call it"
    assert result["undecodable_inputs"] < SAMPLE  # some inputs reached the handler
    assert result["bad_decodable"] == 0, f"{path}: {result['codes']} {result.get('examples')}"
    assert set(result["codes"]) <= {c.name for c in grpc.StatusCode}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_RPCS)
def test_rpc_refuses_undecodable_input_precisely_and_silently(
    fuzzed: dict[str, Any], path: str, request: pytest.FixtureRequest
) -> None:
    """Undecodable bytes get INVALID_ARGUMENT (never UNKNOWN or INTERNAL), no traceback is
    logged for any input, and a caller whose role may not call the method is refused
    (PERMISSION_DENIED) whatever it sent."""
    if path in KNOWN_DEFECTS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[path]))
    result = fuzzed["rpcs"][path]
    assert result["undecodable_inputs"] > 0
    bad = {code: n for code, n in result["codes"].items() if code in ("UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED")}
    assert not bad, f"{path}: {result['codes']}"
    assert result["tracebacks"] == 0, f"{path}: {result['tracebacks']} tracebacks in the server log"
    assert result["wrong_role_inputs"] > 0 or len(result["roles"]) == len(fuzz.ROLES)
    assert result["wrong_role_not_denied"] == 0, result


@pytest.mark.e2e
@pytest.mark.slow
def test_servers_survive_the_sample_with_bounded_memory(fuzzed: dict[str, Any]) -> None:
    assert fuzzed["alive"] == {"node": True, "agent": True}
    assert not fuzzed["services_not_served"]
    for party, (before, after) in fuzzed["rss_mb"].items():
        assert after <= MAX_RSS_MB, f"{party} RSS {before} -> {after} MB"


@pytest.mark.parametrize("job_id", ["", "job-1\n", "../x", "a" * 129, "a" * 4_000_000])
def test_a_refused_job_id_is_invalid_argument_and_short_in_the_log(job_id: str) -> None:
    """Found by the fuzzer: the agent's modeling RPCs answered INTERNAL (a ValueError) to an
    empty or over-long job id, logged the whole id (megabytes), and accepted a trailing newline."""
    from xinrong.errors import Reason, XinrongError
    from xinrong.modeling.vlr_state import check_id

    with pytest.raises(XinrongError) as refused:
        check_id(job_id, "job id")
    assert refused.value.reason is Reason.INVALID_ARGUMENT
    assert isinstance(refused.value, ValueError)  # local callers still catch ValueError
    assert len(str(refused.value)) < 200
    assert check_id("job-1.a_b", "job id") == "job-1.a_b"


@pytest.mark.parametrize("since", [2**63 - 1, 2**53, 4_102_444_801])
def test_usage_since_past_2100_is_invalid_argument_not_internal(make_harness: Any, pki: Any, since: int) -> None:
    """Found by the 10k-per-RPC run: GetInstitutionUsage with ``since`` near 2**63 sent
    ``since * 1000`` to SQLite, which overflowed its INTEGER: INTERNAL and a traceback."""
    from xinrong.errors import Reason
    from xinrong.rpc.channel import secure_channel
    from xinrong.v1 import institutions_pb2 as ipb
    from xinrong.v1 import institutions_pb2_grpc

    from support.node_fakes import assert_refused

    h = make_harness(["tax"])
    with secure_channel(f"127.0.0.1:{h.node.port}", pki.node, server_role="node", server_id="node") as channel:
        admin = institutions_pb2_grpc.InstitutionAdminServiceStub(channel)
        request = ipb.GetInstitutionUsageRequest(institution_id="bank-a", since=since)
        assert_refused(
            lambda: admin.GetInstitutionUsage(request, timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
        )
        ok = admin.GetInstitutionUsage(ipb.GetInstitutionUsageRequest(institution_id="bank-a", since=1), timeout=10)
        assert ok.total >= 0

"""The modeling wire's protobuf conversions: every pair round-trips, and the job states match the node's."""

from __future__ import annotations

import numpy as np
import pytest

from xinrong.errors import Reason, XinrongError
from xinrong.modeling import serde
from xinrong.node import modeling_store
from xinrong.v1 import modeling_pb2


def test_scoring_key_round_trips_through_its_proto() -> None:
    key = serde.ScoringKey(scheme="ckks", public_key=b"\x00public\xff", signature=b"sig" * 21)
    msg = serde.scoring_key_to_proto(key)
    assert isinstance(msg, modeling_pb2.ScoringKey)
    parsed = modeling_pb2.ScoringKey.FromString(msg.SerializeToString())
    assert serde.scoring_key_from_proto(parsed) == key


def test_score_subjects_and_outcomes_round_trip() -> None:
    subjects = [("911301001234567883", "consent-1"), ("911301001234567891", "")]
    request = modeling_pb2.ScoreEnterprisesRequest(subjects=serde.score_subjects_to_proto(subjects))
    parsed = modeling_pb2.ScoreEnterprisesRequest.FromString(request.SerializeToString())
    assert serde.score_subjects_from_proto(parsed.subjects) == subjects
    outcomes = [
        serde.SubjectOutcome("911301001234567883", True),
        serde.SubjectOutcome("911301001234567891", False, "CONSENT_REVOKED", "the consent was revoked"),
    ]
    response = modeling_pb2.ScoreEnterprisesResponse(outcomes=[serde.score_outcome_to_proto(o) for o in outcomes])
    parsed_response = modeling_pb2.ScoreEnterprisesResponse.FromString(response.SerializeToString())
    assert [serde.score_outcome_from_proto(o) for o in parsed_response.outcomes] == outcomes


def test_positions_are_uint32_little_endian() -> None:
    rows = np.array([0, 7, 65_536, 2**32 - 1], dtype=np.int64)
    data = serde.positions_to_proto(rows)
    assert data == np.asarray(rows, dtype="<u4").tobytes() and len(data) == 16
    back = serde.positions_from_proto(data)
    assert back.dtype == np.int64 and np.array_equal(back, rows)


def test_psi_selections_keep_the_job_order_and_refuse_a_provider_twice() -> None:
    selections = {"tax": b"t", "electricity": b"e"}
    msgs = serde.psi_selections_to_proto(["electricity", "tax"], selections)
    assert [m.provider_id for m in msgs] == ["electricity", "tax"]
    assert serde.psi_selections_from_proto(msgs) == selections
    with pytest.raises(XinrongError) as err:
        serde.psi_selections_from_proto([*msgs, modeling_pb2.ProviderPsiMessage(provider_id="tax", body=b"x")])
    assert err.value.reason is Reason.INVALID_ARGUMENT


def test_job_states_are_the_node_stores_and_map_one_to_one() -> None:
    assert set(serde.JOB_STATES) == set(modeling_store.STATES)
    for state in modeling_store.STATES:
        value = serde.job_state_to_proto(state)
        assert modeling_pb2.ModelingJobState.Name(value) == f"MODELING_JOB_STATE_{state}"
        assert serde.job_state_from_proto(value) == state
    assert serde.job_state_from_proto(modeling_pb2.MODELING_JOB_STATE_UNSPECIFIED) == "UNSPECIFIED"

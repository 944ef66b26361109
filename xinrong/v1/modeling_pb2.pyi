from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelingJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODELING_JOB_STATE_UNSPECIFIED: _ClassVar[ModelingJobState]
    MODELING_JOB_STATE_CREATED: _ClassVar[ModelingJobState]
    MODELING_JOB_STATE_RUNNING: _ClassVar[ModelingJobState]
    MODELING_JOB_STATE_SUCCEEDED: _ClassVar[ModelingJobState]
    MODELING_JOB_STATE_FAILED: _ClassVar[ModelingJobState]
MODELING_JOB_STATE_UNSPECIFIED: ModelingJobState
MODELING_JOB_STATE_CREATED: ModelingJobState
MODELING_JOB_STATE_RUNNING: ModelingJobState
MODELING_JOB_STATE_SUCCEEDED: ModelingJobState
MODELING_JOB_STATE_FAILED: ModelingJobState

class ScoringKey(_message.Message):
    __slots__ = ("scheme", "public_key", "signature")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    public_key: bytes
    signature: bytes
    def __init__(self, scheme: _Optional[str] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("job_id", "provider_ids", "backend", "he_params_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HE_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    provider_ids: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    he_params_json: str
    def __init__(self, job_id: _Optional[str] = ..., provider_ids: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., he_params_json: _Optional[str] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job_id", "state", "provider_bindings")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: ModelingJobState
    provider_bindings: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[ModelingJobState, str]] = ..., provider_bindings: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ...) -> None: ...

class ExchangePsiRequest(_message.Message):
    __slots__ = ("job_id", "body", "provider_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    provider_id: str
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ..., provider_id: _Optional[str] = ...) -> None: ...

class ProviderPsiMessage(_message.Message):
    __slots__ = ("provider_id", "body")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    body: bytes
    def __init__(self, provider_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class ExchangePsiResponse(_message.Message):
    __slots__ = ("job_id", "provider_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    provider_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class SelectPsiRequest(_message.Message):
    __slots__ = ("job_id", "selections")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    selections: _containers.RepeatedCompositeFieldContainer[ProviderPsiMessage]
    def __init__(self, job_id: _Optional[str] = ..., selections: _Optional[_Iterable[_Union[ProviderPsiMessage, _Mapping]]] = ...) -> None: ...

class SelectPsiResponse(_message.Message):
    __slots__ = ("job_id", "aligned_rows")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_ROWS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    aligned_rows: int
    def __init__(self, job_id: _Optional[str] = ..., aligned_rows: _Optional[int] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class BackwardResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class ComputeLossRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class ComputeLossResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class EndEpochRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class EndEpochResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class FinishJobRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class FinishJobResponse(_message.Message):
    __slots__ = ("job_id", "metadata_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    metadata_json: str
    def __init__(self, job_id: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("body", "provider_epochs")
    BODY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    provider_epochs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, body: _Optional[bytes] = ..., provider_epochs: _Optional[_Iterable[int]] = ...) -> None: ...

class RestoreJobRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class RestoreJobResponse(_message.Message):
    __slots__ = ("job_id", "epoch")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ScoreJobRowsRequest(_message.Message):
    __slots__ = ("job_id", "request_id", "positions", "scoring_key")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SCORING_KEY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    positions: bytes
    scoring_key: ScoringKey
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., positions: _Optional[bytes] = ..., scoring_key: _Optional[_Union[ScoringKey, _Mapping]] = ...) -> None: ...

class ScoreJobRowsResponse(_message.Message):
    __slots__ = ("request_id", "aggregate")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    aggregate: bytes
    def __init__(self, request_id: _Optional[str] = ..., aggregate: _Optional[bytes] = ...) -> None: ...

class ScoreSubject(_message.Message):
    __slots__ = ("enterprise_uscc", "consent_id")
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    consent_id: str
    def __init__(self, enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ...) -> None: ...

class ScoreOutcome(_message.Message):
    __slots__ = ("enterprise_uscc", "admitted", "reason", "message")
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    admitted: bool
    reason: str
    message: str
    def __init__(self, enterprise_uscc: _Optional[str] = ..., admitted: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ScoreEnterprisesRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "job_id", "subjects", "scoring_key")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    SCORING_KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    job_id: str
    subjects: _containers.RepeatedCompositeFieldContainer[ScoreSubject]
    scoring_key: ScoringKey
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., job_id: _Optional[str] = ..., subjects: _Optional[_Iterable[_Union[ScoreSubject, _Mapping]]] = ..., scoring_key: _Optional[_Union[ScoringKey, _Mapping]] = ...) -> None: ...

class ScoreEnterprisesResponse(_message.Message):
    __slots__ = ("request_id", "outcomes", "aggregate")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outcomes: _containers.RepeatedCompositeFieldContainer[ScoreOutcome]
    aggregate: bytes
    def __init__(self, request_id: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[ScoreOutcome, _Mapping]]] = ..., aggregate: _Optional[bytes] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ModelingJob(_message.Message):
    __slots__ = ("job_id", "institution_id", "provider_ids", "backend", "state", "failure_reason", "epochs_done", "resumable", "wire_bytes", "created_at", "updated_at")
    class WireBytesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    institution_id: str
    provider_ids: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    state: ModelingJobState
    failure_reason: str
    epochs_done: int
    resumable: bool
    wire_bytes: _containers.ScalarMap[str, int]
    created_at: int
    updated_at: int
    def __init__(self, job_id: _Optional[str] = ..., institution_id: _Optional[str] = ..., provider_ids: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., state: _Optional[_Union[ModelingJobState, str]] = ..., failure_reason: _Optional[str] = ..., epochs_done: _Optional[int] = ..., resumable: _Optional[bool] = ..., wire_bytes: _Optional[_Mapping[str, int]] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ...) -> None: ...

class AgentOpenJobRequest(_message.Message):
    __slots__ = ("job_id", "institution_binding", "backend", "resume")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_BINDING_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    institution_binding: _common_pb2.SignedPartyBinding
    backend: str
    resume: bool
    def __init__(self, job_id: _Optional[str] = ..., institution_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., backend: _Optional[str] = ..., resume: _Optional[bool] = ...) -> None: ...

class AgentOpenJobResponse(_message.Message):
    __slots__ = ("provider_id", "rows")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    rows: int
    def __init__(self, provider_id: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class AgentRespondPsiRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentRespondPsiResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentSelectPsiRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentSelectPsiResponse(_message.Message):
    __slots__ = ("aligned_rows",)
    ALIGNED_ROWS_FIELD_NUMBER: _ClassVar[int]
    aligned_rows: int
    def __init__(self, aligned_rows: _Optional[int] = ...) -> None: ...

class AgentSetupPartyRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentSetupPartyResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentComputeBoundRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentComputeBoundResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentEncryptPartialRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentEncryptPartialResponse(_message.Message):
    __slots__ = ("sealed",)
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sealed: bytes
    def __init__(self, sealed: _Optional[bytes] = ...) -> None: ...

class AgentComputeGradientRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentComputeGradientResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentApplyUpdateRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentApplyUpdateResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentEndEpochRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentEndEpochResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentFinishJobRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentFinishJobResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentGetResumeStateRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentGetResumeStateResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentRestoreJobRequest(_message.Message):
    __slots__ = ("job_id", "body")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    body: bytes
    def __init__(self, job_id: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class AgentRestoreJobResponse(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class AgentScoreRowsRequest(_message.Message):
    __slots__ = ("job_id", "request_id", "positions", "scoring_key")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SCORING_KEY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    positions: bytes
    scoring_key: ScoringKey
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., positions: _Optional[bytes] = ..., scoring_key: _Optional[_Union[ScoringKey, _Mapping]] = ...) -> None: ...

class AgentScoreRowsResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class AgentScoreEnterprisesRequest(_message.Message):
    __slots__ = ("job_id", "request_id", "requested_at", "enterprise_usccs", "consents", "audience_binding", "scoring_key")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCCS_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_BINDING_FIELD_NUMBER: _ClassVar[int]
    SCORING_KEY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    requested_at: int
    enterprise_usccs: _containers.RepeatedScalarFieldContainer[str]
    consents: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedConsent]
    audience_binding: _common_pb2.SignedPartyBinding
    scoring_key: ScoringKey
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_usccs: _Optional[_Iterable[str]] = ..., consents: _Optional[_Iterable[_Union[_common_pb2.SignedConsent, _Mapping]]] = ..., audience_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., scoring_key: _Optional[_Union[ScoringKey, _Mapping]] = ...) -> None: ...

class AgentScoreEnterprisesResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class AgentAbortJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentAbortJobResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: bool
    def __init__(self, held: _Optional[bool] = ...) -> None: ...

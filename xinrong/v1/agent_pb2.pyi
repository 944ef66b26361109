from xinrong.v1 import common_pb2 as _common_pb2
from xinrong.v1 import node_pb2 as _node_pb2
from xinrong.v1 import subject_pb2 as _subject_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluateClaimsRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "enterprise_uscc", "consent", "audience_binding", "claims")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_BINDING_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent: _common_pb2.SignedConsent
    audience_binding: _common_pb2.SignedPartyBinding
    claims: _containers.RepeatedCompositeFieldContainer[_common_pb2.Claim]
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_uscc: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.SignedConsent, _Mapping]] = ..., audience_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., claims: _Optional[_Iterable[_Union[_common_pb2.Claim, _Mapping]]] = ...) -> None: ...

class EvaluateClaimsResponse(_message.Message):
    __slots__ = ("sealed",)
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sealed: _common_pb2.SealedBox
    def __init__(self, sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class EvaluateIndicatorsRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "enterprise_uscc", "consent", "audience_binding", "queries")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_BINDING_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent: _common_pb2.SignedConsent
    audience_binding: _common_pb2.SignedPartyBinding
    queries: _containers.RepeatedCompositeFieldContainer[_node_pb2.IndicatorQuery]
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_uscc: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.SignedConsent, _Mapping]] = ..., audience_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., queries: _Optional[_Iterable[_Union[_node_pb2.IndicatorQuery, _Mapping]]] = ...) -> None: ...

class EvaluateIndicatorsResponse(_message.Message):
    __slots__ = ("sealed",)
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sealed: _common_pb2.SealedBox
    def __init__(self, sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class UpdateConsentStatusRequest(_message.Message):
    __slots__ = ("revocation", "enterprise_binding")
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    revocation: _common_pb2.SignedConsentRevocation
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, revocation: _Optional[_Union[_common_pb2.SignedConsentRevocation, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class UpdateConsentStatusResponse(_message.Message):
    __slots__ = ("consent_id", "state")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ...) -> None: ...

class GetAgentInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAgentInfoResponse(_message.Message):
    __slots__ = ("provider", "data_as_of", "enterprises")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    data_as_of: str
    enterprises: int
    def __init__(self, provider: _Optional[str] = ..., data_as_of: _Optional[str] = ..., enterprises: _Optional[int] = ...) -> None: ...

class AgentCall(_message.Message):
    __slots__ = ("call_id", "claims", "indicators")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    claims: EvaluateClaimsRequest
    indicators: EvaluateIndicatorsRequest
    def __init__(self, call_id: _Optional[int] = ..., claims: _Optional[_Union[EvaluateClaimsRequest, _Mapping]] = ..., indicators: _Optional[_Union[EvaluateIndicatorsRequest, _Mapping]] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AgentCallResult(_message.Message):
    __slots__ = ("call_id", "sealed", "error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    sealed: _common_pb2.SealedBox
    error: CallError
    def __init__(self, call_id: _Optional[int] = ..., sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ...) -> None: ...

class EvaluateStreamRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[AgentCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[AgentCall, _Mapping]]] = ...) -> None: ...

class EvaluateStreamResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AgentCallResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AgentCallResult, _Mapping]]] = ...) -> None: ...

class PullConsentUpdatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PullConsentUpdatesResponse(_message.Message):
    __slots__ = ("revocations", "pauses")
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    PAUSES_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[UpdateConsentStatusRequest]
    pauses: _containers.RepeatedCompositeFieldContainer[_subject_pb2.UpdateConsentPauseRequest]
    def __init__(self, revocations: _Optional[_Iterable[_Union[UpdateConsentStatusRequest, _Mapping]]] = ..., pauses: _Optional[_Iterable[_Union[_subject_pb2.UpdateConsentPauseRequest, _Mapping]]] = ...) -> None: ...

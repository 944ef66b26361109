from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationRound(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_ROUND_UNSPECIFIED: _ClassVar[EvaluationRound]
    EVALUATION_ROUND_PRESENCE: _ClassVar[EvaluationRound]
    EVALUATION_ROUND_POINTS: _ClassVar[EvaluationRound]
EVALUATION_ROUND_UNSPECIFIED: EvaluationRound
EVALUATION_ROUND_PRESENCE: EvaluationRound
EVALUATION_ROUND_POINTS: EvaluationRound

class GetEvaluationUniverseRequest(_message.Message):
    __slots__ = ("evaluation_id",)
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    evaluation_id: str
    def __init__(self, evaluation_id: _Optional[str] = ...) -> None: ...

class GetEvaluationUniverseResponse(_message.Message):
    __slots__ = ("usccs", "data_as_of")
    USCCS_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    usccs: bytes
    data_as_of: str
    def __init__(self, usccs: _Optional[bytes] = ..., data_as_of: _Optional[str] = ...) -> None: ...

class ComputeEvaluationPartRequest(_message.Message):
    __slots__ = ("evaluation_id", "period", "round", "index_sha256", "public_key", "universe", "universe_sha256", "participants", "eligible")
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INDEX_SHA256_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    UNIVERSE_FIELD_NUMBER: _ClassVar[int]
    UNIVERSE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    evaluation_id: str
    period: str
    round: EvaluationRound
    index_sha256: str
    public_key: bytes
    universe: bytes
    universe_sha256: str
    participants: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    eligible: bytes
    def __init__(self, evaluation_id: _Optional[str] = ..., period: _Optional[str] = ..., round: _Optional[_Union[EvaluationRound, str]] = ..., index_sha256: _Optional[str] = ..., public_key: _Optional[bytes] = ..., universe: _Optional[bytes] = ..., universe_sha256: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ..., eligible: _Optional[bytes] = ...) -> None: ...

class ComputeEvaluationPartResponse(_message.Message):
    __slots__ = ("payload", "data_as_of")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    data_as_of: str
    def __init__(self, payload: _Optional[bytes] = ..., data_as_of: _Optional[str] = ...) -> None: ...

class BreakdownRequest(_message.Message):
    __slots__ = ("enterprise_uscc", "request_id", "requested_at", "reply_public_key")
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    request_id: str
    requested_at: int
    reply_public_key: bytes
    def __init__(self, enterprise_uscc: _Optional[str] = ..., request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., reply_public_key: _Optional[bytes] = ...) -> None: ...

class SignedBreakdownRequest(_message.Message):
    __slots__ = ("request", "signature")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    request: bytes
    signature: bytes
    def __init__(self, request: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SealEvaluationBreakdownRequest(_message.Message):
    __slots__ = ("request", "enterprise_binding")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    request: SignedBreakdownRequest
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, request: _Optional[_Union[SignedBreakdownRequest, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class SealEvaluationBreakdownResponse(_message.Message):
    __slots__ = ("sealed",)
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sealed: _common_pb2.SealedBox
    def __init__(self, sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class SignedBreakdown(_message.Message):
    __slots__ = ("breakdown", "signature")
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    breakdown: bytes
    signature: bytes
    def __init__(self, breakdown: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetOwnEvaluationRequest(_message.Message):
    __slots__ = ("period", "breakdown_request", "enterprise_binding")
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    period: str
    breakdown_request: SignedBreakdownRequest
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, period: _Optional[str] = ..., breakdown_request: _Optional[_Union[SignedBreakdownRequest, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class GetOwnEvaluationResponse(_message.Message):
    __slots__ = ("period", "evaluation_id", "index_version", "index_sha256", "scored", "score", "grade", "evaluated_at", "breakdowns", "provider_bindings")
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWNS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    period: str
    evaluation_id: str
    index_version: str
    index_sha256: str
    scored: bool
    score: int
    grade: str
    evaluated_at: int
    breakdowns: _containers.RepeatedCompositeFieldContainer[_common_pb2.SealedBox]
    provider_bindings: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    def __init__(self, period: _Optional[str] = ..., evaluation_id: _Optional[str] = ..., index_version: _Optional[str] = ..., index_sha256: _Optional[str] = ..., scored: _Optional[bool] = ..., score: _Optional[int] = ..., grade: _Optional[str] = ..., evaluated_at: _Optional[int] = ..., breakdowns: _Optional[_Iterable[_Union[_common_pb2.SealedBox, _Mapping]]] = ..., provider_bindings: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ...) -> None: ...

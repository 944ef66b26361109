from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_STATE_UNSPECIFIED: _ClassVar[WatchState]
    WATCH_STATE_ACTIVE: _ClassVar[WatchState]
    WATCH_STATE_CANCELLED: _ClassVar[WatchState]
    WATCH_STATE_EXPIRED: _ClassVar[WatchState]
WATCH_STATE_UNSPECIFIED: WatchState
WATCH_STATE_ACTIVE: WatchState
WATCH_STATE_CANCELLED: WatchState
WATCH_STATE_EXPIRED: WatchState

class RegisterWatchRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "enterprise_uscc", "consent_id", "claims", "valid_until")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    claims: _containers.RepeatedCompositeFieldContainer[_common_pb2.Claim]
    valid_until: int
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ..., claims: _Optional[_Iterable[_Union[_common_pb2.Claim, _Mapping]]] = ..., valid_until: _Optional[int] = ...) -> None: ...

class RegisterWatchResponse(_message.Message):
    __slots__ = ("watch_id", "valid_until", "providers", "audit_leaf_index")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    valid_until: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    audit_leaf_index: int
    def __init__(self, watch_id: _Optional[str] = ..., valid_until: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class CancelWatchRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    def __init__(self, watch_id: _Optional[str] = ...) -> None: ...

class CancelWatchResponse(_message.Message):
    __slots__ = ("watch_id", "state")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    state: WatchState
    def __init__(self, watch_id: _Optional[str] = ..., state: _Optional[_Union[WatchState, str]] = ...) -> None: ...

class ListWatchesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchListing(_message.Message):
    __slots__ = ("watch_id", "enterprise_uscc", "consent_id", "claims", "providers", "valid_until", "state", "registered_at")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    enterprise_uscc: str
    consent_id: str
    claims: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedScalarFieldContainer[str]
    valid_until: int
    state: WatchState
    registered_at: int
    def __init__(self, watch_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ..., claims: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[str]] = ..., valid_until: _Optional[int] = ..., state: _Optional[_Union[WatchState, str]] = ..., registered_at: _Optional[int] = ...) -> None: ...

class ListWatchesResponse(_message.Message):
    __slots__ = ("watches",)
    WATCHES_FIELD_NUMBER: _ClassVar[int]
    watches: _containers.RepeatedCompositeFieldContainer[WatchListing]
    def __init__(self, watches: _Optional[_Iterable[_Union[WatchListing, _Mapping]]] = ...) -> None: ...

class StreamAlertsRequest(_message.Message):
    __slots__ = ("after_seq",)
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    def __init__(self, after_seq: _Optional[int] = ...) -> None: ...

class QueuedWatchUpdate(_message.Message):
    __slots__ = ("seq", "update")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    update: SealedWatchUpdate
    def __init__(self, seq: _Optional[int] = ..., update: _Optional[_Union[SealedWatchUpdate, _Mapping]] = ...) -> None: ...

class StreamAlertsResponse(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[QueuedWatchUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[QueuedWatchUpdate, _Mapping]]] = ...) -> None: ...

class SealedWatchUpdate(_message.Message):
    __slots__ = ("update_id", "watch_id", "provider", "sealed")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    watch_id: str
    provider: str
    sealed: _common_pb2.SealedBox
    def __init__(self, update_id: _Optional[str] = ..., watch_id: _Optional[str] = ..., provider: _Optional[str] = ..., sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class SignedWatchUpdate(_message.Message):
    __slots__ = ("update", "signature")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    update: bytes
    signature: bytes
    def __init__(self, update: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WatchVerdict(_message.Message):
    __slots__ = ("claim_text", "result")
    CLAIM_TEXT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    claim_text: str
    result: _common_pb2.VerdictResult
    def __init__(self, claim_text: _Optional[str] = ..., result: _Optional[_Union[_common_pb2.VerdictResult, str]] = ...) -> None: ...

class WatchUpdate(_message.Message):
    __slots__ = ("update_id", "watch_id", "enterprise_uscc", "consent_id", "audience", "provider", "provider_key_id", "data_as_of", "period", "issued_at", "verdicts")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    watch_id: str
    enterprise_uscc: str
    consent_id: str
    audience: str
    provider: str
    provider_key_id: str
    data_as_of: str
    period: int
    issued_at: int
    verdicts: _containers.RepeatedCompositeFieldContainer[WatchVerdict]
    def __init__(self, update_id: _Optional[str] = ..., watch_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ..., audience: _Optional[str] = ..., provider: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., data_as_of: _Optional[str] = ..., period: _Optional[int] = ..., issued_at: _Optional[int] = ..., verdicts: _Optional[_Iterable[_Union[WatchVerdict, _Mapping]]] = ...) -> None: ...

class AddWatchRequest(_message.Message):
    __slots__ = ("watch_id", "enterprise_uscc", "consent", "audience_binding", "claims", "valid_until", "requested_at")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_BINDING_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    enterprise_uscc: str
    consent: _common_pb2.SignedConsent
    audience_binding: _common_pb2.SignedPartyBinding
    claims: _containers.RepeatedCompositeFieldContainer[_common_pb2.Claim]
    valid_until: int
    requested_at: int
    def __init__(self, watch_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.SignedConsent, _Mapping]] = ..., audience_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., claims: _Optional[_Iterable[_Union[_common_pb2.Claim, _Mapping]]] = ..., valid_until: _Optional[int] = ..., requested_at: _Optional[int] = ...) -> None: ...

class AddWatchResponse(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    def __init__(self, watch_id: _Optional[str] = ...) -> None: ...

class RemoveWatchRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    def __init__(self, watch_id: _Optional[str] = ...) -> None: ...

class RemoveWatchResponse(_message.Message):
    __slots__ = ("watch_id", "removed")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    removed: bool
    def __init__(self, watch_id: _Optional[str] = ..., removed: _Optional[bool] = ...) -> None: ...

class PullWatchUpdatesRequest(_message.Message):
    __slots__ = ("after_seq", "max_updates", "wait_ms")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATES_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    max_updates: int
    wait_ms: int
    def __init__(self, after_seq: _Optional[int] = ..., max_updates: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class PullWatchUpdatesResponse(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[QueuedWatchUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[QueuedWatchUpdate, _Mapping]]] = ...) -> None: ...

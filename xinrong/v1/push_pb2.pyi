from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("regions", "industries", "topics", "cursor", "follow", "max_batch")
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    INDUSTRIES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedScalarFieldContainer[str]
    industries: _containers.RepeatedScalarFieldContainer[str]
    topics: _containers.RepeatedScalarFieldContainer[str]
    cursor: int
    follow: bool
    max_batch: int
    def __init__(self, regions: _Optional[_Iterable[str]] = ..., industries: _Optional[_Iterable[str]] = ..., topics: _Optional[_Iterable[str]] = ..., cursor: _Optional[int] = ..., follow: _Optional[bool] = ..., max_batch: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("events", "cursor", "head", "response_signature")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[SignedEvent]
    cursor: int
    head: int
    response_signature: bytes
    def __init__(self, events: _Optional[_Iterable[_Union[SignedEvent, _Mapping]]] = ..., cursor: _Optional[int] = ..., head: _Optional[int] = ..., response_signature: _Optional[bytes] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "event_id", "topic", "enterprise", "region", "industry", "payload", "appended_ms", "restricted", "node_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INDUSTRY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    APPENDED_MS_FIELD_NUMBER: _ClassVar[int]
    RESTRICTED_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    event_id: str
    topic: str
    enterprise: str
    region: str
    industry: str
    payload: bytes
    appended_ms: int
    restricted: bool
    node_id: str
    def __init__(self, seq: _Optional[int] = ..., event_id: _Optional[str] = ..., topic: _Optional[str] = ..., enterprise: _Optional[str] = ..., region: _Optional[str] = ..., industry: _Optional[str] = ..., payload: _Optional[bytes] = ..., appended_ms: _Optional[int] = ..., restricted: _Optional[bool] = ..., node_id: _Optional[str] = ...) -> None: ...

class SignedEvent(_message.Message):
    __slots__ = ("event", "signature", "key_id")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    event: bytes
    signature: bytes
    key_id: str
    def __init__(self, event: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUBLISH_OUTCOME_UNSPECIFIED: _ClassVar[PublishOutcome]
    PUBLISH_OUTCOME_APPLIED: _ClassVar[PublishOutcome]
    PUBLISH_OUTCOME_ALREADY_APPLIED: _ClassVar[PublishOutcome]
PUBLISH_OUTCOME_UNSPECIFIED: PublishOutcome
PUBLISH_OUTCOME_APPLIED: PublishOutcome
PUBLISH_OUTCOME_ALREADY_APPLIED: PublishOutcome

class PublishRecordsRequest(_message.Message):
    __slots__ = ("batch", "signature")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    batch: bytes
    signature: bytes
    def __init__(self, batch: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PublishRecordsResponse(_message.Message):
    __slots__ = ("outcome", "version", "records_changed")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    outcome: PublishOutcome
    version: int
    records_changed: int
    def __init__(self, outcome: _Optional[_Union[PublishOutcome, str]] = ..., version: _Optional[int] = ..., records_changed: _Optional[int] = ...) -> None: ...

class GetPublishStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPublishStateResponse(_message.Message):
    __slots__ = ("version", "period", "batch_sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    period: str
    batch_sha256: str
    def __init__(self, version: _Optional[int] = ..., period: _Optional[str] = ..., batch_sha256: _Optional[str] = ...) -> None: ...

class PublicRecord(_message.Message):
    __slots__ = ("provider", "field", "value_json", "as_of", "version")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    provider: str
    field: str
    value_json: str
    as_of: str
    version: int
    def __init__(self, provider: _Optional[str] = ..., field: _Optional[str] = ..., value_json: _Optional[str] = ..., as_of: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetPublicRecordsRequest(_message.Message):
    __slots__ = ("enterprise_uscc",)
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    def __init__(self, enterprise_uscc: _Optional[str] = ...) -> None: ...

class GetPublicRecordsResponse(_message.Message):
    __slots__ = ("records", "audit_leaf_index")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PublicRecord]
    audit_leaf_index: int
    def __init__(self, records: _Optional[_Iterable[_Union[PublicRecord, _Mapping]]] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class FileSelfReportRequest(_message.Message):
    __slots__ = ("filing", "signature", "enterprise_binding")
    FILING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    filing: bytes
    signature: bytes
    enterprise_binding: bytes
    def __init__(self, filing: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., enterprise_binding: _Optional[bytes] = ...) -> None: ...

class FileSelfReportResponse(_message.Message):
    __slots__ = ("filing_id", "already_filed", "audit_leaf_index")
    FILING_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_FILED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    filing_id: str
    already_filed: bool
    audit_leaf_index: int
    def __init__(self, filing_id: _Optional[str] = ..., already_filed: _Optional[bool] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class WithdrawFilingRequest(_message.Message):
    __slots__ = ("withdrawal", "signature", "enterprise_binding")
    WITHDRAWAL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    withdrawal: bytes
    signature: bytes
    enterprise_binding: bytes
    def __init__(self, withdrawal: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., enterprise_binding: _Optional[bytes] = ...) -> None: ...

class WithdrawFilingResponse(_message.Message):
    __slots__ = ("filing_id", "already_withdrawn", "audit_leaf_index")
    FILING_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    filing_id: str
    already_withdrawn: bool
    audit_leaf_index: int
    def __init__(self, filing_id: _Optional[str] = ..., already_withdrawn: _Optional[bool] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class ListFilingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Filing(_message.Message):
    __slots__ = ("filing_id", "filing", "signature", "filed_ms", "withdrawn_ms")
    FILING_ID_FIELD_NUMBER: _ClassVar[int]
    FILING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    FILED_MS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_MS_FIELD_NUMBER: _ClassVar[int]
    filing_id: str
    filing: bytes
    signature: bytes
    filed_ms: int
    withdrawn_ms: int
    def __init__(self, filing_id: _Optional[str] = ..., filing: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., filed_ms: _Optional[int] = ..., withdrawn_ms: _Optional[int] = ...) -> None: ...

class ListFilingsResponse(_message.Message):
    __slots__ = ("filings",)
    FILINGS_FIELD_NUMBER: _ClassVar[int]
    filings: _containers.RepeatedCompositeFieldContainer[Filing]
    def __init__(self, filings: _Optional[_Iterable[_Union[Filing, _Mapping]]] = ...) -> None: ...

class GetCreditReportRequest(_message.Message):
    __slots__ = ("enterprise_uscc",)
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    def __init__(self, enterprise_uscc: _Optional[str] = ...) -> None: ...

class GetCreditReportResponse(_message.Message):
    __slots__ = ("envelope_json",)
    ENVELOPE_JSON_FIELD_NUMBER: _ClassVar[int]
    envelope_json: bytes
    def __init__(self, envelope_json: _Optional[bytes] = ...) -> None: ...

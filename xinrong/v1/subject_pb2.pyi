from xinrong.v1 import common_pb2 as _common_pb2
from xinrong.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FieldStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_STATUS_UNSPECIFIED: _ClassVar[FieldStatus]
    FIELD_STATUS_NORMAL: _ClassVar[FieldStatus]
    FIELD_STATUS_DISPUTED: _ClassVar[FieldStatus]
    FIELD_STATUS_REPAIRED: _ClassVar[FieldStatus]

class CaseKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_KIND_UNSPECIFIED: _ClassVar[CaseKind]
    CASE_KIND_OBJECTION: _ClassVar[CaseKind]
    CASE_KIND_REPAIR: _ClassVar[CaseKind]

class CaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_STATE_UNSPECIFIED: _ClassVar[CaseState]
    CASE_STATE_OPEN: _ClassVar[CaseState]
    CASE_STATE_CORRECTED: _ClassVar[CaseState]
    CASE_STATE_REJECTED: _ClassVar[CaseState]
    CASE_STATE_APPROVED: _ClassVar[CaseState]

class ConsentAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_ACTION_UNSPECIFIED: _ClassVar[ConsentAction]
    CONSENT_ACTION_PAUSE: _ClassVar[ConsentAction]
    CONSENT_ACTION_RESUME: _ClassVar[ConsentAction]
FIELD_STATUS_UNSPECIFIED: FieldStatus
FIELD_STATUS_NORMAL: FieldStatus
FIELD_STATUS_DISPUTED: FieldStatus
FIELD_STATUS_REPAIRED: FieldStatus
CASE_KIND_UNSPECIFIED: CaseKind
CASE_KIND_OBJECTION: CaseKind
CASE_KIND_REPAIR: CaseKind
CASE_STATE_UNSPECIFIED: CaseState
CASE_STATE_OPEN: CaseState
CASE_STATE_CORRECTED: CaseState
CASE_STATE_REJECTED: CaseState
CASE_STATE_APPROVED: CaseState
CONSENT_ACTION_UNSPECIFIED: ConsentAction
CONSENT_ACTION_PAUSE: ConsentAction
CONSENT_ACTION_RESUME: ConsentAction

class SubjectQuery(_message.Message):
    __slots__ = ("request_id", "enterprise_uscc", "requested_at", "nonce")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    enterprise_uscc: str
    requested_at: int
    nonce: bytes
    def __init__(self, request_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., requested_at: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SignedSubjectQuery(_message.Message):
    __slots__ = ("query", "signature")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    query: bytes
    signature: bytes
    def __init__(self, query: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetMyDataRequest(_message.Message):
    __slots__ = ("query", "enterprise_binding")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    query: SignedSubjectQuery
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, query: _Optional[_Union[SignedSubjectQuery, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class GetMyDataResponse(_message.Message):
    __slots__ = ("request_id", "answers", "unavailable")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answers: _containers.RepeatedCompositeFieldContainer[_node_pb2.ProviderAnswer]
    unavailable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., answers: _Optional[_Iterable[_Union[_node_pb2.ProviderAnswer, _Mapping]]] = ..., unavailable: _Optional[_Iterable[str]] = ...) -> None: ...

class SubjectField(_message.Message):
    __slots__ = ("field", "value", "present", "status")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    present: bool
    status: FieldStatus
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ..., present: _Optional[bool] = ..., status: _Optional[_Union[FieldStatus, str]] = ...) -> None: ...

class CaseEvent(_message.Message):
    __slots__ = ("at", "state", "note")
    AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    at: int
    state: CaseState
    note: str
    def __init__(self, at: _Optional[int] = ..., state: _Optional[_Union[CaseState, str]] = ..., note: _Optional[str] = ...) -> None: ...

class SubjectCase(_message.Message):
    __slots__ = ("case_id", "kind", "field", "statement", "state", "filed_at", "updated_at", "reason", "overdue", "effective_date", "history", "evidence_bytes")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    kind: CaseKind
    field: str
    statement: str
    state: CaseState
    filed_at: int
    updated_at: int
    reason: str
    overdue: bool
    effective_date: str
    history: _containers.RepeatedCompositeFieldContainer[CaseEvent]
    evidence_bytes: int
    def __init__(self, case_id: _Optional[str] = ..., kind: _Optional[_Union[CaseKind, str]] = ..., field: _Optional[str] = ..., statement: _Optional[str] = ..., state: _Optional[_Union[CaseState, str]] = ..., filed_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., reason: _Optional[str] = ..., overdue: _Optional[bool] = ..., effective_date: _Optional[str] = ..., history: _Optional[_Iterable[_Union[CaseEvent, _Mapping]]] = ..., evidence_bytes: _Optional[int] = ...) -> None: ...

class SubjectReport(_message.Message):
    __slots__ = ("request_id", "enterprise_uscc", "provider", "provider_key_id", "issued_at", "data_as_of", "held", "fields", "cases")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    enterprise_uscc: str
    provider: str
    provider_key_id: str
    issued_at: int
    data_as_of: str
    held: bool
    fields: _containers.RepeatedCompositeFieldContainer[SubjectField]
    cases: _containers.RepeatedCompositeFieldContainer[SubjectCase]
    def __init__(self, request_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., provider: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., issued_at: _Optional[int] = ..., data_as_of: _Optional[str] = ..., held: _Optional[bool] = ..., fields: _Optional[_Iterable[_Union[SubjectField, _Mapping]]] = ..., cases: _Optional[_Iterable[_Union[SubjectCase, _Mapping]]] = ...) -> None: ...

class SignedSubjectReport(_message.Message):
    __slots__ = ("report", "signature")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    report: bytes
    signature: bytes
    def __init__(self, report: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetSubjectReportRequest(_message.Message):
    __slots__ = ("query", "enterprise_binding")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    query: SignedSubjectQuery
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, query: _Optional[_Union[SignedSubjectQuery, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class GetSubjectReportResponse(_message.Message):
    __slots__ = ("sealed",)
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sealed: _common_pb2.SealedBox
    def __init__(self, sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class CaseFiling(_message.Message):
    __slots__ = ("case_id", "kind", "enterprise_uscc", "provider", "field", "statement", "evidence", "evidence_name", "filed_at", "nonce")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    kind: CaseKind
    enterprise_uscc: str
    provider: str
    field: str
    statement: str
    evidence: bytes
    evidence_name: str
    filed_at: int
    nonce: bytes
    def __init__(self, case_id: _Optional[str] = ..., kind: _Optional[_Union[CaseKind, str]] = ..., enterprise_uscc: _Optional[str] = ..., provider: _Optional[str] = ..., field: _Optional[str] = ..., statement: _Optional[str] = ..., evidence: _Optional[bytes] = ..., evidence_name: _Optional[str] = ..., filed_at: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SignedCaseFiling(_message.Message):
    __slots__ = ("filing", "signature")
    FILING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    filing: bytes
    signature: bytes
    def __init__(self, filing: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class FileCaseRequest(_message.Message):
    __slots__ = ("query", "enterprise_binding", "provider", "field", "kind", "case_id", "sealed")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    query: SignedSubjectQuery
    enterprise_binding: _common_pb2.SignedPartyBinding
    provider: str
    field: str
    kind: CaseKind
    case_id: str
    sealed: _common_pb2.SealedBox
    def __init__(self, query: _Optional[_Union[SignedSubjectQuery, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., provider: _Optional[str] = ..., field: _Optional[str] = ..., kind: _Optional[_Union[CaseKind, str]] = ..., case_id: _Optional[str] = ..., sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class FileCaseResponse(_message.Message):
    __slots__ = ("case_id", "state")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    state: CaseState
    def __init__(self, case_id: _Optional[str] = ..., state: _Optional[_Union[CaseState, str]] = ...) -> None: ...

class AcceptCaseRequest(_message.Message):
    __slots__ = ("query", "enterprise_binding", "case_id", "sealed")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    query: SignedSubjectQuery
    enterprise_binding: _common_pb2.SignedPartyBinding
    case_id: str
    sealed: _common_pb2.SealedBox
    def __init__(self, query: _Optional[_Union[SignedSubjectQuery, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., case_id: _Optional[str] = ..., sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class AcceptCaseResponse(_message.Message):
    __slots__ = ("case_id", "state")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    state: CaseState
    def __init__(self, case_id: _Optional[str] = ..., state: _Optional[_Union[CaseState, str]] = ...) -> None: ...

class ListMyConsentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConsentListing(_message.Message):
    __slots__ = ("consent_id", "grantee_id", "purpose", "state", "uses", "max_uses", "valid_until", "fields")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    grantee_id: str
    purpose: _common_pb2.ConsentPurpose
    state: _common_pb2.ConsentState
    uses: int
    max_uses: int
    valid_until: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, consent_id: _Optional[str] = ..., grantee_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.ConsentPurpose, str]] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ..., uses: _Optional[int] = ..., max_uses: _Optional[int] = ..., valid_until: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMyConsentsResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[ConsentListing]
    def __init__(self, consents: _Optional[_Iterable[_Union[ConsentListing, _Mapping]]] = ...) -> None: ...

class ConsentStateChange(_message.Message):
    __slots__ = ("change_id", "consent_id", "enterprise_uscc", "action", "signed_at_ms", "nonce")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    consent_id: str
    enterprise_uscc: str
    action: ConsentAction
    signed_at_ms: int
    nonce: bytes
    def __init__(self, change_id: _Optional[str] = ..., consent_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., action: _Optional[_Union[ConsentAction, str]] = ..., signed_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SignedConsentStateChange(_message.Message):
    __slots__ = ("change", "signature")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    change: bytes
    signature: bytes
    def __init__(self, change: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ChangeConsentStateRequest(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: SignedConsentStateChange
    def __init__(self, change: _Optional[_Union[SignedConsentStateChange, _Mapping]] = ...) -> None: ...

class ChangeConsentStateResponse(_message.Message):
    __slots__ = ("consent_id", "state", "providers_notified")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    providers_notified: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ..., providers_notified: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateConsentPauseRequest(_message.Message):
    __slots__ = ("change", "enterprise_binding")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    change: SignedConsentStateChange
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, change: _Optional[_Union[SignedConsentStateChange, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class UpdateConsentPauseResponse(_message.Message):
    __slots__ = ("consent_id", "state")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ...) -> None: ...

class GetCaseStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCaseStatsResponse(_message.Message):
    __slots__ = ("provider", "open_objections", "overdue_objections", "open_repairs", "overdue_repairs", "deadline_seconds")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OPEN_OBJECTIONS_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_OBJECTIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_REPAIRS_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_REPAIRS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    open_objections: int
    overdue_objections: int
    open_repairs: int
    overdue_repairs: int
    deadline_seconds: int
    def __init__(self, provider: _Optional[str] = ..., open_objections: _Optional[int] = ..., overdue_objections: _Optional[int] = ..., open_repairs: _Optional[int] = ..., overdue_repairs: _Optional[int] = ..., deadline_seconds: _Optional[int] = ...) -> None: ...

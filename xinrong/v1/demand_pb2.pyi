from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DemandState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEMAND_STATE_UNSPECIFIED: _ClassVar[DemandState]
    DEMAND_STATE_ACTIVE: _ClassVar[DemandState]
    DEMAND_STATE_WITHDRAWN: _ClassVar[DemandState]
    DEMAND_STATE_EXPIRED: _ClassVar[DemandState]
DEMAND_STATE_UNSPECIFIED: DemandState
DEMAND_STATE_ACTIVE: DemandState
DEMAND_STATE_WITHDRAWN: DemandState
DEMAND_STATE_EXPIRED: DemandState

class FinancingDemand(_message.Message):
    __slots__ = ("demand_id", "enterprise_uscc", "amount_yuan", "term_months", "purpose", "region", "industry", "consent_ids", "show_grade", "valid_until", "issued_at", "nonce", "enterprise_key_id")
    DEMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_YUAN_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INDUSTRY_FIELD_NUMBER: _ClassVar[int]
    CONSENT_IDS_FIELD_NUMBER: _ClassVar[int]
    SHOW_GRADE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    demand_id: str
    enterprise_uscc: str
    amount_yuan: int
    term_months: int
    purpose: str
    region: str
    industry: str
    consent_ids: _containers.RepeatedScalarFieldContainer[str]
    show_grade: bool
    valid_until: int
    issued_at: int
    nonce: bytes
    enterprise_key_id: str
    def __init__(self, demand_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., amount_yuan: _Optional[int] = ..., term_months: _Optional[int] = ..., purpose: _Optional[str] = ..., region: _Optional[str] = ..., industry: _Optional[str] = ..., consent_ids: _Optional[_Iterable[str]] = ..., show_grade: _Optional[bool] = ..., valid_until: _Optional[int] = ..., issued_at: _Optional[int] = ..., nonce: _Optional[bytes] = ..., enterprise_key_id: _Optional[str] = ...) -> None: ...

class SignedDemand(_message.Message):
    __slots__ = ("demand", "signature", "enterprise_binding")
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    demand: bytes
    signature: bytes
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, demand: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class RegisterDemandRequest(_message.Message):
    __slots__ = ("demand", "consents")
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    demand: SignedDemand
    consents: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedConsent]
    def __init__(self, demand: _Optional[_Union[SignedDemand, _Mapping]] = ..., consents: _Optional[_Iterable[_Union[_common_pb2.SignedConsent, _Mapping]]] = ...) -> None: ...

class RegisterDemandResponse(_message.Message):
    __slots__ = ("demand_id", "state", "whitelisted", "pushed_to")
    DEMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WHITELISTED_FIELD_NUMBER: _ClassVar[int]
    PUSHED_TO_FIELD_NUMBER: _ClassVar[int]
    demand_id: str
    state: DemandState
    whitelisted: bool
    pushed_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, demand_id: _Optional[str] = ..., state: _Optional[_Union[DemandState, str]] = ..., whitelisted: _Optional[bool] = ..., pushed_to: _Optional[_Iterable[str]] = ...) -> None: ...

class WithdrawDemandRequest(_message.Message):
    __slots__ = ("demand_id",)
    DEMAND_ID_FIELD_NUMBER: _ClassVar[int]
    demand_id: str
    def __init__(self, demand_id: _Optional[str] = ...) -> None: ...

class WithdrawDemandResponse(_message.Message):
    __slots__ = ("demand_id", "state")
    DEMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    demand_id: str
    state: DemandState
    def __init__(self, demand_id: _Optional[str] = ..., state: _Optional[_Union[DemandState, str]] = ...) -> None: ...

class ListMyDemandsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DemandStatus(_message.Message):
    __slots__ = ("demand", "state", "whitelisted", "pushed_to", "registered_ms")
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WHITELISTED_FIELD_NUMBER: _ClassVar[int]
    PUSHED_TO_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_MS_FIELD_NUMBER: _ClassVar[int]
    demand: SignedDemand
    state: DemandState
    whitelisted: bool
    pushed_to: _containers.RepeatedScalarFieldContainer[str]
    registered_ms: int
    def __init__(self, demand: _Optional[_Union[SignedDemand, _Mapping]] = ..., state: _Optional[_Union[DemandState, str]] = ..., whitelisted: _Optional[bool] = ..., pushed_to: _Optional[_Iterable[str]] = ..., registered_ms: _Optional[int] = ...) -> None: ...

class ListMyDemandsResponse(_message.Message):
    __slots__ = ("demands",)
    DEMANDS_FIELD_NUMBER: _ClassVar[int]
    demands: _containers.RepeatedCompositeFieldContainer[DemandStatus]
    def __init__(self, demands: _Optional[_Iterable[_Union[DemandStatus, _Mapping]]] = ...) -> None: ...

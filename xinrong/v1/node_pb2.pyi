from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterConsentRequest(_message.Message):
    __slots__ = ("consent",)
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    consent: _common_pb2.SignedConsent
    def __init__(self, consent: _Optional[_Union[_common_pb2.SignedConsent, _Mapping]] = ...) -> None: ...

class RegisterConsentResponse(_message.Message):
    __slots__ = ("consent_id", "state")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("revocation",)
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    revocation: _common_pb2.SignedConsentRevocation
    def __init__(self, revocation: _Optional[_Union[_common_pb2.SignedConsentRevocation, _Mapping]] = ...) -> None: ...

class RevokeConsentResponse(_message.Message):
    __slots__ = ("consent_id", "state", "providers_notified")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    providers_notified: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ..., providers_notified: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConsentStatusRequest(_message.Message):
    __slots__ = ("consent_id",)
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    def __init__(self, consent_id: _Optional[str] = ...) -> None: ...

class GetConsentStatusResponse(_message.Message):
    __slots__ = ("consent_id", "state", "uses", "max_uses", "valid_until")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: _common_pb2.ConsentState
    uses: int
    max_uses: int
    valid_until: int
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ConsentState, str]] = ..., uses: _Optional[int] = ..., max_uses: _Optional[int] = ..., valid_until: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "enterprise_uscc", "consent_id", "claims")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    claims: _containers.RepeatedCompositeFieldContainer[_common_pb2.Claim]
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ..., claims: _Optional[_Iterable[_Union[_common_pb2.Claim, _Mapping]]] = ...) -> None: ...

class ProviderAnswer(_message.Message):
    __slots__ = ("provider", "sealed")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    provider: str
    sealed: _common_pb2.SealedBox
    def __init__(self, provider: _Optional[str] = ..., sealed: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("request_id", "answers", "audit_leaf_index")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answers: _containers.RepeatedCompositeFieldContainer[ProviderAnswer]
    audit_leaf_index: int
    def __init__(self, request_id: _Optional[str] = ..., answers: _Optional[_Iterable[_Union[ProviderAnswer, _Mapping]]] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class IndicatorQuery(_message.Message):
    __slots__ = ("field", "form")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    field: str
    form: _common_pb2.DisclosureForm
    def __init__(self, field: _Optional[str] = ..., form: _Optional[_Union[_common_pb2.DisclosureForm, str]] = ...) -> None: ...

class GetIndicatorsRequest(_message.Message):
    __slots__ = ("request_id", "requested_at", "enterprise_uscc", "consent_id", "queries")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    queries: _containers.RepeatedCompositeFieldContainer[IndicatorQuery]
    def __init__(self, request_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., enterprise_uscc: _Optional[str] = ..., consent_id: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[IndicatorQuery, _Mapping]]] = ...) -> None: ...

class GetIndicatorsResponse(_message.Message):
    __slots__ = ("request_id", "answers", "audit_leaf_index")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answers: _containers.RepeatedCompositeFieldContainer[ProviderAnswer]
    audit_leaf_index: int
    def __init__(self, request_id: _Optional[str] = ..., answers: _Optional[_Iterable[_Union[ProviderAnswer, _Mapping]]] = ..., audit_leaf_index: _Optional[int] = ...) -> None: ...

class ListPartiesRequest(_message.Message):
    __slots__ = ("role",)
    ROLE_FIELD_NUMBER: _ClassVar[int]
    role: _common_pb2.PartyRole
    def __init__(self, role: _Optional[_Union[_common_pb2.PartyRole, str]] = ...) -> None: ...

class ListPartiesResponse(_message.Message):
    __slots__ = ("bindings",)
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    def __init__(self, bindings: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ...) -> None: ...

class GetCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogResponse(_message.Message):
    __slots__ = ("catalog_toml", "sha256")
    CATALOG_TOML_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    catalog_toml: bytes
    sha256: str
    def __init__(self, catalog_toml: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

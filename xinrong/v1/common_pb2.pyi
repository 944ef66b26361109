from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartyRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTY_ROLE_UNSPECIFIED: _ClassVar[PartyRole]
    PARTY_ROLE_NODE: _ClassVar[PartyRole]
    PARTY_ROLE_PROVIDER: _ClassVar[PartyRole]
    PARTY_ROLE_INSTITUTION: _ClassVar[PartyRole]
    PARTY_ROLE_ENTERPRISE: _ClassVar[PartyRole]

class ConsentPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_PURPOSE_UNSPECIFIED: _ClassVar[ConsentPurpose]
    CONSENT_PURPOSE_LOAN_APPLICATION: _ClassVar[ConsentPurpose]
    CONSENT_PURPOSE_POST_LOAN_MONITORING: _ClassVar[ConsentPurpose]
    CONSENT_PURPOSE_CREDIT_SCORING: _ClassVar[ConsentPurpose]
    CONSENT_PURPOSE_JOINT_MODELING: _ClassVar[ConsentPurpose]
    CONSENT_PURPOSE_MATCHING: _ClassVar[ConsentPurpose]

class FetchType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FETCH_TYPE_UNSPECIFIED: _ClassVar[FetchType]
    FETCH_TYPE_ONE_TIME: _ClassVar[FetchType]
    FETCH_TYPE_PERIODIC: _ClassVar[FetchType]

class DisclosureForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCLOSURE_FORM_UNSPECIFIED: _ClassVar[DisclosureForm]
    DISCLOSURE_FORM_FLAG: _ClassVar[DisclosureForm]
    DISCLOSURE_FORM_GRADE: _ClassVar[DisclosureForm]
    DISCLOSURE_FORM_BRACKET: _ClassVar[DisclosureForm]
    DISCLOSURE_FORM_LADDER: _ClassVar[DisclosureForm]

class ConsentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATE_UNSPECIFIED: _ClassVar[ConsentState]
    CONSENT_STATE_ACTIVE: _ClassVar[ConsentState]
    CONSENT_STATE_PAUSED: _ClassVar[ConsentState]
    CONSENT_STATE_REVOKED: _ClassVar[ConsentState]
    CONSENT_STATE_EXPIRED: _ClassVar[ConsentState]

class ClaimOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAIM_OPERATOR_UNSPECIFIED: _ClassVar[ClaimOperator]
    CLAIM_OPERATOR_EQ: _ClassVar[ClaimOperator]
    CLAIM_OPERATOR_IN: _ClassVar[ClaimOperator]
    CLAIM_OPERATOR_GE: _ClassVar[ClaimOperator]
    CLAIM_OPERATOR_LT: _ClassVar[ClaimOperator]
    CLAIM_OPERATOR_IN_BRACKET: _ClassVar[ClaimOperator]

class VerdictResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_RESULT_UNSPECIFIED: _ClassVar[VerdictResult]
    VERDICT_RESULT_TRUE: _ClassVar[VerdictResult]
    VERDICT_RESULT_FALSE: _ClassVar[VerdictResult]
    VERDICT_RESULT_NO_DATA: _ClassVar[VerdictResult]

class SealingScheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEALING_SCHEME_UNSPECIFIED: _ClassVar[SealingScheme]
    SEALING_SCHEME_HPKE: _ClassVar[SealingScheme]
    SEALING_SCHEME_HPKE_SESSION: _ClassVar[SealingScheme]
PARTY_ROLE_UNSPECIFIED: PartyRole
PARTY_ROLE_NODE: PartyRole
PARTY_ROLE_PROVIDER: PartyRole
PARTY_ROLE_INSTITUTION: PartyRole
PARTY_ROLE_ENTERPRISE: PartyRole
CONSENT_PURPOSE_UNSPECIFIED: ConsentPurpose
CONSENT_PURPOSE_LOAN_APPLICATION: ConsentPurpose
CONSENT_PURPOSE_POST_LOAN_MONITORING: ConsentPurpose
CONSENT_PURPOSE_CREDIT_SCORING: ConsentPurpose
CONSENT_PURPOSE_JOINT_MODELING: ConsentPurpose
CONSENT_PURPOSE_MATCHING: ConsentPurpose
FETCH_TYPE_UNSPECIFIED: FetchType
FETCH_TYPE_ONE_TIME: FetchType
FETCH_TYPE_PERIODIC: FetchType
DISCLOSURE_FORM_UNSPECIFIED: DisclosureForm
DISCLOSURE_FORM_FLAG: DisclosureForm
DISCLOSURE_FORM_GRADE: DisclosureForm
DISCLOSURE_FORM_BRACKET: DisclosureForm
DISCLOSURE_FORM_LADDER: DisclosureForm
CONSENT_STATE_UNSPECIFIED: ConsentState
CONSENT_STATE_ACTIVE: ConsentState
CONSENT_STATE_PAUSED: ConsentState
CONSENT_STATE_REVOKED: ConsentState
CONSENT_STATE_EXPIRED: ConsentState
CLAIM_OPERATOR_UNSPECIFIED: ClaimOperator
CLAIM_OPERATOR_EQ: ClaimOperator
CLAIM_OPERATOR_IN: ClaimOperator
CLAIM_OPERATOR_GE: ClaimOperator
CLAIM_OPERATOR_LT: ClaimOperator
CLAIM_OPERATOR_IN_BRACKET: ClaimOperator
VERDICT_RESULT_UNSPECIFIED: VerdictResult
VERDICT_RESULT_TRUE: VerdictResult
VERDICT_RESULT_FALSE: VerdictResult
VERDICT_RESULT_NO_DATA: VerdictResult
SEALING_SCHEME_UNSPECIFIED: SealingScheme
SEALING_SCHEME_HPKE: SealingScheme
SEALING_SCHEME_HPKE_SESSION: SealingScheme

class PartyBinding(_message.Message):
    __slots__ = ("party_id", "role", "signing_public_key", "sealing_public_key", "provider", "not_before", "not_after", "key_id")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SEALING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    role: PartyRole
    signing_public_key: bytes
    sealing_public_key: bytes
    provider: str
    not_before: int
    not_after: int
    key_id: str
    def __init__(self, party_id: _Optional[str] = ..., role: _Optional[_Union[PartyRole, str]] = ..., signing_public_key: _Optional[bytes] = ..., sealing_public_key: _Optional[bytes] = ..., provider: _Optional[str] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., key_id: _Optional[str] = ...) -> None: ...

class SignedPartyBinding(_message.Message):
    __slots__ = ("binding", "ca_signature")
    BINDING_FIELD_NUMBER: _ClassVar[int]
    CA_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    binding: bytes
    ca_signature: bytes
    def __init__(self, binding: _Optional[bytes] = ..., ca_signature: _Optional[bytes] = ...) -> None: ...

class ConsentScopeItem(_message.Message):
    __slots__ = ("field", "forms")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FORMS_FIELD_NUMBER: _ClassVar[int]
    field: str
    forms: _containers.RepeatedScalarFieldContainer[DisclosureForm]
    def __init__(self, field: _Optional[str] = ..., forms: _Optional[_Iterable[_Union[DisclosureForm, str]]] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("consent_id", "enterprise_uscc", "grantee_id", "purpose", "scope", "data_period_from", "data_period_to", "fetch_type", "max_uses_per_day", "valid_from", "valid_until", "max_uses", "retention_days", "nonce", "enterprise_key_id", "issued_at")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FROM_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_TO_FIELD_NUMBER: _ClassVar[int]
    FETCH_TYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    enterprise_uscc: str
    grantee_id: str
    purpose: ConsentPurpose
    scope: _containers.RepeatedCompositeFieldContainer[ConsentScopeItem]
    data_period_from: str
    data_period_to: str
    fetch_type: FetchType
    max_uses_per_day: int
    valid_from: int
    valid_until: int
    max_uses: int
    retention_days: int
    nonce: bytes
    enterprise_key_id: str
    issued_at: int
    def __init__(self, consent_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., grantee_id: _Optional[str] = ..., purpose: _Optional[_Union[ConsentPurpose, str]] = ..., scope: _Optional[_Iterable[_Union[ConsentScopeItem, _Mapping]]] = ..., data_period_from: _Optional[str] = ..., data_period_to: _Optional[str] = ..., fetch_type: _Optional[_Union[FetchType, str]] = ..., max_uses_per_day: _Optional[int] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., max_uses: _Optional[int] = ..., retention_days: _Optional[int] = ..., nonce: _Optional[bytes] = ..., enterprise_key_id: _Optional[str] = ..., issued_at: _Optional[int] = ...) -> None: ...

class SignedConsent(_message.Message):
    __slots__ = ("consent", "signature", "enterprise_binding")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    consent: bytes
    signature: bytes
    enterprise_binding: SignedPartyBinding
    def __init__(self, consent: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., enterprise_binding: _Optional[_Union[SignedPartyBinding, _Mapping]] = ...) -> None: ...

class ConsentRevocation(_message.Message):
    __slots__ = ("consent_id", "enterprise_uscc", "revoked_at", "nonce")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    enterprise_uscc: str
    revoked_at: int
    nonce: bytes
    def __init__(self, consent_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., revoked_at: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SignedConsentRevocation(_message.Message):
    __slots__ = ("revocation", "signature")
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    revocation: bytes
    signature: bytes
    def __init__(self, revocation: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("field", "op", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    op: ClaimOperator
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, field: _Optional[str] = ..., op: _Optional[_Union[ClaimOperator, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("request_id", "enterprise_uscc", "claim", "claim_text", "result", "data_as_of", "consent_id", "audience", "issued_at", "expires_at", "provider", "provider_key_id", "disputed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    CLAIM_TEXT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPUTED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    enterprise_uscc: str
    claim: Claim
    claim_text: str
    result: VerdictResult
    data_as_of: str
    consent_id: str
    audience: str
    issued_at: int
    expires_at: int
    provider: str
    provider_key_id: str
    disputed: bool
    def __init__(self, request_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ..., claim_text: _Optional[str] = ..., result: _Optional[_Union[VerdictResult, str]] = ..., data_as_of: _Optional[str] = ..., consent_id: _Optional[str] = ..., audience: _Optional[str] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., provider: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., disputed: _Optional[bool] = ...) -> None: ...

class SignedVerdict(_message.Message):
    __slots__ = ("verdict", "signature")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    verdict: bytes
    signature: bytes
    def __init__(self, verdict: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Bracket(_message.Message):
    __slots__ = ("index", "lower", "upper")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    index: int
    lower: str
    upper: str
    def __init__(self, index: _Optional[int] = ..., lower: _Optional[str] = ..., upper: _Optional[str] = ...) -> None: ...

class Indicator(_message.Message):
    __slots__ = ("request_id", "enterprise_uscc", "field", "form", "flag", "grade", "bracket", "no_data", "data_as_of", "consent_id", "audience", "issued_at", "expires_at", "provider", "provider_key_id", "disputed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    BRACKET_FIELD_NUMBER: _ClassVar[int]
    NO_DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPUTED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    enterprise_uscc: str
    field: str
    form: DisclosureForm
    flag: bool
    grade: str
    bracket: Bracket
    no_data: bool
    data_as_of: str
    consent_id: str
    audience: str
    issued_at: int
    expires_at: int
    provider: str
    provider_key_id: str
    disputed: bool
    def __init__(self, request_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., field: _Optional[str] = ..., form: _Optional[_Union[DisclosureForm, str]] = ..., flag: _Optional[bool] = ..., grade: _Optional[str] = ..., bracket: _Optional[_Union[Bracket, _Mapping]] = ..., no_data: _Optional[bool] = ..., data_as_of: _Optional[str] = ..., consent_id: _Optional[str] = ..., audience: _Optional[str] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., provider: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., disputed: _Optional[bool] = ...) -> None: ...

class SignedIndicator(_message.Message):
    __slots__ = ("indicator", "signature")
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    indicator: bytes
    signature: bytes
    def __init__(self, indicator: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AnswerBundle(_message.Message):
    __slots__ = ("verdicts", "indicators")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[SignedVerdict]
    indicators: _containers.RepeatedCompositeFieldContainer[SignedIndicator]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[SignedVerdict, _Mapping]]] = ..., indicators: _Optional[_Iterable[_Union[SignedIndicator, _Mapping]]] = ...) -> None: ...

class SealedBox(_message.Message):
    __slots__ = ("recipient_id", "recipient_key_id", "content_type", "context", "ciphertext", "scheme", "wrapped_key")
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    recipient_id: str
    recipient_key_id: str
    content_type: str
    context: str
    ciphertext: bytes
    scheme: SealingScheme
    wrapped_key: bytes
    def __init__(self, recipient_id: _Optional[str] = ..., recipient_key_id: _Optional[str] = ..., content_type: _Optional[str] = ..., context: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., scheme: _Optional[_Union[SealingScheme, str]] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...

from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProductCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_CATEGORY_UNSPECIFIED: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_GOVERNMENT_PROCUREMENT: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_TECHNOLOGY: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_CONTRACT_ORDER: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_GREEN_CREDIT: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_IP_PLEDGE: _ClassVar[ProductCategory]
    PRODUCT_CATEGORY_WORKING_CAPITAL: _ClassVar[ProductCategory]
PRODUCT_CATEGORY_UNSPECIFIED: ProductCategory
PRODUCT_CATEGORY_GOVERNMENT_PROCUREMENT: ProductCategory
PRODUCT_CATEGORY_TECHNOLOGY: ProductCategory
PRODUCT_CATEGORY_CONTRACT_ORDER: ProductCategory
PRODUCT_CATEGORY_GREEN_CREDIT: ProductCategory
PRODUCT_CATEGORY_IP_PLEDGE: ProductCategory
PRODUCT_CATEGORY_WORKING_CAPITAL: ProductCategory

class LoanProduct(_message.Message):
    __slots__ = ("product_id", "bank_id", "name", "category", "amount_min", "amount_max", "term_months_min", "term_months_max", "rate_min_bps", "rate_max_bps", "regions", "rules", "paillier_n", "published_at", "catalog_sha256")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MIN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MAX_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_MIN_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_MAX_FIELD_NUMBER: _ClassVar[int]
    RATE_MIN_BPS_FIELD_NUMBER: _ClassVar[int]
    RATE_MAX_BPS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_N_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SHA256_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    bank_id: str
    name: str
    category: ProductCategory
    amount_min: int
    amount_max: int
    term_months_min: int
    term_months_max: int
    rate_min_bps: int
    rate_max_bps: int
    regions: _containers.RepeatedScalarFieldContainer[str]
    rules: _containers.RepeatedCompositeFieldContainer[_common_pb2.Claim]
    paillier_n: bytes
    published_at: int
    catalog_sha256: str
    def __init__(self, product_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[_Union[ProductCategory, str]] = ..., amount_min: _Optional[int] = ..., amount_max: _Optional[int] = ..., term_months_min: _Optional[int] = ..., term_months_max: _Optional[int] = ..., rate_min_bps: _Optional[int] = ..., rate_max_bps: _Optional[int] = ..., regions: _Optional[_Iterable[str]] = ..., rules: _Optional[_Iterable[_Union[_common_pb2.Claim, _Mapping]]] = ..., paillier_n: _Optional[bytes] = ..., published_at: _Optional[int] = ..., catalog_sha256: _Optional[str] = ...) -> None: ...

class SignedLoanProduct(_message.Message):
    __slots__ = ("product", "signature")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    product: bytes
    signature: bytes
    def __init__(self, product: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ProductListing(_message.Message):
    __slots__ = ("product", "bank_binding", "withdrawn", "withdrawn_at")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    BANK_BINDING_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_AT_FIELD_NUMBER: _ClassVar[int]
    product: SignedLoanProduct
    bank_binding: _common_pb2.SignedPartyBinding
    withdrawn: bool
    withdrawn_at: int
    def __init__(self, product: _Optional[_Union[SignedLoanProduct, _Mapping]] = ..., bank_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., withdrawn: _Optional[bool] = ..., withdrawn_at: _Optional[int] = ...) -> None: ...

class MatchSubject(_message.Message):
    __slots__ = ("enterprise_uscc", "consent")
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    consent: _common_pb2.SignedConsent
    def __init__(self, enterprise_uscc: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.SignedConsent, _Mapping]] = ...) -> None: ...

class ComputeMatchRequest(_message.Message):
    __slots__ = ("match_id", "requested_at", "product", "bank_binding", "subjects")
    MATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    BANK_BINDING_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    match_id: str
    requested_at: int
    product: SignedLoanProduct
    bank_binding: _common_pb2.SignedPartyBinding
    subjects: _containers.RepeatedCompositeFieldContainer[MatchSubject]
    def __init__(self, match_id: _Optional[str] = ..., requested_at: _Optional[int] = ..., product: _Optional[_Union[SignedLoanProduct, _Mapping]] = ..., bank_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., subjects: _Optional[_Iterable[_Union[MatchSubject, _Mapping]]] = ...) -> None: ...

class MatchContribution(_message.Message):
    __slots__ = ("match_id", "product_id", "product_sha256", "enterprise_uscc", "provider", "provider_key_id", "data_as_of", "consent_id", "issued_at", "ciphertext")
    MATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    match_id: str
    product_id: str
    product_sha256: str
    enterprise_uscc: str
    provider: str
    provider_key_id: str
    data_as_of: str
    consent_id: str
    issued_at: int
    ciphertext: bytes
    def __init__(self, match_id: _Optional[str] = ..., product_id: _Optional[str] = ..., product_sha256: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., provider: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., data_as_of: _Optional[str] = ..., consent_id: _Optional[str] = ..., issued_at: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SignedMatchContribution(_message.Message):
    __slots__ = ("contribution", "signature")
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    contribution: bytes
    signature: bytes
    def __init__(self, contribution: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class MatchFeedback(_message.Message):
    __slots__ = ("match_id", "product_id", "enterprise_uscc", "provider", "data_as_of", "failed_rules", "passed_rules", "issued_at")
    MATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    FAILED_RULES_FIELD_NUMBER: _ClassVar[int]
    PASSED_RULES_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    match_id: str
    product_id: str
    enterprise_uscc: str
    provider: str
    data_as_of: str
    failed_rules: _containers.RepeatedScalarFieldContainer[str]
    passed_rules: _containers.RepeatedScalarFieldContainer[str]
    issued_at: int
    def __init__(self, match_id: _Optional[str] = ..., product_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., provider: _Optional[str] = ..., data_as_of: _Optional[str] = ..., failed_rules: _Optional[_Iterable[str]] = ..., passed_rules: _Optional[_Iterable[str]] = ..., issued_at: _Optional[int] = ...) -> None: ...

class SignedMatchFeedback(_message.Message):
    __slots__ = ("feedback", "signature")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    feedback: bytes
    signature: bytes
    def __init__(self, feedback: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class MatchOutcome(_message.Message):
    __slots__ = ("enterprise_uscc", "contribution", "feedback", "refused_reason")
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    enterprise_uscc: str
    contribution: SignedMatchContribution
    feedback: _common_pb2.SealedBox
    refused_reason: str
    def __init__(self, enterprise_uscc: _Optional[str] = ..., contribution: _Optional[_Union[SignedMatchContribution, _Mapping]] = ..., feedback: _Optional[_Union[_common_pb2.SealedBox, _Mapping]] = ..., refused_reason: _Optional[str] = ...) -> None: ...

class ComputeMatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[MatchOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[MatchOutcome, _Mapping]]] = ...) -> None: ...

class PublishProductRequest(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: SignedLoanProduct
    def __init__(self, product: _Optional[_Union[SignedLoanProduct, _Mapping]] = ...) -> None: ...

class PublishProductResponse(_message.Message):
    __slots__ = ("product_id", "queued")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    queued: int
    def __init__(self, product_id: _Optional[str] = ..., queued: _Optional[int] = ...) -> None: ...

class WithdrawProductRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class WithdrawProductResponse(_message.Message):
    __slots__ = ("product_id", "withdrawn_at")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_AT_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    withdrawn_at: int
    def __init__(self, product_id: _Optional[str] = ..., withdrawn_at: _Optional[int] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("bank_id", "include_withdrawn")
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    bank_id: str
    include_withdrawn: bool
    def __init__(self, bank_id: _Optional[str] = ..., include_withdrawn: _Optional[bool] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[ProductListing]
    def __init__(self, products: _Optional[_Iterable[_Union[ProductListing, _Mapping]]] = ...) -> None: ...

class RunMatchingRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class RunMatchingResponse(_message.Message):
    __slots__ = ("products", "pairs", "refused", "seconds", "admission_seconds", "agents_seconds", "store_seconds")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    products: int
    pairs: int
    refused: int
    seconds: float
    admission_seconds: float
    agents_seconds: float
    store_seconds: float
    def __init__(self, products: _Optional[int] = ..., pairs: _Optional[int] = ..., refused: _Optional[int] = ..., seconds: _Optional[float] = ..., admission_seconds: _Optional[float] = ..., agents_seconds: _Optional[float] = ..., store_seconds: _Optional[float] = ...) -> None: ...

class ListMyMatchesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnterpriseMatch(_message.Message):
    __slots__ = ("product_id", "bank_id", "match_id", "computed_at", "feedback", "provider_bindings")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    bank_id: str
    match_id: str
    computed_at: int
    feedback: _containers.RepeatedCompositeFieldContainer[_common_pb2.SealedBox]
    provider_bindings: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    def __init__(self, product_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., match_id: _Optional[str] = ..., computed_at: _Optional[int] = ..., feedback: _Optional[_Iterable[_Union[_common_pb2.SealedBox, _Mapping]]] = ..., provider_bindings: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ...) -> None: ...

class ListMyMatchesResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[EnterpriseMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[EnterpriseMatch, _Mapping]]] = ...) -> None: ...

class ProductApplication(_message.Message):
    __slots__ = ("application_id", "enterprise_uscc", "product_id", "bank_id", "amount", "term_months", "purpose", "region", "requested_at", "match_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_USCC_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    MATCH_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    enterprise_uscc: str
    product_id: str
    bank_id: str
    amount: int
    term_months: int
    purpose: str
    region: str
    requested_at: int
    match_id: str
    def __init__(self, application_id: _Optional[str] = ..., enterprise_uscc: _Optional[str] = ..., product_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., amount: _Optional[int] = ..., term_months: _Optional[int] = ..., purpose: _Optional[str] = ..., region: _Optional[str] = ..., requested_at: _Optional[int] = ..., match_id: _Optional[str] = ...) -> None: ...

class SignedProductApplication(_message.Message):
    __slots__ = ("application", "signature")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    application: bytes
    signature: bytes
    def __init__(self, application: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ApplyToProductRequest(_message.Message):
    __slots__ = ("application", "enterprise_binding")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    application: SignedProductApplication
    enterprise_binding: _common_pb2.SignedPartyBinding
    def __init__(self, application: _Optional[_Union[SignedProductApplication, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ...) -> None: ...

class ApplyToProductResponse(_message.Message):
    __slots__ = ("application_id", "received_at")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    received_at: int
    def __init__(self, application_id: _Optional[str] = ..., received_at: _Optional[int] = ...) -> None: ...

class EligibilityAttestation(_message.Message):
    __slots__ = ("contributions", "provider_bindings", "sum")
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    contributions: _containers.RepeatedCompositeFieldContainer[SignedMatchContribution]
    provider_bindings: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPartyBinding]
    sum: bytes
    def __init__(self, contributions: _Optional[_Iterable[_Union[SignedMatchContribution, _Mapping]]] = ..., provider_bindings: _Optional[_Iterable[_Union[_common_pb2.SignedPartyBinding, _Mapping]]] = ..., sum: _Optional[bytes] = ...) -> None: ...

class ApplicationRecord(_message.Message):
    __slots__ = ("application", "enterprise_binding", "attestation", "received_at")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_BINDING_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    application: SignedProductApplication
    enterprise_binding: _common_pb2.SignedPartyBinding
    attestation: EligibilityAttestation
    received_at: int
    def __init__(self, application: _Optional[_Union[SignedProductApplication, _Mapping]] = ..., enterprise_binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., attestation: _Optional[_Union[EligibilityAttestation, _Mapping]] = ..., received_at: _Optional[int] = ...) -> None: ...

class ListApplicationsRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class ListApplicationsResponse(_message.Message):
    __slots__ = ("applications",)
    APPLICATIONS_FIELD_NUMBER: _ClassVar[int]
    applications: _containers.RepeatedCompositeFieldContainer[ApplicationRecord]
    def __init__(self, applications: _Optional[_Iterable[_Union[ApplicationRecord, _Mapping]]] = ...) -> None: ...

from xinrong.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstitutionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTITUTION_TYPE_UNSPECIFIED: _ClassVar[InstitutionType]
    INSTITUTION_TYPE_BANK: _ClassVar[InstitutionType]
    INSTITUTION_TYPE_INSURER: _ClassVar[InstitutionType]
    INSTITUTION_TYPE_GUARANTOR: _ClassVar[InstitutionType]
    INSTITUTION_TYPE_CREDIT_AGENCY: _ClassVar[InstitutionType]

class InstitutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTITUTION_STATUS_UNSPECIFIED: _ClassVar[InstitutionStatus]
    INSTITUTION_STATUS_ACTIVE: _ClassVar[InstitutionStatus]
    INSTITUTION_STATUS_SUSPENDED: _ClassVar[InstitutionStatus]

class AssessmentResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSESSMENT_RESULT_UNSPECIFIED: _ClassVar[AssessmentResult]
    ASSESSMENT_RESULT_PASS: _ClassVar[AssessmentResult]
    ASSESSMENT_RESULT_FAIL: _ClassVar[AssessmentResult]
INSTITUTION_TYPE_UNSPECIFIED: InstitutionType
INSTITUTION_TYPE_BANK: InstitutionType
INSTITUTION_TYPE_INSURER: InstitutionType
INSTITUTION_TYPE_GUARANTOR: InstitutionType
INSTITUTION_TYPE_CREDIT_AGENCY: InstitutionType
INSTITUTION_STATUS_UNSPECIFIED: InstitutionStatus
INSTITUTION_STATUS_ACTIVE: InstitutionStatus
INSTITUTION_STATUS_SUSPENDED: InstitutionStatus
ASSESSMENT_RESULT_UNSPECIFIED: AssessmentResult
ASSESSMENT_RESULT_PASS: AssessmentResult
ASSESSMENT_RESULT_FAIL: AssessmentResult

class SecurityAssessment(_message.Message):
    __slots__ = ("assessed_at", "result", "valid_until", "assessor")
    ASSESSED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ASSESSOR_FIELD_NUMBER: _ClassVar[int]
    assessed_at: int
    result: AssessmentResult
    valid_until: int
    assessor: str
    def __init__(self, assessed_at: _Optional[int] = ..., result: _Optional[_Union[AssessmentResult, str]] = ..., valid_until: _Optional[int] = ..., assessor: _Optional[str] = ...) -> None: ...

class QuotaOverride(_message.Message):
    __slots__ = ("method", "rate", "burst")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    method: str
    rate: float
    burst: float
    def __init__(self, method: _Optional[str] = ..., rate: _Optional[float] = ..., burst: _Optional[float] = ...) -> None: ...

class Institution(_message.Message):
    __slots__ = ("institution_id", "name", "type", "status", "status_reason", "status_since_ms", "suspended_by", "assessment", "quota_overrides", "source")
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_BY_FIELD_NUMBER: _ClassVar[int]
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    QUOTA_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    name: str
    type: InstitutionType
    status: InstitutionStatus
    status_reason: str
    status_since_ms: int
    suspended_by: str
    assessment: SecurityAssessment
    quota_overrides: _containers.RepeatedCompositeFieldContainer[QuotaOverride]
    source: str
    def __init__(self, institution_id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[InstitutionType, str]] = ..., status: _Optional[_Union[InstitutionStatus, str]] = ..., status_reason: _Optional[str] = ..., status_since_ms: _Optional[int] = ..., suspended_by: _Optional[str] = ..., assessment: _Optional[_Union[SecurityAssessment, _Mapping]] = ..., quota_overrides: _Optional[_Iterable[_Union[QuotaOverride, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class RegisterInstitutionRequest(_message.Message):
    __slots__ = ("binding", "name", "type")
    BINDING_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    binding: _common_pb2.SignedPartyBinding
    name: str
    type: InstitutionType
    def __init__(self, binding: _Optional[_Union[_common_pb2.SignedPartyBinding, _Mapping]] = ..., name: _Optional[str] = ..., type: _Optional[_Union[InstitutionType, str]] = ...) -> None: ...

class RegisterInstitutionResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class ListInstitutionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInstitutionsResponse(_message.Message):
    __slots__ = ("institutions",)
    INSTITUTIONS_FIELD_NUMBER: _ClassVar[int]
    institutions: _containers.RepeatedCompositeFieldContainer[Institution]
    def __init__(self, institutions: _Optional[_Iterable[_Union[Institution, _Mapping]]] = ...) -> None: ...

class GetInstitutionRequest(_message.Message):
    __slots__ = ("institution_id",)
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    def __init__(self, institution_id: _Optional[str] = ...) -> None: ...

class GetInstitutionResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class SuspendInstitutionRequest(_message.Message):
    __slots__ = ("institution_id", "reason")
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    reason: str
    def __init__(self, institution_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendInstitutionResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class ResumeInstitutionRequest(_message.Message):
    __slots__ = ("institution_id",)
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    def __init__(self, institution_id: _Optional[str] = ...) -> None: ...

class ResumeInstitutionResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class RecordAssessmentRequest(_message.Message):
    __slots__ = ("institution_id", "assessment")
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    assessment: SecurityAssessment
    def __init__(self, institution_id: _Optional[str] = ..., assessment: _Optional[_Union[SecurityAssessment, _Mapping]] = ...) -> None: ...

class RecordAssessmentResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class ListDueAssessmentsRequest(_message.Message):
    __slots__ = ("within_days",)
    WITHIN_DAYS_FIELD_NUMBER: _ClassVar[int]
    within_days: int
    def __init__(self, within_days: _Optional[int] = ...) -> None: ...

class ListDueAssessmentsResponse(_message.Message):
    __slots__ = ("institutions",)
    INSTITUTIONS_FIELD_NUMBER: _ClassVar[int]
    institutions: _containers.RepeatedCompositeFieldContainer[Institution]
    def __init__(self, institutions: _Optional[_Iterable[_Union[Institution, _Mapping]]] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("institution_id", "quota")
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    quota: QuotaOverride
    def __init__(self, institution_id: _Optional[str] = ..., quota: _Optional[_Union[QuotaOverride, _Mapping]] = ...) -> None: ...

class SetQuotaResponse(_message.Message):
    __slots__ = ("institution",)
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    institution: Institution
    def __init__(self, institution: _Optional[_Union[Institution, _Mapping]] = ...) -> None: ...

class GetInstitutionUsageRequest(_message.Message):
    __slots__ = ("institution_id", "since")
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    institution_id: str
    since: int
    def __init__(self, institution_id: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class UsageCount(_message.Message):
    __slots__ = ("day", "purpose", "provider", "decision", "count")
    DAY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    day: str
    purpose: str
    provider: str
    decision: str
    count: int
    def __init__(self, day: _Optional[str] = ..., purpose: _Optional[str] = ..., provider: _Optional[str] = ..., decision: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetInstitutionUsageResponse(_message.Message):
    __slots__ = ("counts", "total")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[UsageCount]
    total: int
    def __init__(self, counts: _Optional[_Iterable[_Union[UsageCount, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

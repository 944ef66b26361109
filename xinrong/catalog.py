"""The shared-information catalog: one source of truth for fields, providers,
sharing modes and disclosure forms.

Everything that decides what an institution may learn reads this module, so
the probing policy cannot drift between node, agent and client. The loader
refuses a catalog whose ladders are not nested in its bracket edges: that
nesting is what bounds any combination of claims to the finest bracket.
"""

from __future__ import annotations

import enum
import hashlib
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path

from xinrong.errors import CatalogError


class FieldType(enum.StrEnum):
    BOOL = "bool"
    ENUM = "enum"
    INT = "int"
    DECIMAL = "decimal"
    DATE = "date"


class SharingMode(enum.StrEnum):
    AGGREGATE = "aggregate"
    INTERFACE = "interface"
    INTERFACE_CONSENT = "interface_consent"
    VERIFICATION_CONSENT = "verification_consent"


class Form(enum.StrEnum):
    FLAG = "flag"
    GRADE = "grade"
    BRACKET = "bracket"
    LADDER = "ladder"


_FORMS_FOR_TYPE: dict[FieldType, frozenset[Form]] = {
    FieldType.BOOL: frozenset({Form.FLAG}),
    FieldType.ENUM: frozenset({Form.GRADE}),
    FieldType.INT: frozenset({Form.BRACKET, Form.LADDER}),
    FieldType.DECIMAL: frozenset({Form.BRACKET, Form.LADDER}),
    FieldType.DATE: frozenset(),
}


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    display_name_zh: str
    category: str
    policy_item: int


@dataclass(frozen=True)
class FieldSpec:
    key: str
    provider: str
    column: str
    type: FieldType
    unit: str
    mode: SharingMode
    forms: frozenset[Form]
    description: str
    values: tuple[str, ...] = ()
    edges: tuple[Decimal, ...] = ()
    ladder: tuple[Decimal, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.type in (FieldType.INT, FieldType.DECIMAL)

    @property
    def verification_only(self) -> bool:
        """Verification-only fields answer TRUE/FALSE claims and never disclose a value form."""
        return self.mode is SharingMode.VERIFICATION_CONSENT

    def bracket_index(self, value: Decimal) -> int:
        """Index of the published bracket holding value; -1 below the first edge."""
        index = -1
        for i, edge in enumerate(self.edges):
            if value >= edge:
                index = i
            else:
                break
        return index

    def bracket_bounds(self, index: int) -> tuple[Decimal, Decimal | None]:
        lower = self.edges[index]
        upper = self.edges[index + 1] if index + 1 < len(self.edges) else None
        return lower, upper


class SelfReportedType(enum.StrEnum):
    INT = "int"
    DECIMAL = "decimal"
    BOOL = "bool"
    TEXT = "text"
    TEXT_LIST = "text_list"


# Bounds of a self-reported text when the catalog names none.
DEFAULT_TEXT_LENGTH = 256
DEFAULT_LIST_ITEMS = 32


@dataclass(frozen=True)
class SelfReportedSpec:
    """An item an enterprise may file about itself (自主填报): no provider holds it.

    Kept apart from ``fields`` on purpose: a field belongs to a provider and
    so to an agent process; a self-reported item belongs to nobody but the
    enterprise and is stored only at the node, marked self-reported.
    """

    key: str
    type: SelfReportedType
    unit: str
    label_zh: str
    label_en: str
    max_length: int = DEFAULT_TEXT_LENGTH
    max_items: int = DEFAULT_LIST_ITEMS


@dataclass(frozen=True)
class Commitment:
    """The credit commitment text (信用承诺) a filing is signed with, pinned by hash."""

    version: str
    text_zh: str
    text_en: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text_zh.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Catalog:
    version: str
    sha256: str
    raw: bytes
    providers: dict[str, Provider]
    fields: dict[str, FieldSpec]
    _by_provider: dict[str, tuple[FieldSpec, ...]] = field(default_factory=dict, repr=False)
    self_reported: dict[str, SelfReportedSpec] = field(default_factory=dict)
    commitment: Commitment | None = None

    def field(self, key: str) -> FieldSpec:
        try:
            return self.fields[key]
        except KeyError:
            raise CatalogError(f"unknown catalog field {key!r}") from None

    def provider_fields(self, provider: str) -> tuple[FieldSpec, ...]:
        if provider not in self.providers:
            raise CatalogError(f"unknown provider {provider!r}")
        return self._by_provider.get(provider, ())

    def aggregate_fields(self, provider: str) -> tuple[FieldSpec, ...]:
        """The provider's public (aggregate-mode) fields: the only ones it may push to the node."""
        return tuple(s for s in self.provider_fields(provider) if s.mode is SharingMode.AGGREGATE)

    def public_providers(self) -> tuple[str, ...]:
        """Providers holding at least one aggregate-mode field, in catalog order."""
        return tuple(p for p in self.providers if any(s.mode is SharingMode.AGGREGATE for s in self.provider_fields(p)))


def _decimal_list(raw: object, where: str) -> tuple[Decimal, ...]:
    if not isinstance(raw, list):
        raise CatalogError(f"{where}: expected a list of numbers")
    out = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise CatalogError(f"{where}: {item!r} is not a number")
        try:
            out.append(Decimal(str(item)))
        except InvalidOperation:
            raise CatalogError(f"{where}: {item!r} is not a number") from None
    return tuple(out)


def _parse_field(entry: dict[str, object], providers: dict[str, Provider]) -> FieldSpec:
    key = entry.get("key")
    if not isinstance(key, str) or key.count(".") != 1:
        raise CatalogError(f"field key {key!r} must look like 'provider.column'")
    provider, column = key.split(".")
    if provider not in providers:
        raise CatalogError(f"{key}: provider {provider!r} is not declared")
    if not column.isidentifier() or column != column.lower():
        raise CatalogError(f"{key}: column must be a lower-case identifier")
    try:
        ftype = FieldType(str(entry.get("type")))
        mode = SharingMode(str(entry.get("mode")))
        forms_raw = entry.get("forms", [])
        if not isinstance(forms_raw, list):
            raise CatalogError(f"{key}: forms must be a list")
        forms = frozenset(Form(str(f)) for f in forms_raw)
    except ValueError as exc:
        raise CatalogError(f"{key}: {exc}") from None
    if not forms <= _FORMS_FOR_TYPE[ftype]:
        raise CatalogError(f"{key}: forms {sorted(forms)} do not fit type {ftype}")
    values: tuple[str, ...] = ()
    edges: tuple[Decimal, ...] = ()
    ladder: tuple[Decimal, ...] = ()
    if ftype is FieldType.ENUM:
        raw_values = entry.get("values")
        if not isinstance(raw_values, list) or not raw_values or not all(isinstance(v, str) for v in raw_values):
            raise CatalogError(f"{key}: enum fields need a non-empty list of string values")
        values = tuple(str(v) for v in raw_values)
        if len(set(values)) != len(values) or any("," in v or not v.strip() for v in values):
            raise CatalogError(f"{key}: enum values must be unique, non-empty and free of commas")
    if ftype in (FieldType.INT, FieldType.DECIMAL) and forms:
        edges = _decimal_list(entry.get("edges"), f"{key}.edges")
        if len(edges) < 2 or list(edges) != sorted(set(edges)):
            raise CatalogError(f"{key}: edges must be at least two strictly ascending numbers")
        ladder = _decimal_list(entry.get("ladder", []), f"{key}.ladder")
        if Form.LADDER in forms and not ladder:
            raise CatalogError(f"{key}: ladder form needs a ladder")
        if list(ladder) != sorted(set(ladder)):
            raise CatalogError(f"{key}: ladder must be strictly ascending")
        # The nesting rule of the probing policy: every ladder threshold is a
        # bracket edge, so ladder and bracket answers refine the same partition.
        missing = [str(t) for t in ladder if t not in edges]
        if missing:
            raise CatalogError(f"{key}: ladder thresholds {missing} are not bracket edges")
    return FieldSpec(
        key=key,
        provider=provider,
        column=column,
        type=ftype,
        unit=str(entry.get("unit", "")),
        mode=mode,
        forms=forms,
        description=str(entry.get("description", "")),
        values=values,
        edges=edges,
        ladder=ladder,
    )


def _bound(entry: dict[str, object], name: str, default: int, key: str) -> int:
    value = entry.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise CatalogError(f"{key}: {name} must be a whole number in [1, 4096]")
    return value


def _parse_self_reported(raw: object, fields: dict[str, FieldSpec]) -> dict[str, SelfReportedSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise CatalogError("[[self_reported]] must be an array of tables")
    out: dict[str, SelfReportedSpec] = {}
    for entry in raw:
        if not isinstance(entry, dict):
            raise CatalogError("every [[self_reported]] entry must be a table")
        key = entry.get("key")
        if not isinstance(key, str) or not key.startswith("self.") or key.count(".") != 1:
            raise CatalogError(f"self-reported key {key!r} must look like 'self.name'")
        name = key.split(".")[1]
        if not name.isidentifier() or name != name.lower():
            raise CatalogError(f"{key}: name must be a lower-case identifier")
        if key in out or key in fields:
            raise CatalogError(f"self-reported item {key} is declared twice")
        try:
            stype = SelfReportedType(str(entry.get("type")))
        except ValueError as exc:
            raise CatalogError(f"{key}: {exc}") from None
        out[key] = SelfReportedSpec(
            key=key,
            type=stype,
            unit=str(entry.get("unit", "")),
            label_zh=str(entry.get("label_zh", key)),
            label_en=str(entry.get("label_en", key)),
            max_length=_bound(entry, "max_length", DEFAULT_TEXT_LENGTH, key),
            max_items=_bound(entry, "max_items", DEFAULT_LIST_ITEMS, key),
        )
    return out


def _parse_commitment(raw: object) -> Commitment | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CatalogError("[commitment] must be a table")
    version, text_zh, text_en = (raw.get(k) for k in ("version", "text_zh", "text_en"))
    if not all(isinstance(v, str) and v.strip() for v in (version, text_zh, text_en)):
        raise CatalogError("[commitment] needs non-empty version, text_zh and text_en")
    return Commitment(version=str(version), text_zh=str(text_zh), text_en=str(text_en))


def parse_catalog(raw: bytes) -> Catalog:
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"catalog is not valid TOML: {exc}") from None
    providers: dict[str, Provider] = {}
    raw_providers = doc.get("providers")
    if not isinstance(raw_providers, dict) or not raw_providers:
        raise CatalogError("catalog declares no providers")
    for name, p in raw_providers.items():
        if not isinstance(p, dict):
            raise CatalogError(f"provider {name!r} must be a table")
        providers[name] = Provider(
            name=name,
            display_name=str(p.get("name", name)),
            display_name_zh=str(p.get("name_zh", "")),
            category=str(p.get("category", "")),
            policy_item=int(p.get("policy_item", 0)),
        )
    fields: dict[str, FieldSpec] = {}
    raw_fields = doc.get("fields")
    if not isinstance(raw_fields, list):
        raise CatalogError("catalog declares no fields")
    for entry in raw_fields:
        if not isinstance(entry, dict):
            raise CatalogError("every [[fields]] entry must be a table")
        spec = _parse_field(entry, providers)
        if spec.key in fields:
            raise CatalogError(f"field {spec.key} is declared twice")
        fields[spec.key] = spec
    by_provider: dict[str, list[FieldSpec]] = {}
    for spec in fields.values():
        by_provider.setdefault(spec.provider, []).append(spec)
    return Catalog(
        version=str(doc.get("version", "")),
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=raw,
        providers=providers,
        fields=fields,
        _by_provider={k: tuple(v) for k, v in by_provider.items()},
        self_reported=_parse_self_reported(doc.get("self_reported"), fields),
        commitment=_parse_commitment(doc.get("commitment")),
    )


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog file, or the one shipped with the package when path is None."""
    if path is None:
        return default_catalog()
    return parse_catalog(Path(path).read_bytes())


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    raw = (resources.files("xinrong") / "catalog.toml").read_bytes()
    return parse_catalog(raw)

"""One loader for every TOML file a party reads: node, agent and modeling job.

Each party declares its file as frozen pydantic models (``Section``) with
``extra="forbid"`` and strict types: a TOML ``"32"`` is not an integer and
``1`` is not ``true``. This module reads the file, maps its tables onto
the model and turns every validation failure into one ``ConfigError``
that names the table and key as written in the file and, for an unknown
key or table, the nearest valid name: a misspelt
``enterprise_daily_budgte`` must not silently fall back to a default in a
system whose limits are a privacy control, and ``[modelling]`` must not
be ignored.

A file model says how its tables map onto fields:

* ``MAIN``: the tables whose keys are the model's own fields (``[node]``;
  ``[job]`` and ``[data]`` for a job file);
* every other field is a table of its own (``[modeling]``) or an array of
  tables (``[[providers]]``), named as the field;
* ``DERIVED``: fields the loader fills in (the file's own path), which no
  table may set.

Relative paths (``ConfigPath``) resolve against the config file's
directory, so a config and its keys can move together. Secrets are paths,
never values.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from xinrong import ids
from xinrong.errors import ValidationError

T = TypeVar("T", bound="Section")


class ConfigError(ValidationError, ValueError):
    """The config file is missing, malformed or names something that does not exist."""


class Section(BaseModel):
    """A table of a config file: frozen, strictly typed, no unknown keys."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True, validate_by_name=True
    )

    MAIN: ClassVar[tuple[str, ...]] = ()
    DERIVED: ClassVar[frozenset[str]] = frozenset()
    # Fields that are tables of their own although they do not hold a Section
    # (a dataclass of the modeling package, a free-form table), by file name.
    TABLES: ClassVar[frozenset[str]] = frozenset()


def _resolve_path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty path")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


# A path in a config file: relative to the file's directory.
ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]


def check_address(address: str, *, allow_port_zero: bool) -> str:
    """host:port (IPv6 as [::1]:port); the port must be numeric."""
    host, sep, port = address.rpartition(":")
    number = ids.decimal(port, max_digits=5)
    if not sep or not host or number is None:
        raise ValueError(f"{address!r} is not host:port")
    if number > 65535 or (number == 0 and not allow_port_zero):
        raise ValueError(f"port {port} is out of range")
    return address


def unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} appears twice")
        seen.add(value)


def read_toml(path: str | Path, *, what: str = "config file") -> tuple[dict[str, Any], Path]:
    """The parsed document and the resolved path of the file."""
    path = Path(path).expanduser().resolve()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8")), path
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _suggest(name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(where: str, names: Sequence[str], allowed: Sequence[str]) -> ConfigError:
    hints = "".join(_suggest(n, allowed) for n in names[:1])
    return ConfigError(f"{where}: unknown keys {sorted(names)}{hints}; allowed: {sorted(allowed)}")


def _table_name(field: str, annotation_is_array: bool) -> str:
    return f"[[{field}]]" if annotation_is_array else f"[{field}]"


def parse_file(
    model: type[T],
    doc: Mapping[str, Any],
    *,
    base: Path,
    derived: Mapping[str, Any] | None = None,
    what: str = "config",
) -> T:
    """Validate a parsed TOML document against a file model."""
    names = _input_names(model)
    tables = [key for key, name in names.items() if name not in model.DERIVED and _is_table(model, name)]
    top_allowed = [*model.MAIN, *tables]
    unknown_tables = [name for name in doc if name not in top_allowed]
    if unknown_tables:
        raise _unknown(what, unknown_tables, top_allowed)
    own = [key for key, name in names.items() if name not in model.DERIVED and key not in tables]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for main in model.MAIN:
        table = doc.get(main, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{main}] must be a table")
        stray = [key for key in table if key not in own]
        if stray:
            raise _unknown(f"[{main}]", stray, own)
        for key, value in table.items():
            merged[key] = value
            origin[key] = main
    for name in tables:
        if name in doc:
            merged[name] = doc[name]
    merged.update(derived or {})
    try:
        return model.model_validate(merged, context={"base": base})
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe(model, exc, origin)) from None


def load_file(
    model: type[T], path: str | Path, *, what: str = "config file", derived: Mapping[str, Any] | None = None
) -> T:
    """Read, parse and validate one file; ``derived`` fields may take the resolved ``path``."""
    doc, resolved = read_toml(path, what=what)
    extra = {key: (resolved if value is None else value) for key, value in (derived or {}).items()}
    return parse_file(model, doc, base=resolved.parent, derived=extra, what=str(resolved))


def _input_names(model: type[Section]) -> dict[str, str]:
    """The key a file writes for each field (its alias, if it has one) -> the field's name."""
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def unknown_keys(where: str, names: Sequence[str], allowed: Sequence[str]) -> str:
    """The message for unknown keys, with the nearest valid name (for tables checked by hand)."""
    return str(_unknown(where, names, allowed).detail)


def _is_table(model: type[Section], name: str) -> bool:
    """A field is a table of its own when it holds a Section (or a sequence of them) or is declared one."""
    info = model.model_fields[name]
    if (info.alias or name) in model.TABLES:
        return True
    return _section_of(info.annotation) is not None


def _section_of(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _where(model: type[Section], loc: tuple[int | str, ...], origin: Mapping[str, str]) -> str:
    """The place in the file: [node].db, [[providers]] #2.address, [modeling].enabled."""
    if not loc:
        return "config"
    head = str(loc[0])
    if head in origin:
        return f"[{origin[head]}].{head}"
    field = _input_names(model).get(head, head)
    if field in model.model_fields and _is_table(model, field):
        annotation = model.model_fields[field].annotation
        is_array = getattr(annotation, "__origin__", None) in (tuple, list)
        place = _table_name(head, is_array)
        rest = list(loc[1:])
        if is_array and rest and isinstance(rest[0], int):
            place += f" #{int(rest.pop(0)) + 1}"
        if rest:
            place += "." + ".".join(str(part) for part in rest)
        return place
    main = model.MAIN[0] if model.MAIN else "config"
    return f"[{main}].{head}"


_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "missing": "missing required key",
}


def _describe(model: type[Section], exc: pydantic.ValidationError, origin: Mapping[str, str]) -> str:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        where = _where(model, loc, origin)
        ctx = error.get("ctx") or {}
        if kind == "extra_forbidden":
            section = _section_at(model, loc[:-1])
            allowed = (
                [key for key, name in _input_names(section).items() if name not in section.DERIVED] if section else []
            )
            parent = where.rsplit(".", 1)[0]
            lines.append(f"{parent}: unknown keys [{loc[-1]!r}]{_suggest(str(loc[-1]), allowed)}; allowed: {allowed}")
        elif kind == "greater_than_equal":
            lines.append(f"{where} must be >= {ctx.get('ge')}")
        elif kind == "greater_than":
            lines.append(f"{where} must be > {ctx.get('gt')}")
        elif kind == "less_than_equal":
            lines.append(f"{where} must be <= {ctx.get('le')}")
        elif kind == "less_than":
            lines.append(f"{where} must be < {ctx.get('lt')}")
        elif kind in ("value_error", "assertion_error"):
            cause = ctx.get("error")
            text = str(cause) if cause is not None else error["msg"]
            lines.append(f"{where}: {text}" if loc else text)
        elif kind == "literal_error":
            lines.append(f"{where} must be one of {ctx.get('expected')}")
        elif kind == "missing":
            lines.append(f"{where}: missing required key {str(loc[-1])!r}")
        elif kind in _MESSAGES:
            lines.append(f"{where} {_MESSAGES[kind]}")
        else:
            lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


def _section_at(model: type[Section], loc: tuple[int | str, ...]) -> type[Section] | None:
    current: type[Section] | None = model
    for part in loc:
        if current is None or isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        current = _section_of(field.annotation) if field is not None else None
    return current


__all__ = [
    "ConfigError",
    "ConfigPath",
    "Section",
    "check_address",
    "load_file",
    "parse_file",
    "read_toml",
    "unique",
    "unknown_keys",
]

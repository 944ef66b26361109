"""CSV import: a provider's export becomes the agent's active data period.

The file is validated against the catalog as it streams into one SQLite
transaction. Every problem is collected with its line number; if there is
any, the transaction rolls back and ``ImportRejected`` lists them all, so a
bad file is never half-imported and the operator fixes everything in one
round. A good file replaces the active period in the same transaction.

Memory stays flat for million-row files: rows go to SQLite in batches and
the table's primary key, not a Python set, finds duplicate USCCs. Problem
messages name the line and column and what was expected, never the cell's
content: the operator has the file, the log does not need the data.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

from xinrong import uscc as uscc_mod
from xinrong.catalog import Catalog, FieldSpec, FieldType
from xinrong.errors import ImportRejected, ValidationError
from xinrong.provider_agent.store import DataStore

log = logging.getLogger(__name__)

MAX_PROBLEMS = 10_000
BATCH_ROWS = 10_000
KEY_COLUMNS = ("uscc", "as_of")

_BAD = object()
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECIMAL_RE = re.compile(r"\d+(?:\.\d+)?")

Parser = Callable[[str], object]


@dataclass(frozen=True)
class ImportResult:
    period_id: int
    provider: str
    as_of: str
    rows: int
    sha256: str
    seconds: float
    previous_as_of: str | None


class _HashingReader(io.RawIOBase):
    """Hashes the bytes as the CSV parser consumes them, so the recorded
    SHA-256 is of exactly what was imported (no second read, no TOCTOU)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        return n


def _parse_date(cell: str) -> object:
    if not _DATE_RE.fullmatch(cell):
        return _BAD
    try:
        dt.date.fromisoformat(cell)
    except ValueError:
        return _BAD
    return cell


def _parser_for(spec: FieldSpec) -> tuple[Parser, str]:
    """A fast cell parser for a catalog field and the message for a bad cell.

    A parser returns the cell's JSON token (``true``, ``"A"``, ``35``,
    ``"1718944.67"``) or ``_BAD``. Tokens are built from validated text only
    (digits, a dot, dashes, catalog enum values encoded once), so joining
    them is valid JSON and several times faster than ``json.dumps`` per row.
    Decimals stay JSON strings: exact, read back with ``Decimal(text)``.
    """
    floor = spec.edges[0] if spec.edges else Decimal(0)
    if spec.type is FieldType.BOOL:
        tokens = {"true": "true", "false": "false"}
        return (lambda c: tokens.get(c.lower(), _BAD)), "expected true or false"
    if spec.type is FieldType.ENUM:
        encoded = {v: json.dumps(v) for v in spec.values}
        return (lambda c: encoded.get(c, _BAD)), f"expected one of {', '.join(spec.values)}"
    if spec.type is FieldType.INT:

        def parse_int(c: str) -> object:
            if not (c.isascii() and c.isdigit()):
                return _BAD
            value = int(c)
            return str(value) if value >= floor else _BAD

        return parse_int, f"expected a whole number >= {floor}"
    if spec.type is FieldType.DECIMAL:

        def parse_decimal(c: str) -> object:
            if not _DECIMAL_RE.fullmatch(c):
                return _BAD
            if floor and Decimal(c) < floor:
                return _BAD
            return f'"{c}"'

        return parse_decimal, f"expected a non-negative decimal number (digits, optional '.digits') >= {floor}"

    def parse_date(c: str) -> object:
        return _BAD if _parse_date(c) is _BAD else f'"{c}"'

    return parse_date, "expected an ISO date YYYY-MM-DD"


class _Problems:
    """Collects problems up to a cap, then only counts (a wholly wrong
    million-row file must not exhaust memory with messages)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, line: int, text: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(f"line {line}: {text}")
        else:
            self.dropped += 1

    def __bool__(self) -> bool:
        return bool(self.items)

    def final(self) -> list[str]:
        if self.dropped:
            return [*self.items, f"... and {self.dropped} more problems (listing stopped at {MAX_PROBLEMS})"]
        return list(self.items)


def _check_header(header: list[str], specs: tuple[FieldSpec, ...], provider: str) -> list[str]:
    names = [h.strip() for h in header]
    expected = set(KEY_COLUMNS) | {s.column for s in specs}
    problems = []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"line 1: duplicate columns {dupes}")
    unknown = [n for n in names if n not in expected]
    if unknown:
        problems.append(f"line 1: columns {unknown} are not {provider} fields in the catalog")
    missing = sorted(expected - set(names))
    if missing:
        problems.append(f"line 1: missing columns {missing}")
    return problems


def import_csv(
    store: DataStore,
    catalog: Catalog,
    provider: str,
    csv_path: str | Path,
    *,
    allow_older: bool = False,
    now: int | None = None,
) -> ImportResult:
    """Validate and import a provider CSV; raise ImportRejected listing every problem."""
    started = time.perf_counter()
    csv_path = Path(csv_path)
    specs = catalog.provider_fields(provider)
    if not specs:
        raise ValidationError(f"catalog declares no fields for provider {provider!r}")
    try:
        raw = csv_path.open("rb")
    except OSError as exc:
        raise ValidationError(f"cannot open {csv_path}: {exc.strerror or exc}") from None
    with raw:
        hashing = _HashingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(hashing, 1 << 20), encoding="utf-8-sig", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportRejected(["line 1: the file is empty (expected a header row)"]) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportRejected([f"line 1: cannot read the header: {exc}"]) from None
        header_problems = _check_header(header, specs, provider)
        if header_problems:
            raise ImportRejected(header_problems)
        index = {h.strip(): i for i, h in enumerate(header)}
        plan = [(index[s.column], *_parser_for(s), s.column) for s in specs]
        i_uscc, i_as_of, width = index["uscc"], index["as_of"], len(header)

        writer = store.begin_import(
            source=csv_path.name,
            columns=[s.column for s in specs],
            catalog_sha256=catalog.sha256,
            now=int(time.time()) if now is None else now,
        )
        try:
            problems = _Problems()
            as_of: str | None = None
            as_of_line = 0
            rows = 0
            batch: list[tuple[str, int, str]] = []

            def flush() -> None:
                for line, first in writer.add(batch):
                    problems.add(line, f"USCC duplicates line {first}")
                batch.clear()

            line = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except (csv.Error, UnicodeDecodeError) as exc:
                    problems.add(reader.line_num + 1, f"cannot parse the CSV from here on: {exc}")
                    break
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != width:
                    problems.add(line, f"expected {width} cells, found {len(row)}")
                    continue
                row_ok = True
                try:
                    code = uscc_mod.parse(row[i_uscc])
                except ValueError as exc:
                    problems.add(line, f"column uscc: not a valid USCC ({exc})")
                    code = None
                    row_ok = False
                cell_as_of = row[i_as_of].strip()
                if as_of is None:
                    if _parse_date(cell_as_of) is _BAD:
                        problems.add(line, "column as_of: expected an ISO date YYYY-MM-DD")
                        row_ok = False
                    else:
                        as_of, as_of_line = cell_as_of, line
                elif cell_as_of != as_of:
                    problems.add(line, f"column as_of: differs from line {as_of_line}; one as-of date per file")
                    row_ok = False
                tokens: list[str] = []
                for idx, parse, message, column in plan:
                    cell = row[idx].strip()
                    if not cell:
                        tokens.append("null")  # an empty cell is a missing value
                        continue
                    token = parse(cell)
                    if token is _BAD:
                        problems.add(line, f"column {column}: {message}")
                        row_ok = False
                        tokens.append("null")
                    else:
                        tokens.append(str(token))
                if code is None:
                    continue
                if row_ok:
                    rows += 1
                # Rows with a valid USCC go in even when another cell is bad, so
                # duplicates are reported for the whole file; a rejected file
                # rolls back anyway.
                batch.append((code, line, "[" + ",".join(tokens) + "]"))
                if len(batch) >= BATCH_ROWS:
                    flush()
            flush()
            if as_of is None and not problems:
                problems.add(line + 1, "the file has no data rows")
            previous = writer.previous
            if as_of is not None and previous is not None and as_of < previous.as_of and not allow_older:
                problems.add(
                    as_of_line,
                    f"as_of {as_of} is older than the active period {previous.as_of} "
                    "(use --allow-older to go back to an older period)",
                )
            if problems:
                raise ImportRejected(problems.final())
            assert as_of is not None
            digest = hashing.sha256.hexdigest()
            writer.commit(as_of=as_of, rows=rows, sha256=digest)
        except BaseException:
            writer.abort()
            raise
    seconds = time.perf_counter() - started
    log.info("imported %s period %s: %d rows, sha256 %s, %.1fs", provider, as_of, rows, digest[:16], seconds)
    return ImportResult(
        period_id=writer.period_id,
        provider=provider,
        as_of=as_of,
        rows=rows,
        sha256=digest,
        seconds=seconds,
        previous_as_of=None if previous is None else previous.as_of,
    )

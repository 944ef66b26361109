"""What a run takes (``GenerateConfig``) and what it records (``Manifest``), and the fixed names."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass

MIN_ENTERPRISES = 100
MAX_ENTERPRISES = 1_000_000
DEFAULT_SEED = 20260930
DEFAULT_AS_OF = dt.date(2026, 9, 30)
DEFAULT_BORROWER_SHARE = 0.40
GENERATOR_VERSION = "1"
BANK_FILE = "bank_loans.csv"
MANIFEST_FILE = "manifest.json"
BANK_COLUMNS = ("uscc", "defaulted", "loan_amount", "term_months", "years_with_bank")
BANK_OWNER = "bank"


@dataclass(frozen=True)
class GenerateConfig:
    """Validated parameters of one generation run."""

    enterprises: int
    seed: int = DEFAULT_SEED
    as_of: dt.date = DEFAULT_AS_OF
    borrower_share: float = DEFAULT_BORROWER_SHARE

    def __post_init__(self) -> None:
        if isinstance(self.enterprises, bool) or not isinstance(self.enterprises, int):
            raise ValueError("enterprises must be an integer")
        if not MIN_ENTERPRISES <= self.enterprises <= MAX_ENTERPRISES:
            raise ValueError(
                f"enterprises must be between {MIN_ENTERPRISES:,} and {MAX_ENTERPRISES:,}, got {self.enterprises:,}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError("seed must be an integer in [0, 2^63)")
        if not isinstance(self.as_of, dt.date) or isinstance(self.as_of, dt.datetime):
            raise ValueError("as_of must be a date")
        if not dt.date(2000, 1, 1) <= self.as_of <= dt.date(2100, 12, 31):
            raise ValueError("as_of must be between 2000-01-01 and 2100-12-31")
        share = self.borrower_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share):
            raise ValueError("borrower_share must be a number")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"borrower_share must be in (0, 1], got {share}")

    @property
    def borrowers(self) -> int:
        return max(1, round(self.borrower_share * self.enterprises))


@dataclass(frozen=True)
class FileInfo:
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    seed: int
    enterprises: int
    as_of: dt.date
    borrower_share: float
    catalog_version: str
    catalog_sha256: str
    files: dict[str, FileInfo]

    def to_json(self) -> str:
        doc = {
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "enterprises": self.enterprises,
            "as_of": self.as_of.isoformat(),
            "borrower_share": self.borrower_share,
            "catalog_version": self.catalog_version,
            "catalog_sha256": self.catalog_sha256,
            "files": {
                name: {"rows": info.rows, "sha256": info.sha256, "bytes": info.bytes}
                for name, info in sorted(self.files.items())
            },
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

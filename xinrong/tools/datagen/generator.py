"""One run: the firms, every provider file, the loan book and manifest.json."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from xinrong.catalog import Catalog, default_catalog
from xinrong.tools.datagen.columns import ProviderData, Typed, conform, typed
from xinrong.tools.datagen.common import stream
from xinrong.tools.datagen.config import BANK_COLUMNS, BANK_FILE, MANIFEST_FILE, FileInfo, GenerateConfig, Manifest
from xinrong.tools.datagen.csv_writer import SAFE_TOKEN, write_csv
from xinrong.tools.datagen.firms import make_firms
from xinrong.tools.datagen.loan_book import loan_book
from xinrong.tools.datagen.providers import PROVIDER_MODELS

log = logging.getLogger(__name__)

# Probability that a non-key cell is blank, per provider (others: _BLANK_DEFAULT).
_BLANK_RATE = {"market": 0.005, "judicial": 0.01}
_BLANK_DEFAULT = 0.02


def generate(out_dir: str | Path, cfg: GenerateConfig, catalog: Catalog | None = None) -> Manifest:
    """Write every provider CSV, the bank loan book and manifest.json into out_dir."""
    catalog = catalog or default_catalog()
    for spec in catalog.fields.values():
        for value in spec.values:
            if not set(value) <= SAFE_TOKEN:
                raise ValueError(f"{spec.key}: enum value {value!r} cannot be written unquoted")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    firms = make_firms(cfg)
    prefix = cfg.as_of.isoformat().encode("ascii")
    files: dict[str, FileInfo] = {}
    for provider in catalog.providers:
        specs = catalog.provider_fields(provider)
        model = PROVIDER_MODELS.get(provider)
        rng = stream(cfg.seed, f"provider:{provider}")
        if model is not None:
            data = model(firms, rng)
        else:
            data = ProviderData(present=rng.random(firms.n) < 0.8, columns={})
        rows = np.flatnonzero(data.present).astype(np.int64)
        rate = _BLANK_RATE.get(provider, _BLANK_DEFAULT)
        cols: list[Typed] = []
        for spec in specs:
            col = conform(spec, data.columns.get(spec.column), firms, stream(cfg.seed, f"field:{spec.key}"))
            blank = stream(cfg.seed, f"blank:{spec.key}").random(rows.shape[0]) < rate
            cols.append(typed(spec, col, rows, blank))
        header = ["uscc", "as_of", *(spec.column for spec in specs)]
        name = f"{provider}.csv"
        files[name] = write_csv(out / name, header, firms.uscc[rows], prefix, cols)
        log.info("datagen: wrote %s (%d rows)", name, files[name].rows)
    bank_rows, bank_cols = loan_book(cfg, firms)
    files[BANK_FILE] = write_csv(out / BANK_FILE, list(BANK_COLUMNS), firms.uscc[bank_rows], b"", bank_cols)
    manifest = Manifest(
        seed=cfg.seed,
        enterprises=cfg.enterprises,
        as_of=cfg.as_of,
        borrower_share=cfg.borrower_share,
        catalog_version=catalog.version,
        catalog_sha256=catalog.sha256,
        files=files,
    )
    tmp = out / (MANIFEST_FILE + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, out / MANIFEST_FILE)
    return manifest

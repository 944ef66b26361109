"""The bank's loan book: who borrowed, on what terms, and who defaulted (the labels)."""

from __future__ import annotations

import math

import numpy as np

from xinrong.catalog import FieldType
from xinrong.tools.datagen.columns import Typed
from xinrong.tools.datagen.common import I64, sigmoid, stream
from xinrong.tools.datagen.config import GenerateConfig
from xinrong.tools.datagen.firms import Firms


def loan_book(cfg: GenerateConfig, f: Firms) -> tuple[I64, list[Typed]]:
    """A bank's loan book: which firms borrowed and whether they defaulted.

    Banks lend to live, older, bigger firms (a Gumbel top-k draw weighted that
    way). Default is driven by the latent health and distress the providers
    observe with noise, plus the bank's own weakly predictive columns.
    """
    rng = stream(cfg.seed, "bank")
    n = f.n
    k = cfg.borrowers
    weight = 0.5 * f.size + 0.3 * f.age_z - 2.0 * f.dormant - 1.5 * (f.age_days < 180)
    keys = weight + rng.gumbel(size=n)
    rows = np.sort(np.argpartition(-keys, k - 1)[:k]).astype(np.int64) if k < n else np.arange(n, dtype=np.int64)
    size = f.size[rows]
    loan = np.exp(math.log(1_500_000.0) + 0.7 * size + 0.4 * rng.standard_normal(k))
    loan = np.maximum(50_000.0, np.round(loan / 10_000.0) * 10_000.0)
    term = rng.choice(np.array([6, 12, 24, 36, 60], dtype=np.int64), size=k, p=[0.1, 0.4, 0.2, 0.2, 0.1])
    tenure = np.minimum(np.floor(f.age_years[rows]), rng.geometric(0.2, k) - 1).astype(np.int64)
    leverage = np.clip(np.log(loan / np.maximum(f.revenue[rows], 100_000.0)), -3.0, 3.0)
    logit = (
        -2.3
        - 1.15 * f.health[rows]
        + 1.1 * f.distress[rows]
        + 0.8 * f.dormant[rows]
        - 0.15 * size
        + 0.15 * leverage
        - 0.03 * tenure
        + 0.004 * (term - 24)
    )
    defaulted = (rng.random(k) < sigmoid(logit)).astype(np.int64)
    no_blank = np.zeros(k, dtype=np.bool_)
    cols = [
        Typed(FieldType.INT, defaulted, no_blank, places=0),
        Typed(FieldType.DECIMAL, loan, no_blank, places=0),
        Typed(FieldType.INT, term, no_blank, places=0),
        Typed(FieldType.INT, tenure, no_blank, places=0),
    ]
    return rows, cols

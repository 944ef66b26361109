"""The enterprise universe: latent size, health, age, industry and status, and valid USCCs."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from xinrong import uscc as uscc_mod
from xinrong.tools.datagen.common import EPOCH, F64, I64, U8, Bools, digits_fixed, epoch_day, sigmoid, stream
from xinrong.tools.datagen.config import GenerateConfig

# Organization codes issued after the October 2015 USCC reform start with "MA".
_REFORM_DAY = (dt.date(2015, 10, 1) - EPOCH).days
# Standard deviation of each provider's private noise on the health factor.
_VIEW_NOISE = 1.0

# GB/T 4754-2017 sections with a Hebei-like mix of registered enterprises and
# per-section multipliers: electricity, water, gas intensity, gas-connection
# propensity (logit shift), revenue per employee, headcount (log shift).
_INDUSTRY: tuple[tuple[str, float, float, float, float, float, float, float], ...] = (
    ("A", 4.0, 0.8, 3.0, 0.3, -0.5, 0.6, 0.0),
    ("B", 0.5, 4.0, 3.0, 1.0, 0.5, 1.2, 0.6),
    ("C", 17.0, 3.0, 2.0, 3.0, 1.2, 1.0, 0.5),
    ("D", 1.0, 5.0, 3.0, 2.0, 1.0, 1.5, 0.4),
    ("E", 8.0, 0.8, 1.5, 0.5, -0.3, 1.1, 0.4),
    ("F", 29.0, 0.6, 0.4, 0.3, -0.5, 1.6, -0.3),
    ("G", 4.0, 0.8, 0.6, 0.6, 0.0, 0.9, 0.2),
    ("H", 3.0, 1.5, 3.0, 4.0, 1.5, 0.5, 0.1),
    ("I", 5.0, 0.8, 0.3, 0.1, -1.0, 0.9, 0.0),
    ("J", 1.0, 0.6, 0.3, 0.1, -0.8, 2.0, 0.0),
    ("K", 3.0, 0.7, 0.6, 0.3, -0.3, 2.0, -0.2),
    ("L", 11.0, 0.4, 0.3, 0.1, -1.0, 1.0, -0.3),
    ("M", 7.0, 0.6, 0.4, 0.2, -0.8, 0.8, -0.2),
    ("N", 1.0, 1.0, 2.0, 0.3, -0.3, 0.7, 0.0),
    ("O", 2.0, 0.6, 1.5, 0.8, 0.0, 0.5, -0.4),
    ("P", 1.0, 0.6, 1.0, 0.5, 0.0, 0.4, 0.0),
    ("Q", 0.5, 1.0, 2.0, 1.0, 0.3, 0.7, 0.2),
    ("R", 1.5, 0.8, 1.0, 0.5, -0.2, 0.6, -0.2),
    ("S", 0.5, 0.6, 0.8, 0.5, 0.0, 0.5, 0.0),
)
IND_LETTERS = tuple(row[0] for row in _INDUSTRY)
_IND_P = np.array([row[1] for row in _INDUSTRY]) / sum(row[1] for row in _INDUSTRY)
IND_ELEC = np.array([row[2] for row in _INDUSTRY])
IND_WATER = np.array([row[3] for row in _INDUSTRY])
IND_GAS = np.array([row[4] for row in _INDUSTRY])
IND_GAS_PRESENCE = np.array([row[5] for row in _INDUSTRY])
_IND_REVENUE = np.array([row[6] for row in _INDUSTRY])
_IND_HEADCOUNT = np.array([row[7] for row in _INDUSTRY])

# Latent registration statuses, in the catalog's order.
STATUSES = ("in_business", "moved_out", "revoked", "cancelled")
# Hebei prefectures (1301 Shijiazhuang ... 1311 Hengshui), weighted by economic size.
_PREFECTURE_P = np.array([22, 15, 4, 10, 7, 13, 4, 3, 9, 9, 4], dtype=np.float64)
_COUNTY_PARTS = ("00", "02", "03", "04", "05", "06", "08", "09", "21", "81")
_COUNTY_P = np.array([40, 9, 8, 8, 7, 7, 6, 5, 5, 5], dtype=np.float64)


@dataclass(frozen=True)
class Firms:
    """Latent state of every enterprise; providers observe it with noise."""

    n: int
    seed: int
    as_of: dt.date
    size: F64
    health: F64
    distress: Bools
    age_days: I64
    age_z: F64
    industry: I64
    status: I64
    headcount: F64
    revenue: F64
    uscc: U8  # (n, 18) ASCII

    @property
    def age_years(self) -> F64:
        return np.asarray(self.age_days / 365.25, dtype=np.float64)

    @property
    def age_months(self) -> I64:
        return np.asarray(self.age_days // 30.4375, dtype=np.int64)

    @property
    def dormant(self) -> Bools:
        return np.asarray(self.status != 0)

    def health_seen(self, rng: np.random.Generator) -> F64:
        """Health as one provider's records reflect it: the true factor plus
        provider-specific noise, so no single provider sees all of it and
        joining providers genuinely adds information."""
        return np.asarray(self.health + _VIEW_NOISE * rng.standard_normal(self.n), dtype=np.float64)


def make_firms(cfg: GenerateConfig) -> Firms:
    rng = stream(cfg.seed, "firms")
    n = cfg.enterprises
    industry = rng.choice(len(_INDUSTRY), size=n, p=_IND_P).astype(np.int64)
    # A few per cent of established larger firms fatten the upper tail, so the
    # top published brackets (1,000+ staff, 100 M+ capital) are not empty.
    size = rng.standard_normal(n) + np.where(rng.random(n) < 0.03, 1.5, 0.0)
    age_years = rng.gamma(1.5, 4.5, n) * np.exp(0.25 * size)
    age_years = np.clip(age_years, 1.0 / 365.0, 40.0)
    age_days = np.floor(age_years * 365.25).astype(np.int64)
    age_z = (np.log1p(age_years) - 1.75) / 0.75
    health = 0.25 * size + 0.2 * age_z + math.sqrt(1.0 - 0.25**2 - 0.2**2) * rng.standard_normal(n)
    distress = rng.random(n) < sigmoid(-2.7 - 1.5 * health)
    dd = distress.astype(np.float64)
    p_revoked = sigmoid(-5.2 - 1.2 * health + 2.0 * dd)
    p_moved = sigmoid(-4.6 - 0.6 * health + 0.8 * dd)
    p_cancelled = sigmoid(-5.5 - 0.8 * health + 1.0 * dd)
    u = rng.random(n)
    status = np.zeros(n, dtype=np.int64)
    status[u < p_revoked + p_moved + p_cancelled] = 3
    status[u < p_revoked + p_moved] = 1
    status[u < p_revoked] = 2
    headcount = np.exp(2.2 + 1.35 * size + _IND_HEADCOUNT[industry] + 0.1 * health + 0.35 * rng.standard_normal(n))
    headcount = np.clip(headcount, 1.0, 20000.0)
    per_employee = np.exp(
        math.log(300_000.0) + np.log(_IND_REVENUE[industry]) + 0.25 * health - 0.5 * dd + 0.5 * rng.standard_normal(n)
    )
    revenue = headcount * per_employee * np.minimum(1.0, age_years)
    revenue = np.where(status != 0, revenue * rng.uniform(0.0, 0.1, n), revenue)
    uscc = _make_usccs(stream(cfg.seed, "uscc"), age_days, cfg.as_of, industry)
    return Firms(
        n=n,
        seed=cfg.seed,
        as_of=cfg.as_of,
        size=size,
        health=health,
        distress=distress,
        age_days=age_days,
        age_z=age_z,
        industry=industry,
        status=status,
        headcount=headcount,
        revenue=revenue,
        uscc=uscc,
    )


# ------------------------------------------------------------------ USCCs

_ORG_VALUE = np.zeros(128, dtype=np.int64)
for _c in "0123456789":
    _ORG_VALUE[ord(_c)] = int(_c)
for _c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _ORG_VALUE[ord(_c)] = ord(_c) - ord("A") + 10
_USCC_VALUE = np.full(128, -1, dtype=np.int64)
for _i, _c in enumerate(uscc_mod.CHARSET):
    _USCC_VALUE[ord(_c)] = _i
_CHARSET_BYTES = np.frombuffer(uscc_mod.CHARSET.encode("ascii"), dtype=np.uint8)
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)


def _make_usccs(rng: np.random.Generator, age_days: I64, as_of: dt.date, industry: I64) -> U8:
    """Unique, valid USCCs (GB 32100-2015), vectorized.

    Uniqueness comes from the organization-code body: legacy bodies are drawn
    without replacement from the 8-digit codes, post-reform ones from
    "MA" + 31^6, so no two firms share a body and hence a code.
    """
    n = age_days.shape[0]
    founded = epoch_day(as_of) - age_days
    legacy = founded < _REFORM_DAY
    n_legacy = int(legacy.sum())
    body = np.empty((n, 8), dtype=np.uint8)
    legacy_ids = rng.choice(90_000_000, size=n_legacy, replace=False).astype(np.int64) + 10_000_000
    body[legacy] = digits_fixed(legacy_ids, 8)
    new_ids = rng.choice(31**6, size=n - n_legacy, replace=False).astype(np.int64)
    new_body = np.empty((n - n_legacy, 8), dtype=np.uint8)
    new_body[:, 0] = ord("M")
    new_body[:, 1] = ord("A")
    powers = 31 ** np.arange(5, -1, -1, dtype=np.int64)
    new_body[:, 2:] = _CHARSET_BYTES[(new_ids[:, None] // powers[None, :]) % 31]
    body[~legacy] = new_body

    code = np.empty((n, 18), dtype=np.uint8)
    code[:, 0] = ord("9")
    # Entity type under authority 9: 1 enterprise, 2 individual business,
    # 3 farmers' cooperative (mostly in agriculture).
    coop = (industry == IND_LETTERS.index("A")) & (rng.random(n) < 0.4)
    individual = ~coop & (rng.random(n) < 0.01)
    code[:, 1] = np.where(coop, ord("3"), np.where(individual, ord("2"), ord("1")))
    prefecture = (
        np.asarray(rng.choice(len(_PREFECTURE_P), size=n, p=_PREFECTURE_P / _PREFECTURE_P.sum()), dtype=np.int64) + 1
    )
    county = rng.choice(len(_COUNTY_PARTS), size=n, p=_COUNTY_P / _COUNTY_P.sum())
    county_bytes = np.array([[ord(c) for c in part] for part in _COUNTY_PARTS], dtype=np.uint8)
    code[:, 2] = ord("1")
    code[:, 3] = ord("3")
    code[:, 4:6] = digits_fixed(prefecture, 2)
    code[:, 6:8] = county_bytes[county]
    code[:, 8:16] = body
    org_total = (_ORG_VALUE[body] * _ORG_WEIGHTS[None, :]).sum(axis=1)
    org_check = 11 - org_total % 11
    code[:, 16] = np.where(org_check == 10, ord("X"), np.where(org_check == 11, ord("0"), org_check + 48))
    values = _USCC_VALUE[code[:, :17]]
    total = (values * _USCC_WEIGHTS[None, :]).sum(axis=1)
    code[:, 17] = _CHARSET_BYTES[(31 - total % 31) % 31]
    return code

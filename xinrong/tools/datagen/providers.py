"""One model per provider: what its records say about each firm, and which firms it has."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from xinrong.tools.datagen.columns import Col, ProviderData, flag, graded, num
from xinrong.tools.datagen.common import F64, Bools, epoch_day, sigmoid
from xinrong.tools.datagen.firms import IND_ELEC, IND_GAS, IND_GAS_PRESENCE, IND_LETTERS, IND_WATER, STATUSES, Firms

# Division codes the generator registers firms in (see firms._make_usccs) and
# a few GB/T 4754-2017 classes per section: the catalog lists the same values.
REGION_CODES = tuple(
    f"13{p:02d}{c}" for p in range(1, 12) for c in ("00", "02", "03", "04", "05", "06", "08", "09", "21", "81")
)
INDUSTRY_CLASSES: dict[str, tuple[str, ...]] = {
    "A": ("A0111", "A0311"),
    "B": ("B0610", "B0810"),
    "C": ("C1311", "C2614", "C3110", "C3311", "C3670", "C3911"),
    "D": ("D4411", "D4430"),
    "E": ("E4710", "E4890"),
    "F": ("F5010", "F5110"),
    "G": ("G5211", "G5261"),
    "H": ("H6110", "H6210"),
    "I": ("I6410", "I6513"),
    "J": ("J6621", "J6940"),
    "K": ("K7010", "K7040"),
    "L": ("L7211", "L7251"),
    "M": ("M7320", "M7520"),
    "N": ("N7710", "N7820"),
    "O": ("O8010", "O8051"),
    "P": ("P8310", "P8336"),
    "Q": ("Q8411", "Q8421"),
    "R": ("R8610", "R8810"),
    "S": ("S9421", "S9521"),
}
ALL_CLASSES = tuple(c for letter in IND_LETTERS for c in INDUSTRY_CLASSES[letter])
CLASS_OFFSETS = {i: sum(len(INDUSTRY_CLASSES[x]) for x in IND_LETTERS[:i]) for i in range(len(IND_LETTERS))}


def _streak(
    rng: np.random.Generator, f: Firms, hazard_logit: F64, broken: Bools, day_lo: int, day_hi: int
) -> tuple[Col, Col]:
    """Consecutive normal months and the date of the last normal payment.

    A firm breaks its payment run with a monthly hazard set by its health; the
    run cannot be longer than the firm is old; a firm in arrears (or dormant)
    is on a broken run now (0 months) and its last normal payment lies one or
    more months back, or never happened if it is younger than that.
    """
    n = f.n
    age_m = f.age_months
    run = np.minimum(rng.geometric(sigmoid(hazard_logit)) - 1, age_m)
    run = np.where(broken, 0, run).astype(np.int64)
    gap = np.where(run > 0, 0, rng.geometric(0.3, n)).astype(np.int64)
    never = gap > age_m
    as_of_month = np.datetime64(f.as_of, "M")
    month_start = (as_of_month - gap.astype("timedelta64[M]")).astype("datetime64[D]")
    day = month_start + rng.integers(day_lo - 1, day_hi, n).astype("timedelta64[D]")
    days = np.minimum(day.astype(np.int64), epoch_day(f.as_of))
    return num(run), Col("date", days, missing=never)


def _market(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    d = f.distress.astype(np.float64)
    capital = np.exp(math.log(1_500_000.0) + 0.95 * f.size + 0.8 * rng.standard_normal(n))
    capital = np.maximum(10_000.0, np.round(capital / 10_000.0) * 10_000.0)
    abnormal = rng.random(n) < sigmoid(-3.8 - 1.0 * h + 1.4 * d + 1.5 * f.dormant)
    columns = {
        "status": Col("enum", f.status, names=STATUSES),
        "years_in_operation": num(np.floor(f.age_years)),
        "industry": Col("enum", f.industry, names=IND_LETTERS),
        "registered_capital": num(capital),
        "annual_revenue": num(f.revenue),
        "abnormal_operation": flag(abnormal),
    }
    # The public records come last: their draws follow every earlier one, so
    # the columns above keep their values for a seed.
    columns.update(_market_public(f, rng, h, d))
    return ProviderData(present=np.ones(n, dtype=np.bool_), columns=columns)


def _region_index(f: Firms) -> npt.NDArray[np.int64]:
    """The registration authority's division code is the USCC's characters 3-8."""
    codes = [bytes(row[2:8]).decode("ascii") for row in f.uscc]
    lut = {code: i for i, code in enumerate(REGION_CODES)}
    return np.array([lut[c] for c in codes], dtype=np.int64)


def _market_public(f: Firms, rng: np.random.Generator, h: F64, d: F64) -> dict[str, Col]:
    """Publicity-system records (licences, penalties, ratings, certifications, copyrights)."""
    n = f.n
    section = np.asarray(f.industry, dtype=np.int64)
    offsets = np.array([CLASS_OFFSETS[i] for i in range(len(IND_LETTERS))], dtype=np.int64)
    counts = np.array([len(INDUSTRY_CLASSES[letter]) for letter in IND_LETTERS], dtype=np.int64)
    klass = offsets[section] + np.floor(rng.random(n) * counts[section]).astype(np.int64)
    licences = rng.poisson(np.exp(-0.2 + 0.35 * f.size + 0.3 * (section == IND_LETTERS.index("C"))))
    penalties = rng.poisson(np.exp(-2.6 - 0.5 * h + 0.8 * d + 0.2 * f.size))
    env_score = 0.8 * h - 0.6 * d - 0.4 * penalties + 0.8 * rng.standard_normal(n)
    env = graded(env_score, (0.2, -1.0, -2.0, -2.8))  # green, blue, yellow, red, black
    tech = rng.random(n) < sigmoid(-3.2 + 0.6 * f.size + 0.4 * h + 1.2 * (section == IND_LETTERS.index("M")))
    tech_sme = rng.random(n) < sigmoid(-2.4 + 0.3 * h + 0.8 * tech)
    specialised = tech & (rng.random(n) < sigmoid(-1.0 + 0.5 * f.size))
    copyrights = np.where(
        rng.random(n) < sigmoid(-2.0 + 1.5 * tech + 1.5 * (section == IND_LETTERS.index("I"))),
        1 + rng.negative_binomial(1.0, 0.25, n),
        0,
    )
    return {
        "region_code": Col("enum", _region_index(f), names=REGION_CODES),
        "industry_class": Col("enum", klass, names=ALL_CLASSES),
        "founded_on": Col("date", epoch_day(f.as_of) - np.asarray(f.age_days, dtype=np.int64)),
        "admin_licences": num(licences.astype(np.float64)),
        "admin_penalties": num(penalties.astype(np.float64)),
        "env_credit_rating": Col("enum", env, names=("green", "blue", "yellow", "red", "black")),
        "high_tech_enterprise": flag(tech),
        "tech_sme": flag(tech_sme),
        "specialized_sme": flag(specialised),
        "software_copyrights": num(copyrights.astype(np.float64)),
    }


def _judicial(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    d = f.distress.astype(np.float64)
    h = f.health_seen(rng)
    rate = np.exp(-3.2 - 1.1 * h + 1.4 * d + 0.3 * f.size + 0.8 * f.dormant)
    cases = rng.poisson(rate * rng.gamma(0.5, 2.0, n))
    dishonest = ((cases > 0) & (rng.random(n) < sigmoid(-1.2 + 0.5 * cases - 0.5 * h))) | (rng.random(n) < 0.003)
    return ProviderData(
        present=np.ones(n, dtype=np.bool_),
        columns={"dishonest_debtor": flag(dishonest), "enforcement_cases": num(cases.astype(np.float64))},
    )


def _tax(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    d = f.distress.astype(np.float64)
    present = rng.random(n) >= np.where(f.age_days < 90, 0.3, 0.015)
    abnormal = rng.random(n) < sigmoid(-4.4 - 1.0 * h + 1.6 * d + 1.0 * f.dormant)
    arrears = (
        (f.distress & (rng.random(n) < 0.55))
        | (rng.random(n) < sigmoid(-4.3 - 0.8 * h))
        | (abnormal & (rng.random(n) < 0.3))
    )
    base = np.maximum(f.revenue, 50_000.0 * f.headcount)
    amount = np.where(arrears, np.maximum(200.0, base * 0.015 * np.exp(rng.standard_normal(n))), 0.0)
    small_scale_exempt = (f.revenue < 1_200_000.0) & (rng.random(n) < 0.8)
    vat = np.where(small_scale_exempt, 0.0, f.revenue * 0.022 * np.exp(0.35 * rng.standard_normal(n)))
    margin = 0.05 + 0.05 * h - 0.05 * d + 0.06 * rng.standard_normal(n)
    profit = np.maximum(0.0, f.revenue * margin)
    # Small low-profit enterprises: 5 % effective up to 3 M profit, 25 % above.
    cit = 0.05 * np.minimum(profit, 3_000_000.0) + 0.25 * np.maximum(profit - 3_000_000.0, 0.0)
    score = h - 0.7 * d + 0.9 * rng.standard_normal(n)
    grade = graded(score, (1.45, -1.2, -2.9))  # A, B, C, D before M is inserted
    grade = np.where(grade >= 2, grade + 1, grade)  # catalog order A, B, M, C, D
    grade = np.where(abnormal, np.where(rng.random(n) < 0.5, 4, 3), grade)
    new_firm = (f.age_days < 365) & (rng.random(n) < 0.8)
    grade = np.where(new_firm | (rng.random(n) < 0.03), 2, grade)
    months, last = _streak(rng, f, -4.4 - 1.1 * h + 1.4 * d, arrears | f.dormant, 1, 15)
    return ProviderData(
        present=present,
        columns={
            "credit_grade": Col("enum", grade, names=("A", "B", "M", "C", "D")),
            "abnormal_taxpayer": flag(abnormal),
            "in_arrears": flag(arrears),
            "arrears_amount": num(amount),
            "vat_paid_last_year": num(vat),
            "cit_paid_last_year": num(cit),
            "consecutive_normal_months": months,
            "last_normal_payment_date": last,
            # The published grade-A list (drawn nothing: the last grade decides).
            "grade_a_taxpayer": flag(grade == 0),
        },
    )


def _housing_fund(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    d = f.distress.astype(np.float64)
    present = rng.random(n) < sigmoid(1.0 + 0.9 * f.size + 0.5 * h)
    share = np.clip(0.55 + 0.15 * h - 0.15 * d + 0.15 * rng.standard_normal(n), 0.05, 1.0)
    contributors = np.round(f.headcount * share)
    contributors = np.where(f.dormant, np.floor(contributors * rng.uniform(0.0, 0.3, n)), contributors)
    wage = np.maximum(2_200.0, np.exp(math.log(4_500.0) + 0.2 * h + 0.2 * rng.standard_normal(n)))
    rate = rng.uniform(0.05, 0.12, n) * 2.0  # employer + employee share
    total = contributors * wage * rate * 12.0 * np.clip(1.0 - 0.3 * d, 0.0, 1.0)
    broken = f.dormant | (f.distress & (rng.random(n) < 0.5))
    months, last = _streak(rng, f, -4.3 - 1.0 * h + 1.8 * d, broken, 1, 25)
    return ProviderData(
        present=present,
        columns={
            "avg_contributors": num(contributors),
            "total_contribution_last_year": num(total),
            "consecutive_normal_months": months,
            "last_normal_date": last,
        },
    )


def _social_insurance(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    d = f.distress.astype(np.float64)
    present = rng.random(n) < sigmoid(2.2 + 1.0 * f.size + 0.4 * h)
    share = np.clip(0.75 + 0.12 * h - 0.1 * d + 0.1 * rng.standard_normal(n), 0.1, 1.0)
    insured = np.round(f.headcount * share)
    insured = np.where(f.dormant, np.floor(insured * rng.uniform(0.0, 0.3, n)), insured)
    base = np.clip(np.exp(math.log(4_200.0) + 0.15 * h + 0.15 * rng.standard_normal(n)), 3_600.0, 20_000.0)
    contribution = insured * base * 0.16
    arrears = (
        (f.distress & (rng.random(n) < 0.55))
        | (rng.random(n) < sigmoid(-4.5 - 0.8 * h))
        | (f.dormant & (rng.random(n) < 0.5))
    )
    months, last = _streak(rng, f, -4.5 - 1.0 * h + 1.8 * d, arrears | f.dormant, 1, 1)
    return ProviderData(
        present=present,
        columns={
            "avg_insured_headcount": num(insured),
            "avg_employer_contribution": num(contribution),
            "consecutive_months": months,
            "last_normal_month": last,
            "in_arrears": flag(arrears),
        },
    )


def _real_estate(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    present = rng.random(n) < sigmoid(-0.75 + 0.9 * f.size + 0.5 * f.age_z + 0.2 * h)
    count = 1 + rng.negative_binomial(1.2, sigmoid(1.3 - 0.6 * f.size))
    count = np.where(rng.random(n) < 0.08, 0, count).astype(np.float64)  # all properties sold
    per_property = np.exp(math.log(250.0) + 0.5 * f.size + 0.4 * np.log(IND_ELEC[f.industry]) + rng.standard_normal(n))
    area = count * per_property
    mortgaged = (count > 0) & (rng.random(n) < sigmoid(-0.9 - 0.5 * h + 0.6 * f.distress + 0.2 * count))
    return ProviderData(
        present=present,
        columns={"property_count": num(count), "total_area": num(area), "mortgaged": flag(mortgaged)},
    )


def _activity_decline(f: Firms, rng: np.random.Generator) -> F64:
    """Log change of recent activity: distressed and dormant firms are winding down."""
    return np.asarray(
        -0.35 * f.distress - 1.5 * f.dormant + 0.08 * f.health + 0.12 * rng.standard_normal(f.n),
        dtype=np.float64,
    )


def _water(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    present = rng.random(n) < sigmoid(1.9 + 0.5 * f.size)
    use6 = f.headcount * 3.0 * IND_WATER[f.industry] * np.exp(0.5 * rng.standard_normal(n))
    use3 = use6 * np.exp(_activity_decline(f, rng) + 0.05)  # summer quarter
    arrears = (f.distress & (rng.random(n) < 0.35)) | (rng.random(n) < sigmoid(-4.5 - 0.5 * f.health_seen(rng)))
    return ProviderData(
        present=present,
        columns={"avg_use_3m": num(use3), "avg_use_6m": num(use6), "in_arrears": flag(arrears)},
    )


def _electricity(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    h = f.health_seen(rng)
    present = rng.random(n) < sigmoid(3.0 + 0.5 * f.size)
    spend12 = f.headcount * 250.0 * IND_ELEC[f.industry] * np.exp(0.5 * rng.standard_normal(n))
    decline = _activity_decline(f, rng)
    spend6 = spend12 * np.exp(0.5 * decline + 0.05 * rng.standard_normal(n))
    spend3 = spend12 * np.exp(decline + 0.08 + 0.05 * rng.standard_normal(n))  # summer peak
    arrears = (f.distress & (rng.random(n) < 0.4)) | (rng.random(n) < sigmoid(-4.5 - 0.6 * h))
    value = np.log(spend12) + 0.3 * h + 0.4 * rng.standard_normal(n)
    value_grade = graded(value, (math.log(60_000.0), math.log(15_000.0), math.log(4_000.0), math.log(1_000.0)))
    value_grade = np.minimum(4, value_grade + arrears)
    risk = -0.8 * h + 1.0 * f.distress + 1.0 * arrears + 0.9 * rng.standard_normal(n)
    risk_grade = graded(-risk, (-0.8, -2.0))
    return ProviderData(
        present=present,
        columns={
            "avg_spend_3m": num(spend3),
            "avg_spend_6m": num(spend6),
            "avg_spend_12m": num(spend12),
            "value_grade": Col("enum", value_grade, names=("A", "B", "C", "D", "E")),
            "risk_grade": Col("enum", risk_grade, names=("low", "medium", "high")),
            "in_arrears": flag(arrears),
        },
    )


def _gas(f: Firms, rng: np.random.Generator) -> ProviderData:
    n = f.n
    present = rng.random(n) < sigmoid(0.2 + 0.5 * f.size + IND_GAS_PRESENCE[f.industry])
    use6 = f.headcount * 4.0 * IND_GAS[f.industry] * np.exp(0.6 * rng.standard_normal(n))
    use3 = use6 * np.exp(_activity_decline(f, rng) - 0.15)  # less heating in summer
    arrears = (f.distress & (rng.random(n) < 0.3)) | (rng.random(n) < sigmoid(-4.7 - 0.5 * f.health_seen(rng)))
    return ProviderData(
        present=present,
        columns={"avg_use_3m": num(use3), "avg_use_6m": num(use6), "in_arrears": flag(arrears)},
    )


PROVIDER_MODELS: dict[str, Callable[[Firms, np.random.Generator], ProviderData]] = {
    "market": _market,
    "judicial": _judicial,
    "tax": _tax,
    "housing_fund": _housing_fund,
    "social_insurance": _social_insurance,
    "real_estate": _real_estate,
    "water": _water,
    "electricity": _electricity,
    "gas": _gas,
}

"""Synthetic provider CSVs and a bank loan book.

Why synthetic: the providers' real data may never leave them, yet the demo,
the tests and the joint-modeling benchmarks need data whose *shape* is real:
one file per provider keyed by USCC, firms missing at some providers, blank
cells, values spread over the catalog's published bracket edges, and a loan
outcome that the providers' features genuinely predict (plain logistic
regression on the joined data reaches a test AUC of roughly 0.75-0.8).

The column list is never written down here: every provider file has the header
``uscc,as_of,<the provider's catalog columns in catalog order>``, taken from
:mod:`xinrong.catalog`. The generator knows the *meaning* of the fields it was
written for (below); a field added to the catalog later still gets plausible
values from a generic generator driven by its type, edges and enum values, so
adding a field stays "one catalog entry plus data".

The model
---------
Every enterprise has two latent factors, *size* and *health* (standard normal,
corr. about 0.3 with size and age), an age (gamma-distributed years since
founding), an industry (GB/T 4754 section, Hebei-like mix) and a *distress*
flag (about 12 %, far likelier for unhealthy firms). From these:

* market: status (a few per cent revoked / moved out / cancelled, mostly
  unhealthy firms), whole years in operation, registered capital and revenue
  (size-driven), abnormal-operation list (health/distress);
* judicial: enforcement cases (negative binomial, health/distress) and the
  dishonest-debtor list (mostly firms with cases);
* tax: credit grade (health; M for firms under a year old), abnormal taxpayer,
  arrears flag and amount, VAT (small-scale exemption below 1.2 M revenue) and
  CIT (profit margin driven by health), consecutive normal months (a monthly
  break hazard from health, capped at the firm's age; 0 when in arrears) and
  the last normal payment date;
* housing fund and social insurance: contributors / insured headcount as a
  health-dependent share of headcount, contributions from a wage base, payment
  streaks and dates, social-insurance arrears;
* real estate: property count, floor area, mortgage flag;
* water, electricity, gas: use scaled by headcount and industry intensity,
  with a recent decline for distressed firms (so 3-month vs 6/12-month
  averages carry signal), arrears flags, electricity value and risk grades;
* the bank: a size/age-biased sample of live firms (default 40 %) with loan
  amount, term and years with the bank; default probability is a logistic
  function of health, distress, status, size and the bank's own columns
  (default rate about 11 %).

Coverage (share of all enterprises present in a provider's file; presence
also depends on size, health and industry, so the figures are approximate):
market 100 %, judicial 100 % (the court's system answers for every registered
firm), tax ~98 %, social insurance ~88 %, electricity ~95 %, water ~85 %,
housing fund ~68 %, gas ~50 %, real estate ~40 %. Within a file, each
non-key cell is blank with probability 0.5 % (market), 1 % (judicial) or 2 %
(everything else).

USCCs are valid GB 32100-2015 codes: registration authority 9 (market
regulation), entity type 1 (enterprise; a few 2 and 3), a Hebei division code
(13 + prefecture 01-11 + a plausible county part; not a full division
register), and an organization-code body that is legacy 8 digits for firms
founded before the October 2015 reform and ``MA`` + 6 characters after it.

Speed: everything is vectorized numpy; the CSV writer lays each chunk of rows
out as a fixed-width byte matrix with NUL padding and strips the NULs, so
1,000,000 enterprises take well under a minute. Output is deterministic for a
seed: each provider draws from its own stream derived from (seed, provider
name), so the files do not depend on generation order.
"""

from xinrong.tools.datagen.config import (
    BANK_COLUMNS,
    BANK_FILE,
    BANK_OWNER,
    DEFAULT_AS_OF,
    DEFAULT_BORROWER_SHARE,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MANIFEST_FILE,
    MAX_ENTERPRISES,
    MIN_ENTERPRISES,
    FileInfo,
    GenerateConfig,
    Manifest,
)
from xinrong.tools.datagen.generator import generate

__all__ = [
    "BANK_COLUMNS",
    "BANK_FILE",
    "BANK_OWNER",
    "DEFAULT_AS_OF",
    "DEFAULT_BORROWER_SHARE",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "MANIFEST_FILE",
    "MAX_ENTERPRISES",
    "MIN_ENTERPRISES",
    "FileInfo",
    "GenerateConfig",
    "Manifest",
    "generate",
]

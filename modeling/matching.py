"""Loan products and their eligibility match: what every party agrees on.

One module for node, agents, bank and enterprise, so the rules of a product
(a conjunction of catalog claims checked by ``xinrong.claims``), the signing
contexts and the arithmetic of the match cannot drift between them.

The match (docs/THREAT_MODEL.md, product matching). For enterprise E and
product P of bank B, each provider i with rules in P evaluates its rules on
its own data (no data fails a rule) and sends

    c_i = Enc_B(r_i * f_i mod n)      f_i = number of its rules that failed,
                                       r_i uniform in [1, n), fresh

signed with its provider key. The product of the c_i mod n^2 decrypts to
sum_i r_i f_i mod n: 0 when every rule holds; otherwise, because some term
r_i f_i is uniform on the non-zero residues (f_i < p, q so it is a unit) and
independent of the rest, a uniform non-zero value: neither how many rules
failed nor at which provider. (A false "eligible" needs the sum to hit 0 by
chance: probability about 1/n.) Ciphertexts are obfuscated with a fresh
DJN obfuscator (below), so the node, which holds only ciphertexts, sees
uniform-looking values of one fixed width.

Raw Paillier on integers (phe keys, gmpy2 arithmetic): the fixed-point
vectors of ``xinrong.modeling.he.paillier`` cap values at 2^12, and this
scheme needs plaintexts uniform mod n.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gmpy2
from phe import paillier as phe_paillier

from xinrong.catalog import Catalog
from xinrong.claims import CheckedClaim, check_claim, claim_text
from xinrong.errors import ClaimError, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.files import read_private_file, write_private_file
from xinrong.keys.signing import SigningKey
from xinrong.modeling.he.paillier_math import FixedBaseTable, djn_base
from xinrong.v1 import common_pb2, products_pb2

PRODUCT_CONTEXT = "xinrong.v1.LoanProduct"
CONTRIBUTION_CONTEXT = "xinrong.v1.MatchContribution"
FEEDBACK_CONTEXT = "xinrong.v1.MatchFeedback"
APPLICATION_CONTEXT = "xinrong.v1.ProductApplication"
FEEDBACK_CONTENT_TYPE = "xinrong.v1.SignedMatchFeedback"

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 1024  # tests use 1024; a node may ask for more (ProductRules.min_key_bits)
MAX_KEY_BITS = 4096
MAX_RULES = 32
MAX_REGIONS = 64
MAX_NAME_CHARS = 128
# The feedback box of one provider is padded to this per rule plus a base, a
# length fixed by the (public) product, never by which rules failed.
FEEDBACK_PAD_BASE = 512
FEEDBACK_PAD_PER_RULE = 256

_PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REGION = re.compile(r"[A-Za-z0-9_-]{1,16}")

CATEGORIES: dict[str, int] = {
    name.removeprefix("PRODUCT_CATEGORY_").lower(): value
    for name, value in products_pb2.ProductCategory.items()
    if value != products_pb2.PRODUCT_CATEGORY_UNSPECIFIED
}
CATEGORY_NAMES: dict[int, str] = {v: k for k, v in CATEGORIES.items()}


def is_product_id(value: str) -> bool:
    return _PRODUCT_ID.fullmatch(value) is not None


def _invalid(text: str) -> ValidationError:
    return ValidationError(text, public=text)


# -- products ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedProduct:
    """A product whose signature, fields and every rule passed: the rules in canonical form."""

    product: products_pb2.LoanProduct
    signed: products_pb2.SignedLoanProduct
    sha256: str
    rules: tuple[CheckedClaim, ...]

    @property
    def product_id(self) -> str:
        return self.product.product_id

    @property
    def bank_id(self) -> str:
        return self.product.bank_id

    @property
    def n(self) -> int:
        return int.from_bytes(self.product.paillier_n, "big")

    def rules_of(self, provider: str) -> tuple[CheckedClaim, ...]:
        return tuple(r for r in self.rules if r.spec.provider == provider)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({r.spec.provider for r in self.rules}))

    def feedback_pad(self, provider: str) -> int:
        return FEEDBACK_PAD_BASE + FEEDBACK_PAD_PER_RULE * len(self.rules_of(provider))


def product_sha256(signed: products_pb2.SignedLoanProduct) -> str:
    return hashlib.sha256(signed.product).hexdigest()


def check_product_fields(
    catalog: Catalog, product: products_pb2.LoanProduct, *, min_key_bits: int
) -> list[CheckedClaim]:
    """Every field within bounds and every rule a published claim in canonical form.

    Depends only on the product (public): the precise reasons are no oracle.
    """
    if not is_product_id(product.product_id):
        raise _invalid("product id: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    if not product.name.strip() or len(product.name) > MAX_NAME_CHARS or not product.name.isprintable():
        raise _invalid(f"product name: 1-{MAX_NAME_CHARS} printable characters")
    if product.category not in CATEGORY_NAMES:
        raise _invalid(f"product category: one of {sorted(CATEGORIES)}")
    if not 0 < product.amount_min <= product.amount_max:
        raise _invalid("amount range: 0 < amount_min <= amount_max")
    if not 0 < product.term_months_min <= product.term_months_max <= 600:
        raise _invalid("term range: 0 < term_months_min <= term_months_max <= 600")
    if not 0 < product.rate_min_bps <= product.rate_max_bps <= 10_000:
        raise _invalid("rate range: 0 < rate_min_bps <= rate_max_bps <= 10000")
    if len(product.regions) > MAX_REGIONS or not all(_REGION.fullmatch(r) for r in product.regions):
        raise _invalid(f"regions: at most {MAX_REGIONS} codes of 1-16 of A-Z a-z 0-9 _ -")
    if not 1 <= len(product.rules) <= MAX_RULES:
        raise _invalid(f"a product has 1 to {MAX_RULES} eligibility rules")
    n = int.from_bytes(product.paillier_n, "big")
    bits = n.bit_length()
    if not min_key_bits <= bits <= MAX_KEY_BITS or n % 2 == 0 or len(product.paillier_n) != (bits + 7) // 8:
        raise _invalid(f"paillier_n: an odd modulus of {min_key_bits}-{MAX_KEY_BITS} bits, minimal big-endian")
    checked: list[CheckedClaim] = []
    seen: set[str] = set()
    for rule in product.rules:
        c = check_claim(catalog, rule)
        if c.claim.SerializeToString(deterministic=True) != rule.SerializeToString(deterministic=True):
            raise ClaimError(f"rule {claim_text(rule)!r} is not in canonical form ({c.text!r})")
        if c.text in seen:
            raise _invalid(f"rule {c.text!r} appears twice")
        seen.add(c.text)
        checked.append(c)
    return checked


def verify_product(
    ca: CaVerifier,
    catalog: Catalog,
    signed: products_pb2.SignedLoanProduct,
    bank_binding: common_pb2.SignedPartyBinding | VerifiedBinding,
    *,
    min_key_bits: int = MIN_KEY_BITS,
) -> CheckedProduct:
    """The bank's signature (against its CA-signed binding), then ``check_product_fields``."""
    if isinstance(bank_binding, VerifiedBinding):
        bank = bank_binding
    else:
        try:
            bank = verify_binding(ca, bank_binding, expect_role="institution")
        except SignatureError:
            raise SignatureError("the bank's binding does not verify") from None
    product = products_pb2.LoanProduct()
    try:
        bank.verify_key.verify(PRODUCT_CONTEXT, signed.product, signed.signature)
        product.ParseFromString(signed.product)
    except SignatureError:
        raise SignatureError("product not signed by the bank's key") from None
    except Exception:
        raise _invalid("product does not parse") from None
    if product.bank_id != bank.party_id:
        raise SignatureError("product names another bank")
    rules = check_product_fields(catalog, product, min_key_bits=min_key_bits)
    return CheckedProduct(product=product, signed=signed, sha256=product_sha256(signed), rules=tuple(rules))


def sign_product(product: products_pb2.LoanProduct, key: SigningKey) -> products_pb2.SignedLoanProduct:
    raw = product.SerializeToString(deterministic=True)
    return products_pb2.SignedLoanProduct(product=raw, signature=key.sign(PRODUCT_CONTEXT, raw))


def build_product(
    catalog: Catalog,
    *,
    product_id: str,
    bank_id: str,
    name: str,
    category: str,
    amount: tuple[int, int],
    term_months: tuple[int, int],
    rate_bps: tuple[int, int],
    regions: Sequence[str],
    rules: Sequence[common_pb2.Claim],
    paillier_n: int,
    published_at: int,
) -> products_pb2.LoanProduct:
    """A product with canonical rules (each checked); raises on any rule the catalog refuses."""
    if category not in CATEGORIES:
        raise _invalid(f"category: one of {sorted(CATEGORIES)}")
    canonical = [check_claim(catalog, r).claim for r in rules]
    product = products_pb2.LoanProduct(
        product_id=product_id,
        bank_id=bank_id,
        name=name,
        category=CATEGORIES[category],  # type: ignore[arg-type]
        amount_min=amount[0],
        amount_max=amount[1],
        term_months_min=term_months[0],
        term_months_max=term_months[1],
        rate_min_bps=rate_bps[0],
        rate_max_bps=rate_bps[1],
        regions=list(regions),
        rules=canonical,
        paillier_n=paillier_n.to_bytes((paillier_n.bit_length() + 7) // 8, "big"),
        published_at=published_at,
        catalog_sha256=catalog.sha256,
    )
    check_product_fields(catalog, product, min_key_bits=MIN_KEY_BITS)
    return product


def product_summary(checked: CheckedProduct) -> dict[str, object]:
    p = checked.product
    return {
        "product_id": p.product_id,
        "bank_id": p.bank_id,
        "name": p.name,
        "category": CATEGORY_NAMES.get(p.category, ""),
        "amount": [p.amount_min, p.amount_max],
        "term_months": [p.term_months_min, p.term_months_max],
        "rate_bps": [p.rate_min_bps, p.rate_max_bps],
        "regions": list(p.regions),
        "rules": [r.text for r in checked.rules],
        "key_bits": checked.n.bit_length(),
        "published_at": p.published_at,
    }


def listing_summaries(
    ca: CaVerifier, catalog: Catalog, listings: Iterable[products_pb2.ProductListing]
) -> list[dict[str, object]]:
    """Listed products whose bank signature verifies (others are dropped: the node cannot forge one)."""
    out: list[dict[str, object]] = []
    for listing in listings:
        try:
            checked = verify_product(ca, catalog, listing.product, listing.bank_binding)
        except XinrongError:
            continue
        doc = product_summary(checked)
        doc["withdrawn"] = listing.withdrawn
        out.append(doc)
    return out


# -- Paillier on integers --------------------------------------------------------


def ciphertext_width(n: int) -> int:
    return 2 * ((n.bit_length() + 7) // 8)


# Obfuscators are DJN's h_s^alpha (xinrong.modeling.he.paillier: the same
# construction and assumption as the modeling backend's default), from a
# fixed-base table per bank key that this process draws its own h_s for:
# ~170 multiplications instead of the ~3,000 of r^n (about 40x faster at 2048 bits).
_TABLE_WINDOW = 6
_MAX_TABLES = 8
_tables: OrderedDict[int, FixedBaseTable] = OrderedDict()
_tables_lock = threading.Lock()


def _obfuscator(n: int) -> int:
    nsquare = n * n
    with _tables_lock:
        table = _tables.get(n)
        if table is not None:
            _tables.move_to_end(n)
    if table is None:
        table = FixedBaseTable(djn_base(n, nsquare), nsquare, (n.bit_length() + 1) // 2, _TABLE_WINDOW)
        with _tables_lock:
            _tables[n] = table
            while len(_tables) > _MAX_TABLES:
                _tables.popitem(last=False)
    return int(table.pow(secrets.randbits(table.exponent_bits)))


def encrypt_int(n: int, m: int) -> bytes:
    """Enc(m) = (1 + m n) rho mod n^2 with a fresh obfuscator rho, at the fixed width of n."""
    nsquare = n * n
    c = ((1 + (m % n) * n) * _obfuscator(n)) % nsquare
    return c.to_bytes(ciphertext_width(n), "big")


def encrypt_failed(n: int, failed: int) -> bytes:
    """The agent's part: Enc(r * failed) with r uniform in [1, n); Enc(0) (fresh) when nothing failed."""
    if failed < 0 or failed > MAX_RULES:
        raise ValueError("failed-rule count out of range")
    scale = secrets.randbelow(n - 1) + 1
    return encrypt_int(n, scale * failed)


def add_ciphertexts(n: int, ciphertexts: Iterable[bytes]) -> bytes:
    """The homomorphic sum (product mod n^2); needs no key and reveals nothing."""
    nsquare = n * n
    width = ciphertext_width(n)
    total = gmpy2.mpz(1)
    count = 0
    for c in ciphertexts:
        if len(c) != width:
            raise _invalid("a ciphertext has the wrong width")
        value = int.from_bytes(c, "big")
        if not 0 < value < nsquare:
            raise _invalid("a ciphertext is out of range")
        total = (total * value) % nsquare
        count += 1
    if count == 0:
        raise _invalid("no ciphertext to add")
    return int(total).to_bytes(width, "big")


@dataclass(frozen=True)
class MatchingKey:
    """The bank's Paillier key pair for eligibility: n is published with every product."""

    n: int
    p: int
    q: int

    @classmethod
    def generate(cls, bits: int = DEFAULT_KEY_BITS) -> MatchingKey:
        if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
            raise ValueError(f"matching keys have {MIN_KEY_BITS}-{MAX_KEY_BITS} bits")
        while True:
            public, private = phe_paillier.generate_paillier_keypair(n_length=bits)
            if int(public.n).bit_length() == bits:
                return cls(int(public.n), int(private.p), int(private.q))

    def decrypt(self, ciphertext: bytes) -> int:
        public = phe_paillier.PaillierPublicKey(self.n)
        private = phe_paillier.PaillierPrivateKey(public, self.p, self.q)
        value = int.from_bytes(ciphertext, "big")
        if len(ciphertext) != ciphertext_width(self.n) or not 0 < value < self.n * self.n:
            raise _invalid("ciphertext is not one of this key")
        return int(private.raw_decrypt(value))

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        write_private_file(path, json.dumps({"p": str(self.p), "q": str(self.q)}).encode(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MatchingKey:
        doc = json.loads(read_private_file(path))
        p, q = int(doc["p"]), int(doc["q"])
        return cls(p * q, p, q)

    def __repr__(self) -> str:
        return f"MatchingKey(bits={self.n.bit_length()})"


def load_or_create_key(path: Path, bits: int = DEFAULT_KEY_BITS) -> MatchingKey:
    if path.exists():
        return MatchingKey.load(path)
    key = MatchingKey.generate(bits)
    key.save(path)
    return key


# -- contributions, feedback, applications -------------------------------------


def parse_contribution(signed: products_pb2.SignedMatchContribution) -> products_pb2.MatchContribution:
    c = products_pb2.MatchContribution()
    try:
        c.ParseFromString(signed.contribution)
    except Exception:
        raise _invalid("contribution does not parse") from None
    return c


@dataclass(frozen=True)
class Eligibility:
    """What the bank reads from an attestation, offline."""

    eligible: bool
    providers: tuple[str, ...]
    data_as_of: dict[str, str]
    match_id: str


def verify_attestation(
    ca: CaVerifier,
    product: CheckedProduct,
    key: MatchingKey,
    *,
    enterprise: str,
    match_id: str,
    attestation: products_pb2.EligibilityAttestation,
) -> Eligibility:
    """Check every contribution offline, re-add them and decrypt: 0 <=> eligible.

    Each provider with a rule in the product must have signed exactly one
    contribution for this enterprise, this product (by hash) and this run,
    under its CA-bound key; the bank does not rely on the node's sum.
    """
    if key.n != product.n:
        raise SignatureError("the product was not published under this key")
    providers: dict[str, VerifiedBinding] = {}
    for signed in attestation.provider_bindings:
        try:
            b = verify_binding(ca, signed, expect_role="provider")
        except SignatureError:
            continue
        providers[b.provider] = b
    wanted = set(product.providers)
    seen: dict[str, products_pb2.MatchContribution] = {}
    for signed_c in attestation.contributions:
        c = parse_contribution(signed_c)
        binding = providers.get(c.provider)
        if binding is None:
            raise SignatureError(f"no CA-verified binding for provider {c.provider!r}")
        binding.verify_key.verify(CONTRIBUTION_CONTEXT, signed_c.contribution, signed_c.signature)
        if (
            c.enterprise_uscc != enterprise
            or c.product_id != product.product_id
            or c.product_sha256 != product.sha256
            or c.match_id != match_id
            or c.provider_key_id != binding.key_id
        ):
            raise SignatureError(f"the contribution of {c.provider} is for another enterprise, product or run")
        if c.provider in seen:
            raise SignatureError(f"two contributions of {c.provider}")
        seen[c.provider] = c
    if set(seen) != wanted:
        raise SignatureError(f"contributions from {sorted(seen)}, the product's rules are at {sorted(wanted)}")
    total = add_ciphertexts(key.n, (bytes(seen[p].ciphertext) for p in sorted(seen)))
    return Eligibility(
        eligible=key.decrypt(total) == 0,
        providers=tuple(sorted(seen)),
        data_as_of={p: c.data_as_of for p, c in sorted(seen.items())},
        match_id=match_id,
    )


def sign_application(
    application: products_pb2.ProductApplication, key: SigningKey
) -> products_pb2.SignedProductApplication:
    raw = application.SerializeToString(deterministic=True)
    return products_pb2.SignedProductApplication(application=raw, signature=key.sign(APPLICATION_CONTEXT, raw))


def verify_application(
    ca: CaVerifier,
    signed: products_pb2.SignedProductApplication,
    enterprise_binding: common_pb2.SignedPartyBinding,
    *,
    expect_enterprise: str | None = None,
) -> products_pb2.ProductApplication:
    """The enterprise's own signature over its application (one opaque error on failure)."""
    denied = XinrongError("application not signed by the enterprise", reason=Reason.ACCESS_DENIED)
    try:
        binding = verify_binding(ca, enterprise_binding, expect_role="enterprise", expect_party_id=expect_enterprise)
        binding.verify_key.verify(APPLICATION_CONTEXT, signed.application, signed.signature)
        application = products_pb2.ProductApplication()
        application.ParseFromString(signed.application)
    except Exception:
        raise denied from None
    if application.enterprise_uscc != binding.party_id:
        raise denied
    return application


def open_feedback(
    ca: CaVerifier, signed: products_pb2.SignedMatchFeedback, bindings: dict[str, VerifiedBinding]
) -> products_pb2.MatchFeedback:
    feedback = products_pb2.MatchFeedback()
    try:
        feedback.ParseFromString(signed.feedback)
    except Exception:
        raise SignatureError("feedback does not parse") from None
    binding = bindings.get(feedback.provider)
    if binding is None:
        raise SignatureError(f"no binding for provider {feedback.provider!r}")
    binding.verify_key.verify(FEEDBACK_CONTEXT, signed.feedback, signed.signature)
    return feedback


__all__ = [
    "APPLICATION_CONTEXT",
    "CATEGORIES",
    "CATEGORY_NAMES",
    "CONTRIBUTION_CONTEXT",
    "FEEDBACK_CONTENT_TYPE",
    "FEEDBACK_CONTEXT",
    "PRODUCT_CONTEXT",
    "CheckedProduct",
    "Eligibility",
    "MatchingKey",
    "add_ciphertexts",
    "build_product",
    "check_product_fields",
    "encrypt_failed",
    "encrypt_int",
    "is_product_id",
    "listing_summaries",
    "load_or_create_key",
    "open_feedback",
    "product_sha256",
    "product_summary",
    "sign_application",
    "sign_product",
    "verify_application",
    "verify_attestation",
    "verify_product",
]

"""One Paillier matching key for the loan-product tests: keygen is the slow part, so it is made once."""

from __future__ import annotations

from functools import lru_cache

from xinrong.modeling import matching as mt

KEY_BITS = 1024


@lru_cache(maxsize=1)
def bank_key() -> mt.MatchingKey:
    """The bank's matching key, shared by every module in the test session."""
    return mt.MatchingKey.generate(KEY_BITS)

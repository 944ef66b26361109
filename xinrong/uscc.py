"""Unified social credit codes (统一社会信用代码), GB 32100-2015.

18 characters: registration authority (1), entity type (1), administrative
division (6), organization code (9, GB 11714 with its own check character)
and a check character over the first 17 (weights 3^i mod 31).
"""

from __future__ import annotations

from typing import NewType

USCC = NewType("USCC", str)

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_VALUE = {c: i for i, c in enumerate(CHARSET)}
_WEIGHTS = [pow(3, i, 31) for i in range(17)]  # 1, 3, 9, 27, 19, 26, ...
_ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]


def check_character(first17: str) -> str:
    """The 18th character for a 17-character prefix."""
    if len(first17) != 17 or any(c not in _VALUE for c in first17):
        raise ValueError("USCC prefix must be 17 characters of the GB 32100 character set")
    total = sum(_VALUE[c] * w for c, w in zip(first17, _WEIGHTS))
    return CHARSET[(31 - total % 31) % 31]


def org_code_check(body8: str) -> str:
    """GB 11714 check character of an 8-character organization code body."""

    def value(c: str) -> int:
        if c.isdigit():
            return int(c)
        return ord(c) - ord("A") + 10

    total = sum(value(c) * w for c, w in zip(body8, _ORG_WEIGHTS))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def is_valid(code: str) -> bool:
    if len(code) != 18 or any(c not in _VALUE for c in code):
        return False
    if code[0] not in "123456789ANY":  # registration authority codes
        return False
    body = code[8:16]
    if org_code_check(body) != code[16]:
        return False
    return check_character(code[:17]) == code[17]


def parse(code: str) -> USCC:
    """Return code as a USCC or raise ValueError naming what is wrong."""
    code = code.strip().upper()
    if len(code) != 18:
        raise ValueError(f"a USCC has 18 characters, got {len(code)}")
    bad = [c for c in code if c not in _VALUE]
    if bad:
        raise ValueError(f"characters {''.join(sorted(set(bad)))!r} are not allowed in a USCC")
    if not is_valid(code):
        raise ValueError("USCC check character does not match")
    return USCC(code)


def make(authority: str, entity_type: str, division: str, org_body8: str) -> USCC:
    """Compose a valid USCC from its parts (used by the synthetic data generator)."""
    first16 = authority + entity_type + division + org_body8
    first17 = first16 + org_code_check(org_body8)
    return USCC(first17 + check_character(first17))

"""GB 32100-2015 unified social credit codes: check characters and charset rules."""

from __future__ import annotations

import pytest

from xinrong import uscc

# Published codes of real enterprises (from their business licences).
KNOWN_VALID = ("91350100M000100Y43", "91110108551385082Q", "9111000071093123XX")


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_known_real_codes_are_valid(code: str) -> None:
    assert uscc.is_valid(code)
    assert uscc.parse(code) == code
    assert uscc.check_character(code[:17]) == code[17]
    assert uscc.org_code_check(code[8:16]) == code[16]


def test_check_characters_of_known_codes() -> None:
    # GB 11714 organization-code check characters, including the X case.
    assert uscc.org_code_check("M000100Y") == "4"
    assert uscc.org_code_check("55138508") == "2"
    assert uscc.org_code_check("71093123") == "X"
    # GB 32100 check characters over the first 17, including letter results.
    assert uscc.check_character("91350100M000100Y4") == "3"
    assert uscc.check_character("91110108551385082") == "Q"
    assert uscc.check_character("9111000071093123X") == "X"


def test_make_reproduces_known_codes() -> None:
    assert uscc.make("9", "1", "350100", "M000100Y") == "91350100M000100Y43"
    assert uscc.make("9", "1", "110108", "55138508") == "91110108551385082Q"
    assert uscc.make("9", "1", "110000", "71093123") == "9111000071093123XX"


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_every_single_substitution_is_rejected(code: str) -> None:
    # Weights 3^i mod 31 are never 0 mod the prime 31, so any one changed
    # character changes the weighted sum and must be caught.
    for position in range(18):
        for replacement in uscc.CHARSET:
            if replacement == code[position]:
                continue
            corrupted = code[:position] + replacement + code[position + 1 :]
            assert not uscc.is_valid(corrupted), corrupted
            with pytest.raises(ValueError):
                uscc.parse(corrupted)


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_adjacent_transpositions_are_rejected(code: str) -> None:
    for position in range(17):
        a, b = code[position], code[position + 1]
        if a == b:
            continue
        swapped = code[:position] + b + a + code[position + 2 :]
        assert not uscc.is_valid(swapped), swapped


@pytest.mark.parametrize("letter", ["I", "O", "S", "V", "Z"])
def test_letters_outside_the_charset_are_rejected(letter: str) -> None:
    assert letter not in uscc.CHARSET
    code = "91350100M000100Y43"
    bad = code[:10] + letter + code[11:]
    assert not uscc.is_valid(bad)
    with pytest.raises(ValueError, match="not allowed"):
        uscc.parse(bad)
    with pytest.raises(ValueError):
        uscc.check_character(bad[:17])


def test_charset_has_31_characters() -> None:
    assert len(uscc.CHARSET) == len(set(uscc.CHARSET)) == 31
    assert set(uscc.CHARSET) == set("0123456789ABCDEFGHJKLMNPQRTUWXY")


def test_length_and_case() -> None:
    assert not uscc.is_valid("91350100M000100Y4")
    assert not uscc.is_valid("91350100M000100Y433")
    assert not uscc.is_valid("")
    with pytest.raises(ValueError, match="18 characters"):
        uscc.parse("91350100M000100Y4")
    # is_valid is strict; parse normalizes surrounding space and case first.
    assert not uscc.is_valid("91350100m000100y43")
    assert uscc.parse(" 91350100m000100y43 ") == "91350100M000100Y43"


def test_unknown_registration_authority_is_rejected() -> None:
    # Correct check characters, but "B" is not a registration-authority code.
    code = uscc.make("B", "1", "130100", "MA0ABCDE")
    assert uscc.check_character(code[:17]) == code[17]
    assert not uscc.is_valid(code)
    for authority in "123456789ANY":
        assert uscc.is_valid(uscc.make(authority, "1", "130100", "MA0ABCDE"))

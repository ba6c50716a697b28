"""SYNC-06: the match-key normaliser is defined once; its SQL is made from it."""

from __future__ import annotations

import unicodedata

import pytest

from migrations import DIRECTORY
from projections import keys
from projections.keys import account_key, email_key


def test_the_migration_installs_the_sql_made_from_the_tables() -> None:
    """The SQL functions the key indexes use are the ones ``sql_functions`` renders."""
    assert keys.sql_functions() in (DIRECTORY / "0012_match_keys.sql").read_text()


def test_the_committed_tables_are_those_of_their_unicode_version() -> None:
    if unicodedata.unidata_version != keys.UNICODE_VERSION:
        pytest.skip(f"tables made from Unicode {keys.UNICODE_VERSION}; this Python has"
                    f" {unicodedata.unidata_version}, whose tables may differ")
    fold_from, fold_to, space = keys.generate_tables()
    assert (fold_from, fold_to, space) == (
        "".join(map(chr, keys.FOLD)), "".join(keys.FOLD.values()), keys.WHITESPACE)


@pytest.mark.parametrize(("raw", "key"), [
    ("  Marie@Example.COM ", "marie@example.com"),
    ("İLKNUR@örnek.com.tr", "ilknur@örnek.com.tr"),  # PostgreSQL's lower agreed; casefold not
    ("\tbob@x.org\u00a0", "bob@x.org"),  # tab and no-break space are trimmed
    ("STRASSE@ẞ.de", "strasse@ß.de"),  # one character for one: ẞ -> ß, never ss
    ("   ", None),
    ("", None),
    (None, None),
    (42, None),
])
def test_email_keys(raw: object, key: str | None) -> None:
    assert email_key(raw) == key


def test_account_keys_fold_inner_white_space() -> None:
    assert account_key(" ACME\u00a0 \t Corp\u3000") == "acme corp"
    assert account_key("\u2003") is None


def test_a_key_is_its_own_key() -> None:
    """Folding twice changes nothing (so a key can be compared with a key)."""
    for text in ("İI ßẞ Σς µ", "\u00a0 Ab  C "):
        key = account_key(text)
        assert key is not None and account_key(key) == key


def test_ascii_text_folds_as_the_table_folds() -> None:
    """``fold`` takes ``lower`` for ASCII text: the same as the table on every ASCII
    character, alone and among others (the table is what the SQL functions apply)."""
    for code in range(128):
        text = f"Ab{chr(code)}Z9"
        assert keys.fold(text) == text.translate(keys.FOLD), repr(text)
    assert keys.fold("ÀB") == "àb"  # not ASCII: the table, as before


def test_held_keys_are_the_match_keys_each_once() -> None:
    """A record's keys, primary first, each once, the secondary e-mail's flagged (the
    planner's keys of a write; ``match_keys`` are the same keys without the flags)."""
    from projections.sync_plan import held_keys, match_keys

    cases: list[tuple[dict[str, str | None], bool, list[tuple[str, bool]]]] = [
        ({"email": "A@x.org", "secondary_email": "b@X.org"}, True,
         [("a@x.org", False), ("b@x.org", True)]),
        ({"email": "A@x.org", "secondary_email": "b@X.org"}, False, [("a@x.org", False)]),
        ({"email": "a@x.org", "secondary_email": " A@X.ORG "}, True, [("a@x.org", False)]),
        ({"email": None, "secondary_email": "b@x.org"}, True, [("b@x.org", True)]),
        ({"email": " ", "secondary_email": None}, True, []),
        ({}, True, []),
    ]
    for values, secondary, expected in cases:
        assert held_keys("contacts", values, secondary=secondary) == expected
        assert match_keys("contacts", values, secondary=secondary) == [k for k, _ in expected]
    assert held_keys("accounts", {"account_name": " ACME  Corp"}, secondary=True) == [
        ("acme corp", False)]
    assert held_keys("products", {"product_name": "x"}, secondary=True) == []

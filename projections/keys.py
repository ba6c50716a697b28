"""Match keys (SYNC-06): the one normaliser of e-mails and account names.

A key is computed in two places that must agree to the character: here, in
Python, for every record the sync reads from an event, and in PostgreSQL, where
the embedded stores are searched for candidates through expression indexes. Two
normalisers that *almost* agree match records in one order of arrival and
duplicate them in the other (a Turkish ``İ``: PostgreSQL's ``lower`` gives
``i``, Python's ``casefold`` ``i̇``; a no-break space: ``str.strip`` removes it,
``btrim`` does not). So the key is defined by two tables, and both sides apply
the same tables with the same primitives:

* **Trimmed:** leading and trailing white space, where white space is every
  character Python's ``str.isspace`` accepts (``WHITESPACE``: ASCII space, tab,
  line breaks, the information separators U+001C to U+001F, U+0085, the no-break
  space U+00A0 and the other Unicode spaces). Account names also have each
  inner run of white space folded to one ASCII space.
* **Case-folded, one character for one:** each character is replaced by its
  entry in ``FOLD`` (``str.translate`` here, ``translate`` in SQL): its simple
  case fold when that is one character, else its lower case's first character
  (``İ`` → ``i``, ``ẞ`` → ``ß``). A fold that would give several characters
  (``ß`` → ``ss``) is not applied: ``ß`` stays ``ß``.
* **No Unicode normalisation form** (neither NFC nor NFKC): PostgreSQL and each
  Python release ship their own Unicode version, and a composition they do not
  share would give two keys again. Keys compare code point for code point after
  the fold, so an address typed in decomposed form (``e`` + U+0301) is another
  key than the precomposed one (``é``).
* An empty key (nothing left after trimming) is no key: such a record matches
  nothing (SYNC-07).

The tables are data (``projections/key_tables.py``), generated once from
Unicode's character database by ``python -m projections.keys --write`` and
committed, so every Python release computes the same keys as the SQL functions
``syncd.email_key`` and ``syncd.account_key`` that ``sql_functions()`` renders
from the same tables (the migration that installs them is checked against it
by a test, and a hypothesis property checks both sides agree on arbitrary
text).
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

from projections.key_tables import FOLD_FROM, FOLD_TO, UNICODE_VERSION, WHITESPACE

FOLD: dict[int, str] = {ord(a): b for a, b in zip(FOLD_FROM, FOLD_TO, strict=True)}


def fold(text: str) -> str:
    """``FOLD`` applied. On ASCII text it changes A to Z alone, which is what ``lower``
    does there, about eight times faster than the table (keys are computed for every
    write the sync plans; ``tests/unit/test_match_keys.py`` holds the two together)."""
    return text.lower() if text.isascii() else text.translate(FOLD)


def email_key(value: object) -> str | None:
    """Contacts match on the e-mail, trimmed and case-folded (see the module docstring)."""
    if not isinstance(value, str):
        return None
    key = fold(value.strip(WHITESPACE))
    return key or None


def account_key(value: object) -> str | None:
    """Accounts match on the name, trimmed, inner white space folded, case-folded."""
    if not isinstance(value, str):
        return None
    key = fold(" ".join(value.split()))  # split() splits on WHITESPACE runs
    return key or None


# -- the tables, and the SQL made from them ---------------------------------------


def generate_tables() -> tuple[str, str, str]:
    """(fold from, fold to, white space) from this Python's Unicode database."""
    sources, targets = [], []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        folded = char.casefold()
        if len(folded) != 1:
            lowered = char.lower()
            folded = lowered[0] if lowered != char else char
        if folded != char:
            sources.append(char)
            targets.append(folded)
    space = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    return "".join(sources), "".join(targets), space


def _sql_text(text: str) -> str:
    """A PostgreSQL string literal of ``text`` that keeps the file ASCII (U&'...')."""
    out = []
    for char in text:
        code = ord(char)
        if char == "'":
            out.append("''")
        elif char == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\{code:04X}")
        else:
            out.append(f"\\+{code:06X}")
    return "U&'" + "".join(out) + "'"


_ASCII_SPACE = "".join(c for c in WHITESPACE if ord(c) < 0x80)


def sql_functions() -> str:
    """The SQL functions ``syncd.email_key`` and ``syncd.account_key``, the same keys as
    ``email_key`` and ``account_key``. Text that is all ASCII (byte length equals
    character length) takes a fast path: ``lower`` under the C collation folds
    exactly A-Z, which is what the table does to ASCII."""
    space, fold_from, fold_to = _sql_text(WHITESPACE), _sql_text(FOLD_FROM), _sql_text(FOLD_TO)
    ascii_space = _sql_text(_ASCII_SPACE)
    ascii_runs = _sql_text(f"[{_ASCII_SPACE}]+")
    runs = _sql_text(f"[{WHITESPACE}]+")
    return f"""\
CREATE OR REPLACE FUNCTION syncd.email_key(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT nullif(CASE WHEN octet_length(v) = length(v)
        THEN lower(btrim(v, {ascii_space}) COLLATE "C")
        ELSE translate(btrim(v, {space}),
            {fold_from},
            {fold_to}) END, '')
$$;

CREATE OR REPLACE FUNCTION syncd.account_key(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT nullif(CASE WHEN octet_length(v) = length(v)
        THEN lower(regexp_replace(btrim(v, {ascii_space}), {ascii_runs}, ' ', 'g') COLLATE "C")
        ELSE translate(regexp_replace(btrim(v, {space}), {runs}, ' ', 'g'),
            {fold_from},
            {fold_to}) END, '')
$$;
"""


_TABLES = Path(__file__).with_name("key_tables.py")


def _render_tables() -> str:
    fold_from, fold_to, space = generate_tables()
    return (
        '"""Match-key tables, generated by ``python -m projections.keys --write`` from\n'
        f'Unicode {unicodedata.unidata_version}; see ``projections.keys``. Do not edit."""\n\n'
        f"UNICODE_VERSION = {unicodedata.unidata_version!r}\n"
        f"WHITESPACE = {_literal(space)}\n"
        f"FOLD_FROM = {_literal(fold_from)}\n"
        f"FOLD_TO = {_literal(fold_to)}\n"
    )


def _literal(text: str, per_line: int = 8) -> str:
    """``text`` as a parenthesised run of short ASCII string literals."""
    parts = [ascii(text[i:i + per_line]) for i in range(0, len(text), per_line)]
    return "(\n" + "".join(f"    {part}\n" for part in parts) + ")"


def main(argv: list[str]) -> int:
    """``--write`` regenerates ``key_tables.py``; ``--sql`` prints the SQL functions.
    A new table changes keys: it needs a migration that installs the new functions
    and rebuilds the key indexes (see migrations/0012_match_keys.sql)."""
    if argv == ["--write"]:
        _TABLES.write_text(_render_tables())
        return 0
    if argv == ["--sql"]:
        print(sql_functions(), end="")
        return 0
    print("usage: python -m projections.keys --write | --sql", file=sys.stderr)
    return 2


__all__ = ["FOLD", "UNICODE_VERSION", "WHITESPACE", "account_key", "email_key",
           "generate_tables", "sql_functions"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

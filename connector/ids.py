"""Record ids from outside the sidecar: plain ASCII digits, bounded, positive.

Webhook bodies and helpdesk answers carry ids as JSON numbers or strings.
``str.isdigit`` and ``int`` accept every Unicode digit (U+0661, Arabic-Indic
one, parses as 1; "²" passes ``isdigit`` and then makes ``int`` raise) and
``int`` of a long string costs time quadratic in its length (and raises past
4300 digits), so ids are read here and nowhere else.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A signed 64-bit id has up to 19 digits; 18 keeps every accepted id inside that range.
MAX_ID_DIGITS = 18
_ASCII_ID = re.compile(rf"[0-9]{{1,{MAX_ID_DIGITS}}}")
_LIMIT = 10**MAX_ID_DIGITS

INVALID_TICKET_ID = f"ticket id is not a positive integer of at most {MAX_ID_DIGITS} ASCII digits"


def parse_id(value: object) -> int | None:
    """A positive id from a JSON number or string of ASCII digits, else None.

    Booleans, floats, signs, exponents and non-ASCII digits are refused, as is
    anything of more than ``MAX_ID_DIGITS`` digits. Spaces and tabs around a
    string are allowed (some systems pad), nothing else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < _LIMIT else None
    if not isinstance(value, str):
        return None
    text = value.strip(" \t")
    if not _ASCII_ID.fullmatch(text):
        return None
    number = int(text)
    return number if number > 0 else None


def load_json(body: bytes | str) -> Any:
    """``json.loads``, keeping an integer literal too long to be an id as its text.

    The decoder's own ``int`` raises past 4300 digits, so a 5,000-digit ticket
    id would be reported as "not JSON"; kept as text, ``parse_id`` refuses it
    like any other bad id, and a long number costs no quadratic conversion.
    """
    return json.loads(body, parse_int=_json_int)


def _json_int(text: str) -> int | str:
    # One more character than an id may have, for a sign; anything longer is no id.
    return int(text) if len(text) <= MAX_ID_DIGITS + 1 else text

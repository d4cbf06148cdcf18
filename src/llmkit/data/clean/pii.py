"""Optional PII scrubbing: e-mail addresses, phone numbers (Chinese mobile and landline formats,
North American and ``+country`` international ones), IPv4/IPv6 addresses and Chinese resident
ID-card numbers are replaced with ``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<ID>``.

Precision matters as much as recall: a version number ``1.13.2``, a date ``2024-01-15``, an order
number or a year range must survive. So candidates are validated, not just matched: an IP address
must parse (``ipaddress``; each IPv4 part 0-255, exactly four parts), an ID-card number must have a
real birth date and a correct ISO 7064 MOD 11-2 check digit, and every number must stand alone
(no digit or ``.digit`` glued to either side).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from datetime import date

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_ALONE_L, _ALONE_R = r"(?<![\w.\-+])", r"(?![\w]|[.\-]\d)"
_PHONES = [
    re.compile(_ALONE_L + r"(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}" + _ALONE_R),  # CN mobile 138 1234 5678
    re.compile(_ALONE_L + r"(?:\(0\d{2,3}\)|0\d{2,3}-)[ ]?\d{7,8}" + _ALONE_R),  # CN landline 010-12345678
    re.compile(_ALONE_L + r"(?:\+?1[ .-]?)?\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}" + _ALONE_R),  # NANP (555) 123-4567
    re.compile(r"(?<![\w+])\+(?!86|1\b)\d{1,3}(?:[ .-]?\d{2,4}){2,5}" + _ALONE_R),  # +44 20 7946 0958
]
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_ID_CARD = re.compile(r"(?<![\w])[1-9]\d{5}(?:18|19|20)\d{2}\d{4}\d{3}[\dXx](?![\w])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_id_card(number: str) -> bool:
    """A Chinese resident ID number (GB 11643): a real birth date and the right check character."""
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def _valid_ip(candidate: str) -> bool:
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return ip.version == 4 or any(c.isdigit() for c in candidate)  # ``a::b`` is C++ scope, not an address


def scrub(text: str) -> tuple[str, Counter]:
    """``(text with PII replaced, Counter of replacements by kind)``."""
    found: Counter = Counter()

    def sub(pattern: re.Pattern, tag: str, text: str, valid=None) -> str:
        def repl(m: re.Match) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            found[tag] += 1
            return f"<{tag}>"

        return pattern.sub(repl, text)

    text = sub(_EMAIL, "EMAIL", text)
    text = sub(_ID_CARD, "ID", text, valid_id_card)
    text = sub(_IPV4, "IP", text, _valid_ip)
    text = sub(_IPV6, "IP", text, _valid_ip)
    for pattern in _PHONES:
        text = sub(pattern, "PHONE", text)
    return text, found

"""Built-in value detectors of the `redact:` processor: e-mail, card, phone, IBAN and API keys.

Each detector is a precise Python pattern (with a checksum where the format has one) and a
looser RE2 prefilter that `redact.py` runs column-wise over whole batches to skip clean rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    """`pattern` finds candidates (Python `re`); `valid` rejects those failing a checksum;
    `prefilter` (RE2) only decides which rows are scanned at all: it must match wherever
    `pattern` does, and stays short (literals, no long counted repeats) so that RE2's DFA,
    built for all detectors at once, stays small and fast."""

    name: str
    pattern: re.Pattern[str]
    prefilter: str
    valid: Callable[[str], bool] | None = None
    hints: tuple[str, ...] = ()
    """Literals of which every match contains one: a cheap test before the regex."""


def luhn_ok(text: str) -> bool:
    """The Luhn checksum of payment card numbers; separators are ignored."""
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = sum(digits[-1::-2]) + sum(d * 2 - 9 if d > 4 else d * 2 for d in digits[-2::-2])
    return total % 10 == 0


# ISO 13616 lengths of the IBAN countries (SWIFT registry); an unknown country is not an IBAN.
_IBAN_LENGTHS = dict(
    (c[:2], int(c[2:]))
    for c in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
        "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
        "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
        "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
)


def iban_ok(text: str) -> bool:
    """ISO 13616: known country, its length, and the mod-97 check equal to 1."""
    s = text.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def phone_ok(text: str) -> bool:
    """E.164 allows at most 15 digits; fewer than 8 is a short code or a number, not a phone."""
    return 8 <= sum(c.isdigit() for c in text) <= 15


_TOKEN_EDGE_L = r"(?<![A-Za-z0-9_-])"
_TOKEN_EDGE_R = r"(?![A-Za-z0-9_-])"
_API_KEY_SHAPES = (
    r"sk-ant-[A-Za-z0-9_-]{20,}",  # Anthropic (before OpenAI's looser sk-)
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,255}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,255}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google API key
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",  # Stripe secret / restricted
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",  # JWT
    r"al_(?:live|read|admin)_[0-9a-f]{8}_[0-9a-f]{40}",  # our own keys
)

DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "email",
            re.compile(
                r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?![\w-])"
            ),
            "@",
            hints=("@",),
        ),
        Detector(
            "card",
            re.compile(r"(?<![\d-])[2-6]\d(?:[ -]?\d){11,17}(?!\d)"),
            r"[2-6](?:[ -]?\d){12}",
            luhn_ok,
        ),
        Detector(
            "phone",
            re.compile(
                r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w])"
                r"|(?<![\w(])(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}(?![\w])"
            ),
            r"\+[1-9]|\d{3}[.-]\d{4}",
            phone_ok,
        ),
        Detector(
            "iban",
            re.compile(
                r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                r"(?![A-Za-z0-9])"
            ),
            r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
            iban_ok,
        ),
        Detector(
            "api_key",
            re.compile(
                _TOKEN_EDGE_L
                + "(?:"
                + "|".join(_API_KEY_SHAPES)
                + ")"
                + _TOKEN_EDGE_R
                + r"|(?<=[Bb]earer )[A-Za-z0-9._~+/-]{20,}=*"
            ),
            r"sk-|A[KS]IA|gh[pousr]_|github_pat_|xox[abposr]-|AIza|[sr]k_live_|[sr]k_test_|eyJ"
            r"|al_live_|al_read_|al_admin_|[Bb]earer ",
            hints=(
                "sk-",
                "AKIA",
                "ASIA",
                "gh",
                "xox",
                "AIza",
                "k_live_",
                "k_test_",
                "eyJ",
                "al_",
                "earer ",
            ),
        ),
    )
}

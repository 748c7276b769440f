"""Tests for `collector/ui/session.py`: the sealed session cookie opens only as issued, until it
expires or is signed out, never holds a key in clear, and the CSRF comparison."""

from __future__ import annotations

import base64
import os

from collector.secretbox import SecretBox
from collector.ui.session import Sessions, _to_cookie, same_token

KEY = "al_read_aaaa0002_" + "2" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sessions(clock: Clock | None = None, box: SecretBox | None = None) -> Sessions:
    return Sessions(box or SecretBox(os.urandom(32)), 3600, clock or Clock())


def test_a_cookie_opens_as_issued_and_holds_no_key_in_clear() -> None:
    s = sessions()
    cookie, session = s.issue((KEY,))
    assert KEY not in cookie and "2" * 40 not in cookie
    assert KEY not in base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)).decode("latin-1")
    opened = s.open(cookie)
    assert opened == session and opened.keys == (KEY,)
    assert KEY not in repr(opened) and opened.csrf not in repr(opened)
    assert all(c.isalnum() or c in "-_" for c in cookie)  # needs no quoting in a header


def test_altered_foreign_expired_and_signed_out_cookies_do_not_open() -> None:
    clock = Clock()
    s = sessions(clock)
    cookie, session = s.issue((KEY,))
    flipped = cookie[:20] + ("A" if cookie[20] != "A" else "B") + cookie[21:]
    assert s.open(flipped) is None
    assert s.open("") is None and s.open(None) is None and s.open("%%%") is None
    assert sessions(clock).open(cookie) is None  # sealed with another key
    clock.now += 3599
    assert s.open(cookie) is not None
    clock.now += 2
    assert s.open(cookie) is None
    clock.now -= 2
    s.end(session)
    assert s.open(cookie) is None


def test_a_sealed_secret_of_the_same_box_is_no_session() -> None:
    box = SecretBox(os.urandom(32))
    s = sessions(box=box)
    forged = _to_cookie(box.seal('{"i":"x","k":["' + KEY + '"],"c":"c","x":9e99}'))
    assert s.open(forged) is None


def test_each_sign_in_gets_a_new_id_and_csrf_token_and_ends_the_old_one() -> None:
    s = sessions()
    old_cookie, old = s.issue((KEY,))
    new_cookie, new = s.issue((KEY,), old)
    assert (new.sid, new.csrf) != (old.sid, old.csrf)
    assert s.open(old_cookie) is None and s.open(new_cookie) == new


def test_csrf_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc")
    assert (
        not same_token("abc", "abd") and not same_token("abc", "") and not same_token("abc", None)
    )

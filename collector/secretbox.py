"""Secrets at rest: provider API keys and webhook secrets sealed with AES-256-GCM.

The key comes from the config (`secrets.key`, base64) or a 0600 file `secret.key` in the data
directory, created on first start; the store keeps only sealed tokens, APIs show `preview()`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from collector.configparse import ConfigIssue

KEY_FILE = "secret.key"
_PREFIX = "v1:"
_NONCE = 12
_AAD = b"agentledger-secretbox-v1"


@dataclass(frozen=True, kw_only=True)
class SecretsConfig:
    """The YAML section `secrets:`. `key`: base64 of 32 random bytes (e.g. from
    `${env:AGENTLEDGER_SECRET_KEY}`); None keeps a generated key in `<data dir>/secret.key`."""

    key: str | None = field(default=None, repr=False)

    def validate(self) -> list[ConfigIssue]:
        if self.key is None:
            return []
        try:
            decode_key(self.key)
        except ValueError as e:
            return [ConfigIssue("key", f"{e} (the value is not shown)")]
        return []


def decode_key(text: str) -> bytes:
    """base64 (standard or URL-safe) of exactly 32 bytes → the key; ValueError otherwise."""
    cleaned = text.strip()
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (generate one: openssl rand -base64 32)") from None
    if len(key) != 32:
        raise ValueError(f"decodes to {len(key)} bytes; AES-256 needs 32")
    return key


class SecretBox:
    """Seal and unseal short secrets. The key is never in repr or messages."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a SecretBox key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def open(cls, data_dir: Path, configured: str | None = None) -> SecretBox:
        """The configured key, or the one in `data_dir/secret.key`, made (0600) if missing."""
        if configured is not None:
            return cls(decode_key(configured))
        return cls(_key_file(Path(data_dir) / KEY_FILE))

    def seal(self, plaintext: str) -> str:
        """ "v1:" + base64(nonce | ciphertext+tag); a fresh random nonce each time."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _AAD)
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def unseal(self, token: str) -> str:
        """The plaintext; ValueError if the token is malformed, tampered with or of another key."""
        if not token.startswith(_PREFIX):
            raise ValueError("not a sealed secret (expected the v1: prefix)")
        try:
            raw = base64.b64decode(token[len(_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a sealed secret that is not base64") from None
        if len(raw) < _NONCE + 16:
            raise ValueError("a sealed secret too short to be one")
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
        except InvalidTag:
            message = "the secret does not open: tampered with, or sealed with another key"
            raise ValueError(message) from None
        return plain.decode()


def preview(secret: str) -> str:
    """What an API may show of a secret: its first 4 characters and "…"."""
    return secret[:4] + "…"


def _key_file(path: Path) -> bytes:
    """Read the key file, or create it with mode 0600: written whole to a temporary file, then
    hard-linked into place, so two starting processes cannot end up with different keys and no
    reader sees a half-written one (the loser of the race reads the winner's)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
            _fsync_dir(path.parent)
        finally:
            temp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{path} is readable by others (mode {mode:04o}); run: chmod 600 {path}")
    try:
        return decode_key(path.read_text(encoding="ascii"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} does not hold a valid key: {e}") from None


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # the directory entry is durable too, where supported
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

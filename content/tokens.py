"""Signed tokens for links in messages: booking (`/b/{token}`), preferences (`/u/{token}`) and
the confirmation of a request for a known contact (`/confirm/{token}`).

Tokens carry ids but are HMAC-signed with the installation's secret, so they cannot be forged or
enumerated from ids. Booking and preference tokens do not expire: an unsubscribe link in a two-year-old
email must still work. A confirmation token names a `pending_change` row, which holds its expiry and
whether it was used (the row decides, by the caller's `now`, not the signer's wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from itsdangerous import BadSignature, Signer, URLSafeSerializer
from itsdangerous.encoding import want_bytes


class BadToken(Exception):
    """The token was altered, truncated or made with another key."""


class _KeptKeySigner(Signer):
    """itsdangerous' `Signer`, with each derived key computed once per process: itsdangerous derives
    it again (a hash of salt and secret) for every token, and the dispatcher makes two a message.
    Same keys, same signatures."""

    _derived: ClassVar[dict[tuple[bytes, bytes, str, Any], bytes]] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        key = (raw, self.salt, self.key_derivation, self.digest_method)
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = super().derive_key(secret_key)
        return derived


@dataclass(frozen=True, slots=True)
class LinkTokens:
    secret_key: str  # signs new tokens
    # Also accepted when reading a token: keys that signed tokens in messages already sent (the
    # secret an older version kept in the database, a raw DRIP_SECRET_KEY), so their links still work.
    fallback_keys: tuple[str, ...] = ()
    # Built once per purpose: the dispatcher makes two tokens for every message it renders.
    _serializers: dict[str, URLSafeSerializer] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:
            serializer = self._serializers[purpose] = URLSafeSerializer(
                # itsdangerous signs with the last key and verifies with every one.
                [*self.fallback_keys, self.secret_key], salt=f"drip-{purpose}", signer=_KeptKeySigner)
        return serializer

    def booking(self, message_id: int) -> str:
        return str(self._serializer("book").dumps(message_id))

    def read_booking(self, token: str) -> int:
        return self._load("book", token)

    def unsubscribe(self, contact_id: int, message_id: int | None = None) -> str:
        payload = [contact_id, message_id] if message_id is not None else [contact_id]
        return str(self._serializer("unsub").dumps(payload))

    def read_unsubscribe(self, token: str) -> tuple[int, int | None]:
        data = self._load_any("unsub", token)
        if (
            not isinstance(data, list)
            or not 1 <= len(data) <= 2
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in data)
        ):
            raise BadToken("malformed token")
        return data[0], (data[1] if len(data) == 2 else None)

    def confirmation(self, pending_change_id: int) -> str:
        """The token of the link that confirms pending change `pending_change_id`."""
        return str(self._serializer("confirm").dumps(pending_change_id))

    def read_confirmation(self, token: str) -> int:
        """The pending change id in a confirmation token. Raises `BadToken` when altered or foreign."""
        return self._load("confirm", token)

    def _load_any(self, purpose: str, token: str) -> object:
        if len(token) > 200:
            raise BadToken("token too long")
        try:
            return self._serializer(purpose).loads(token)
        except BadSignature:
            raise BadToken("bad signature") from None
        except (ValueError, TypeError, UnicodeDecodeError):
            raise BadToken("malformed token") from None

    def _load(self, purpose: str, token: str) -> int:
        value = self._load_any(purpose, token)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadToken("malformed token")
        return value

"""How the sandbox signs what it sends back, exactly as the real services do.

Owns `twilio_signature` (``X-Twilio-Signature`` on status callbacks and inbound SMS) and
`SendGridSigner` (the ECDSA P-256 key behind SendGrid's Signed Event Webhook).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the full URL + sorted POST params.

    Computed by the SDK's own RequestValidator so it cannot drift from what apps validate.
    """
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


class SendGridSigner:
    """Signs event-webhook payloads the way SendGrid's Signed Event Webhook does.

    ECDSA P-256 / SHA-256 over ``timestamp + payload`` (the raw body), DER-encoded and base64'd
    into ``X-Twilio-Email-Event-Webhook-Signature``; the public key is shown as base64 DER
    SubjectPublicKeyInfo (the PEM body without its armour), as in SendGrid's settings page.
    """

    def __init__(self, private_key_pem: str | None = None) -> None:
        if private_key_pem:
            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("sendgrid_private_key_pem must be an EC P-256 private key")
            self._key = key
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def private_key_pem(self) -> str:
        """The signing key as unencrypted PKCS#8 PEM (to hand the same key to another sandbox)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def sign(self, payload: bytes, timestamp: str) -> str:
        """Base64 DER signature over ``timestamp + payload``: the event-webhook signature header."""
        signature = self._key.sign(timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")

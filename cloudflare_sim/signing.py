"""The signing keys behind a simulated team's certs endpoint: real RSA, as Cloudflare Access uses.

Each account has a chain of keys, one per generation: generation 0 is the key the account starts
with, each rotation (the API's or Cloudflare's own) starts the next, and generation -1 stands for
the key before the first, so the endpoint always serves two keys as Cloudflare's does. A key is
made only when something first needs it (a certs read, a token): a simulator with 10,000 accounts
that nobody reads the certs of costs no RSA work.

What is served, and how an application finds a key:

- ``kid`` is the RFC 7638 JWK thumbprint of the public key (SHA-256 over the canonical JSON of
  ``e``, ``kty``, ``n``, base64url without padding).
- ``keys[]``: both keys as JWKs (``kid``, ``kty`` RSA, ``alg`` RS256, ``use`` sig, ``e``, ``n``),
  the current one first.
- ``public_cert``: ``{kid, cert}``, the current key in a self-signed X.509 certificate (PEM).
- ``public_certs[]``: both, the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 2048
# Self-signed certificates are valid this long around the moment they are made; validators pick
# keys by kid and do not check these dates, but a certificate must carry some.
CERT_VALIDITY = timedelta(days=3650)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: the SHA-256 of the required members, in lexicographic order, without whitespace."""
    required = {name: jwk[name] for name in ("e", "kty", "n")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


@dataclass
class SigningKey:
    """One RSA key: its JWK, kid, PEM certificate, and RS256 signatures."""

    private: rsa.RSAPrivateKey
    made_at: datetime

    @classmethod
    def generate(cls, made_at: datetime) -> SigningKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS), made_at)

    @cached_property
    def public_jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        jwk = {"kty": "RSA", "e": _uint(numbers.e), "n": _uint(numbers.n)}
        return {"kid": jwk_thumbprint(jwk), "kty": "RSA", "alg": "RS256", "use": "sig", **jwk}

    @property
    def kid(self) -> str:
        return self.public_jwk["kid"]

    @cached_property
    def cert_pem(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator simulator Access signing key")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.made_at - CERT_VALIDITY)
            .not_valid_after(self.made_at + CERT_VALIDITY)
            .sign(self.private, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """A compact RS256 JWS, headed like Access's tokens (``alg``, ``kid``, ``typ``)."""
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self.private.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


@dataclass
class KeyChain:
    """An account's keys by generation, made on first use and then kept."""

    keys: dict[int, SigningKey] = field(default_factory=dict)

    def key(self, generation: int, now: datetime) -> SigningKey:
        key = self.keys.get(generation)
        if key is None:
            key = self.keys[generation] = SigningKey.generate(now)
        return key

    def certs(self, generation: int, now: datetime) -> dict[str, Any]:
        """The certs document while ``generation`` is current: it and the one before."""
        current, previous = self.key(generation, now), self.key(generation - 1, now)
        both = (current, previous)
        return {
            "keys": [key.public_jwk for key in both],
            "public_cert": {"kid": current.kid, "cert": current.cert_pem},
            "public_certs": [{"kid": key.kid, "cert": key.cert_pem} for key in both],
        }


def access_claims(
    team_domain: str, now: datetime, *, audience: str, email: str, lifetime: timedelta
) -> dict[str, Any]:
    """The claims of an Access application token (``CF_Authorization``), times in whole seconds."""
    issued = int(now.timestamp())
    return {
        "aud": [audience],
        "email": email,
        "exp": issued + int(lifetime.total_seconds()),
        "iat": issued,
        "nbf": issued,
        "iss": f"https://{team_domain}",
        "type": "app",
        "identity_nonce": secrets.token_urlsafe(12),
        "sub": hashlib.sha256(email.encode()).hexdigest()[:36],
        "country": "XX",
    }

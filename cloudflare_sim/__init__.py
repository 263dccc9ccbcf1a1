"""A Cloudflare Access that speaks real HTTP, for end-to-end tests, the benchmark and ``rotator demo``.

- ``cloudflare_sim.core``: the key API, the organization read, accounts, faults, the clock,
  the HTTP front end, ``SimulatorThread`` and the command line (``python -m cloudflare_sim``).
- ``cloudflare_sim.signing``: real RSA signing keys per account, their JWKs (kid: RFC 7638
  thumbprint), certificates, and Access-style JWTs.
- ``cloudflare_sim.certs``: the certs endpoint's faults (lagging, stuck, down, garbage).

Everything tests use is importable from here: ``from cloudflare_sim import Simulator, Fault``.
"""

from cloudflare_sim.certs import CertsFault
from cloudflare_sim.core import (
    API_PREFIX,
    CERTS_PATH,
    DEFAULT_INTERVAL_DAYS,
    WRITE_PERMISSION,
    ApiCall,
    Fault,
    KeyState,
    RateLimit,
    Reply,
    RequestRecord,
    Rotation,
    SimClock,
    Simulator,
    SimulatorThread,
    account_id_for,
    http_date,
    main,
    rfc3339,
)
from cloudflare_sim.signing import SigningKey, jwk_thumbprint

__all__ = [
    "API_PREFIX",
    "CERTS_PATH",
    "DEFAULT_INTERVAL_DAYS",
    "WRITE_PERMISSION",
    "ApiCall",
    "CertsFault",
    "Fault",
    "KeyState",
    "RateLimit",
    "Reply",
    "RequestRecord",
    "Rotation",
    "SigningKey",
    "SimClock",
    "Simulator",
    "SimulatorThread",
    "account_id_for",
    "http_date",
    "jwk_thumbprint",
    "main",
    "rfc3339",
]

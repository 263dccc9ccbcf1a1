"""rotator: keeps Cloudflare Zero Trust Access signing keys rotated on a policy."""

__version__ = "0.1.0"

"""Cloudflare's API: the client, its transport, the client-side budget, credentials."""

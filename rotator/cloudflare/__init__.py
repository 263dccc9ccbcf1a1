"""Cloudflare's API: the client, its transport, and the client-side budget."""

"""The HTTP surface: /metrics, /healthz, /readyz, /status and the status page."""

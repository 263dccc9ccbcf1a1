"""Prometheus metrics: every family rotator exports, and the scrape's text."""

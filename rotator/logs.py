"""Structured logs: one JSON object a line (or a readable console line on a TTY).

Event names are stable snake_case and part of the interface (rotator/events_catalog.py lists them).
Libraries that log through the standard library (APScheduler, aiohttp) are rendered the same way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from rotator.redaction import REDACTOR

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, renderer: Any = None
) -> None:
    """Send every log line to ``stream`` (stdout for the daemon, stderr for commands that print).

    ``renderer``, a structlog processor returning the line, replaces ``fmt`` (``rotator demo``'s view)."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    if renderer is None:
        renderer = (
            structlog.processors.JSONRenderer()
            if use_json
            else structlog.dev.ConsoleRenderer(colors=stream.isatty())
        )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter below a warning is not the operator's business.
    root.setLevel(max(_LEVELS[level], logging.WARNING))


def _redact_secrets(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Blank out any credential this process has read, wherever a library might have put it: in
    every value, not only strings (a list of names, a number, an exception) (rotator.redaction)."""
    return {k: REDACTOR.value(v) for k, v in event.items()}

"""Structured logs: one JSON object a line, the event as a short name and the facts as fields.

Faust's and aiokafka's own stdlib logs go through the same renderer, so the worker's output is uniform.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders every record as JSON on stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": _SHARED,
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stdout},
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        # The broker client is chatty at INFO about every rebalance step.
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }


def configure(level: str = "info") -> None:
    """Set up structlog on top of stdlib logging (call once per process)."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)  # type: ignore[no-any-return]

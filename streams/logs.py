"""Log set-up for the worker and the shim: one JSON object per line (``LOG_FORMAT=json``) or
plain text, with credentials and URL signatures redacted from every message and field.

A job's lifecycle is logged with ``extra`` fields -- ``job_id``, ``book_id``, ``stage``,
``duration_ms`` ... -- which become top-level keys of the JSON line.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

# Query parameters that carry a secret: S3/GCS/Azure signatures and the usual token names.
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-[a-z-]+|x-goog-[a-z-]+|signature|sig|se|sp|token|access_token|"
    r"api[_-]?key|key|password|secret|auth)=)[^&\s\"'<>]*")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"']*:)[^@\s/\"']+@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[a-z0-9._~+/=-]+")
REDACTED = "<redacted>"

# LogRecord's own attributes; anything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(logging.LogRecord(
    "", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """``text`` without URL passwords, signed-URL signatures, tokens or bearer credentials."""
    text = _SECRET_QUERY.sub(rf"\1{REDACTED}", text)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = _redacted(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, redacted, with the ``extra`` fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_redacted(v)}" for k, v in record.__dict__.items()
                          if k not in _RECORD_FIELDS and not k.startswith("_"))
        line = redact(super().format(record))
        return f"{line} {fields}" if fields else line


_LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO",
           "debug": "DEBUG"}


def config(log_format: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for stderr in ``log_format`` (json | text) at ``level``
    (the LOG_LEVEL names); quiets the libraries that log every request at INFO."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": _LEVELS[level], "handlers": ["default"]},
        "loggers": {
            "aiobotocore": {"level": "WARNING"}, "botocore": {"level": "WARNING"},
            "aiokafka": {"level": "WARNING"}, "pyvips": {"level": "WARNING"},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
        },
    }

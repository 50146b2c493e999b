"""Errors that carry their own policy.

A ``TransientError`` may succeed if tried again later (timeouts, 5xx, storage outage); a
``PermanentError`` never will (404, not an image, too large).  Every error has a stable public
``code`` that ends up in dead-letter events, job state and metrics, so callers can rely on it.
"""

from __future__ import annotations


class CoverError(Exception):
    """Base of every error the pipeline routes; ``code`` is the stable public reason code."""

    transient: bool = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PermanentError(CoverError):
    """Retrying cannot help: dead-letter at once."""

    transient = False


class TransientError(CoverError):
    """Retrying later may help; ``retry_after`` (seconds) is a hint from the origin, if any."""

    transient = True

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


# Stable reason codes (public: they appear in dead letters, job state and metric labels).
NOT_FOUND = "not_found"
HTTP_ERROR = "http_error"
UNSUPPORTED_SCHEME = "unsupported_scheme"
UNSUPPORTED_TYPE = "unsupported_type"
TOO_LARGE = "too_large"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_MANY_FRAMES = "too_many_frames"
TOO_MUCH_MEMORY = "too_much_memory"
CORRUPT_IMAGE = "corrupt_image"
TIMEOUT = "timeout"
SSRF_DENIED = "ssrf_denied"
FETCH_FAILED = "fetch_failed"
ORIGIN_UNAVAILABLE = "origin_unavailable"
STORAGE_UNAVAILABLE = "storage_unavailable"
CATALOG_UNAVAILABLE = "catalog_unavailable"
UNDECODABLE_EVENT = "undecodable_event"
INVALID_EVENT = "invalid_event"
UNKNOWN_PRESET = "unknown_preset"
INVALID_SPEC = "invalid_spec"
INTERNAL_ERROR = "internal_error"

import json
import logging
import logging.config

import pytest

from streams.logs import REDACTED, JsonFormatter, TextFormatter, config, redact


@pytest.mark.parametrize(("text", "secret"), [
    ("https://b.s3.amazonaws.com/k.jpg?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA123%2F2026"
     "&X-Amz-Signature=deadbeef42&X-Amz-Security-Token=tok9", "deadbeef42"),
    ("https://b.s3.amazonaws.com/k.jpg?X-Amz-Credential=AKIA123%2F2026", "AKIA123"),
    ("https://storage.googleapis.com/b/o?X-Goog-Signature=abc123", "abc123"),
    ("https://acct.blob.core.windows.net/c/b.jpg?sv=2024&sig=s3cr3t%2B", "s3cr3t"),
    ("https://cdn.example/img.jpg?token=t0k3n&w=100", "t0k3n"),
    ("postgresql://covers:hunter2@db:5432/catalog", "hunter2"),
    ("redis://:p4ss@redis:6379/0", "p4ss"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
])
def test_secrets_are_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_harmless_text_is_kept() -> None:
    for text in ("https://covers.example.org/B1/abc/large.jpg?w=1600&fit=cover",
                 "postgresql://db:5432/catalog", "job done in 12 ms"):
        assert redact(text) == text


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("covers.service", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_extra_fields_redacted() -> None:
    line = JsonFormatter().format(_record(
        "source fetched", job_id="be-1", book_id="B1", stage="fetch", duration_ms=12.5,
        url="https://x/k.jpg?X-Amz-Signature=sekrit", keys=["B1/a/thumb.jpg"]))
    entry = json.loads(line)
    assert entry["message"] == "source fetched" and entry["level"] == "info"
    assert entry["logger"] == "covers.service" and entry["ts"].endswith("+00:00")
    assert (entry["job_id"], entry["book_id"], entry["stage"]) == ("be-1", "B1", "fetch")
    assert entry["duration_ms"] == 12.5 and entry["keys"] == ["B1/a/thumb.jpg"]
    assert "sekrit" not in line


def test_exceptions_are_one_line_of_json() -> None:
    try:
        raise ValueError("postgresql://u:pw@h/db refused")
    except ValueError:
        import sys
        record = _record("boom")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert "ValueError" in entry["exc"] and "pw@" not in entry["exc"]


def test_text_format_appends_the_fields() -> None:
    line = TextFormatter().format(_record("job done", job_id="be-1", stage="done"))
    assert line.endswith("covers.service: job done job_id=be-1 stage=done")


def test_config_installs_the_chosen_format(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(config("json", "warn"))
    try:
        logging.getLogger("covers.test").info("hidden")
        logging.getLogger("covers.test").warning("shown", extra={"book_id": "B9"})
        logging.getLogger("pyvips").warning("VIPS: shown too")
        logging.getLogger("aiokafka").info("quiet library")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": [], "level": "WARNING"}})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["message"], e.get("book_id")) for e in lines] == [
        ("shown", "B9"), ("VIPS: shown too", None)]

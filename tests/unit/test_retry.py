import struct
from datetime import UTC, datetime

import pytest

from streams import retry
from streams.settings import ConfigError, load


def test_history_travels_in_the_headers() -> None:
    first = retry.history((("trace", b"t1"),), "book_enriched", 3, 42, 1_700_000_000.5)
    assert first == retry.History(0, None, "book_enriched", 3, 42, 1_700_000_000.5)
    failed_at = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    headers = retry.retry_headers(first, 1, failed_at, 1_800_000_000.25, "timeout",
                                  retry.user_headers((("trace", b"t1"),)))
    assert headers[0] == ("trace", b"t1")
    # Read back on the retry topic (its own partition and offset do not matter).
    again = retry.history(headers, "cover_retry_1", 0, 7, 1_800_000_000.0)
    assert again == retry.History(1, failed_at, "book_enriched", 3, 42, 1_700_000_000.5,
                                  due=1_800_000_000.25)
    assert retry.original_topic(headers, "cover_retry_1") == "book_enriched"
    assert retry.user_headers(headers) == (("trace", b"t1"),)


def test_a_replay_starts_afresh_with_its_original_time() -> None:
    headers = ((retry.REPLAYED_FROM, b"0:12"), (retry.ORIGINAL_TIMESTAMP, b"1700000000500"))
    assert retry.history(headers, "book_enriched", 1, 99, 1_800_000_000.0) == retry.History(
        0, None, "book_enriched", 1, 99, 1_700_000_000.5)


def test_mangled_headers_start_afresh() -> None:
    headers = ((retry.ATTEMPTS, b"two"), (retry.ORIGINAL_TOPIC, b"book_enriched"))
    assert retry.history(headers, "cover_retry_2", 1, 5, None).attempts == 0


def test_headers_may_come_as_a_mapping() -> None:
    assert retry.normalize({"a": b"1"}) == (("a", b"1"),)
    assert retry.normalize(None) == ()
    assert retry.original_topic({retry.ORIGINAL_TOPIC: b"cover_requested"}, "x") == (
        "cover_requested")


def test_dead_letter_headers_use_spring_kafka_encoding() -> None:
    past = retry.History(3, None, "book_enriched", 5, 2**40, 1_700_000_000.123)
    headers = dict(retry.dlt_headers(past, "processors.errors.TransientError", "timeout: slow",
                                     "book-covers"))
    assert headers["kafka_dlt-original-topic"] == b"book_enriched"
    assert struct.unpack(">i", headers["kafka_dlt-original-partition"]) == (5,)
    assert struct.unpack(">q", headers["kafka_dlt-original-offset"]) == (2**40,)
    assert struct.unpack(">q", headers["kafka_dlt-original-timestamp"]) == (1_700_000_000_123,)
    assert headers["kafka_dlt-exception-fqcn"] == b"processors.errors.TransientError"
    assert headers["kafka_dlt-original-consumer-group"] == b"book-covers"


@pytest.mark.parametrize(("text", "delays"), [
    ("10,60,600", (10.0, 60.0, 600.0)), ("", ()), (" 0.5, 2 ", (0.5, 2.0))])
def test_delays(text: str, delays: tuple[float, ...]) -> None:
    assert retry.parse_delays(text) == delays
    assert retry.tier_topics("cover_retry", delays) == [
        f"cover_retry_{n}" for n in range(1, len(delays) + 1)]


@pytest.mark.parametrize("text", ["10,-1", "60,10", "ten", "0"])
def test_bad_delays_name_the_variable(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_DELAYS_SEC", text)
    with pytest.raises(ConfigError, match="RETRY_DELAYS_SEC"):
        load()

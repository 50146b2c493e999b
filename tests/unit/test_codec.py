import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams import codec, records

NOW = datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=UTC)

SAMPLES = [
    (codec.BOOK_ENRICHED, records.BookEnriched(
        "B1", "https://example.org/c.jpg", "Title", ("A", "B"), "978", None, {"lang": "en"})),
    (codec.BOOK_ENRICHED, records.BookEnriched("B2")),
    (codec.COVER_REQUESTED, records.CoverRequested(
        "job-1", "B1", "https://example.org/c.png", "cover", "https://cb.example/x", NOW)),
    (codec.COVER_PROCESSED, records.CoverProcessed(
        "job-1", "B1", "https://example.org/c.jpg", "ab" * 32, "jpeg", 1000, 1500, 12345,
        "cover", "1",
        (records.Rendition("thumb", "https://cdn/x.jpg", "B1/abab/thumb.jpg", 200, 300, "jpeg",
                           999),),
        records.Placeholder("#102030", "data:image/webp;base64,AAAA"), NOW,
        {"fetch": 1.5}, 2)),
    (codec.DEAD_LETTER, records.CoverDeadLetter(
        "not_found", "PermanentError", "404", NOW, NOW, "book_enriched", 3, 42, "job-1", "B1",
        False, 1, b"B1", b"\x00raw", "0.1.0")),
]


@pytest.mark.parametrize(("c", "record"), SAMPLES)
def test_round_trip_every_schema(c: codec.RecordCodec[object], record: object) -> None:
    assert c.decode(c.encode(record)) == record


@pytest.mark.parametrize(("c", "record"), SAMPLES)
def test_confluent_framing_is_read(c: codec.RecordCodec[object], record: object) -> None:
    framed = b"\x00" + (17).to_bytes(4, "big") + c.encode(record)
    assert c.decode(framed) == record


def test_json_fallback_ignores_unknown_fields() -> None:
    raw = json.dumps({"book_id": "B9", "cover_image_url": "https://x/y.jpg",
                      "publisher": "Penguin", "page_count": 300}).encode()
    record = codec.BOOK_ENRICHED.decode(raw)
    assert record == records.BookEnriched("B9", "https://x/y.jpg")


def test_missing_or_null_cover_url_is_not_an_error() -> None:
    assert codec.BOOK_ENRICHED.decode(b'{"book_id": "B1"}').cover_image_url is None
    assert codec.BOOK_ENRICHED.decode(
        b'{"book_id": "B1", "cover_image_url": null}').cover_image_url is None


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe garbage", b'{"title": "no id"}', b"[1, 2]",
                                 b'{"book_id": 7}', b"{not json"])
def test_garbage_raises_decode_error(raw: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.BOOK_ENRICHED.decode(raw)


def test_trailing_bytes_are_rejected() -> None:
    data = codec.BOOK_ENRICHED.encode(records.BookEnriched("B1")) + b"\x01\x02"
    with pytest.raises(codec.DecodeError, match="trailing"):
        codec.BOOK_ENRICHED.decode(data)


def test_plain_avro_starting_with_a_null_branch_is_not_taken_for_confluent() -> None:
    record = records.CoverDeadLetter("undecodable_event", "PermanentError", "bad", NOW, NOW,
                                     "t", 0, 1)  # job_id None: the encoding starts with 0x00
    data = codec.DEAD_LETTER.encode(record)
    assert data[0] == 0
    assert codec.DEAD_LETTER.decode(data) == record


def test_empty_book_id_is_refused() -> None:
    with pytest.raises(codec.DecodeError, match="book_id is empty"):
        codec.BOOK_ENRICHED.decode(codec.BOOK_ENRICHED.encode(records.BookEnriched("")))


OUTPUTS = '[{"name": "square", "width": 300, "height": 300, "fit": "cover", "format": "webp"}]'


def test_custom_outputs_travel_in_both_input_events() -> None:
    for c, record in ((codec.BOOK_ENRICHED, records.BookEnriched("B1", "https://x/c.jpg",
                                                                  outputs=OUTPUTS)),
                      (codec.COVER_REQUESTED, records.CoverRequested("j", "B1", "https://x/c.jpg",
                                                                     outputs=OUTPUTS))):
        assert c.decode(c.encode(record)) == record


def test_json_events_may_carry_outputs_inline() -> None:
    from processors.spec import parse_outputs

    raw = {"book_id": "B1", "cover_image_url": "https://x/c.jpg", "outputs": json.loads(OUTPUTS)}
    record = codec.BOOK_ENRICHED.decode(json.dumps(raw).encode())
    assert parse_outputs(record.outputs).renditions[0].fit == "cover"
    assert parse_outputs(record.outputs) == parse_outputs(OUTPUTS)


HISTORY = sorted((codec.SCHEMA_DIR / "history").glob("*.avsc"))


@pytest.mark.parametrize("old_path", HISTORY, ids=lambda p: p.stem)
def test_every_schema_stays_compatible_with_its_previous_version(old_path: Path) -> None:
    """Full compatibility: new readers read old events, and old readers read new ones."""
    import fastavro

    name = old_path.stem.split(".")[0]
    old = fastavro.parse_schema(json.loads(old_path.read_text()))
    new = codec.parsed_schema(name)
    for c, record in SAMPLES:
        if c.schema_name != name:
            continue
        data = codec._to_avro(record)
        for writer, reader in ((old, new), (new, old)):
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, writer, {k: v for k, v in data.items()
                                                        if k in _fields(writer)})
            buffer.seek(0)
            read = fastavro.schemaless_reader(buffer, writer, reader)
            assert read["book_id"] == data["book_id"]


def _fields(schema: Any) -> set[str]:
    return {f["name"] for f in schema["fields"]}

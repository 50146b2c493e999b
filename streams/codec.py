"""The serialization boundary: Avro (plain or Confluent-framed) and JSON bytes <-> typed records.

Agents never see bytes. ``InputSchema`` decodes each input message by its topic and never
raises: whatever cannot be decoded arrives as an ``Undecodable`` record for the dead letters.
"""

from __future__ import annotations

import dataclasses
import io
import json
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import fastavro
import faust
from faust.types import AppT
from faust.types.tuples import Message

from streams import records, retry

# schemas/ of the source tree, or its copy inside an installed wheel (streams/schemas).
SCHEMA_DIR = next(d for d in (Path(__file__).resolve().parent / "schemas",
                              Path(__file__).resolve().parent.parent / "schemas") if d.is_dir())
CONFLUENT_MAGIC = 0  # first byte of the Confluent wire format, then a 4-byte schema id

R = TypeVar("R")


@cache
def parsed_schema(name: str) -> Any:
    """The parsed Avro schema ``schemas/<name>.avsc``."""
    return fastavro.parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()))


class DecodeError(ValueError):
    """The bytes are not a valid event of the expected schema."""


class RecordCodec(Generic[R]):
    """Avro encoding of one record type; decoding also accepts Confluent framing and JSON."""

    def __init__(self, schema_name: str, record_type: type[R]) -> None:
        self.schema_name = schema_name
        self.record_type = record_type
        self.schema = parsed_schema(schema_name)
        self._hints = typing.get_type_hints(record_type)
        self._fields = {f.name for f in dataclasses.fields(record_type)}  # type: ignore[arg-type]

    def encode(self, record: R) -> bytes:
        """Plain (schemaless) Avro bytes of ``record``."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, _to_avro(record))
        return buf.getvalue()

    def decode(self, data: bytes) -> R:
        """A typed record from Avro, Confluent-framed Avro or a JSON object; unknown JSON fields
        are ignored. Raises DecodeError."""
        if not data:
            raise DecodeError("empty message")
        if data[:1] == b"{":
            try:
                raw = json.loads(data)
            except ValueError as exc:
                raise DecodeError(f"not a valid {self.schema_name} event: {exc}") from None
            if not isinstance(raw, dict):
                raise DecodeError("JSON event is not an object")
            return self.from_dict(raw)
        # Plain Avro first: its first byte may be 0 too (a null union branch), so the Confluent
        # reading (magic byte, 4-byte schema id) is only the fallback, and both must use up
        # every byte to count.
        try:
            return self.from_dict(self._read_avro(data))
        except DecodeError as plain_error:
            if data[0] != CONFLUENT_MAGIC or len(data) <= 5:
                raise
            try:
                return self.from_dict(self._read_avro(data[5:]))
            except DecodeError:
                raise plain_error from None

    def _read_avro(self, data: bytes) -> dict[str, Any]:
        buf = io.BytesIO(data)
        try:
            raw = fastavro.schemaless_reader(buf, self.schema, None)
        except Exception as exc:  # fastavro raises many kinds for malformed input
            raise DecodeError(f"not a valid {self.schema_name} event: {exc!r}") from None
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(raw, dict):
            raise DecodeError("not a record")
        return raw

    def from_dict(self, raw: dict[str, Any]) -> R:
        """Build the record from a plain dict, checking required fields and types."""
        known = {k: v for k, v in raw.items() if k in self._fields}
        if isinstance(known.get("outputs"), list):  # JSON events may carry the specs inline
            known["outputs"] = json.dumps(known["outputs"])
        for name in ("book_id", "job_id"):
            if known.get(name) == "":
                raise DecodeError(f"{self.schema_name}: {name} is empty")
        try:
            record = self.record_type(**{k: _coerce(self._hints[k], v) for k, v in known.items()})
        except TypeError as exc:
            raise DecodeError(f"{self.schema_name}: {exc}") from None
        return record


def _coerce(hint: Any, value: Any) -> Any:
    """Shape decoded Avro/JSON values into the dataclass field types (tuples, nested records)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _coerce(args[0], value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise DecodeError(f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v) for v in value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = typing.get_type_hints(hint)
        return hint(**{k: _coerce(hints[k], v)  # type: ignore[operator]
                       for k, v in value.items() if k in hints})
    if hint is str and not isinstance(value, str):
        raise DecodeError(f"expected a string, got {type(value).__name__}")
    return value


def _to_avro(record: Any) -> Any:
    if dataclasses.is_dataclass(record):
        return {f.name: _to_avro(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, tuple | list):
        return [_to_avro(v) for v in record]
    return record


BOOK_ENRICHED = RecordCodec("book_enriched", records.BookEnriched)
COVER_REQUESTED = RecordCodec("cover_requested", records.CoverRequested)
COVER_PROCESSED = RecordCodec("cover_processed", records.CoverProcessed)
DEAD_LETTER = RecordCodec("cover_dead_letter", records.CoverDeadLetter)


class FaustCodec(faust.Codec):
    """Adapts a ``RecordCodec`` to Faust's codec interface for output topics."""

    def __init__(self, codec: RecordCodec[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.codec = codec

    def _dumps(self, obj: Any) -> bytes:
        return self.codec.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.codec.decode(s)


class InputSchema(faust.Schema):  # type: ignore[type-arg]
    """Decodes each input message with the codec of the topic it came from; never raises."""

    def __init__(self, codecs_by_topic: dict[str, RecordCodec[Any]]) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw", allow_empty=True)
        self.codecs_by_topic = codecs_by_topic

    def loads_value(self, app: AppT, message: Message, *, loads: Any = None,
                    serializer: Any = None) -> Any:
        return self.decode_value(message.topic, message.headers, message.value)

    def decode_value(self, topic: str, headers: retry.AnyHeaders, value: bytes | None) -> Any:
        """A typed input record, or ``Undecodable`` with the reason."""
        codec = self.codecs_by_topic.get(retry.original_topic(headers, topic))
        if codec is None:
            return records.Undecodable(f"no codec for topic {topic!r}")
        if value is None:
            return records.Undecodable("empty message")
        try:
            return codec.decode(value)
        except DecodeError as exc:
            return records.Undecodable(str(exc))

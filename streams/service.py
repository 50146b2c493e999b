"""The cover service: plain async functions that take their dependencies as arguments.

``handle`` is the whole job of the agent for one input: it never raises, and every input ends
as exactly one outcome -- a ``cover_processed`` event, a dead letter, or "nothing to do".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from processors import errors
from processors.render import RenderResult, render
from processors.spec import Limits, Preset, SpecError, parse_outputs
from streams import __version__, metrics, records, retry
from streams.catalog import version_of
from streams.fetch import Fetched, Fetcher
from streams.jobstate import JobState, view
from streams.store import ObjectStore, object_key
from streams.webhooks import Webhooks

log = logging.getLogger("covers.service")

MAX_RETRY_AFTER = 3600.0  # the longest wait an origin's Retry-After header can ask for


@dataclass(frozen=True)
class Source:
    """Where an input event came from (for dead letters and replays)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # the input's Kafka timestamp (s): orders a book's covers
    headers: retry.Headers = ()


class CoverTable(Protocol):
    """The ``catalog`` table: the latest cover record per book id."""

    def get(self, key: str, /) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


class Outputs(Protocol):
    """Output topics; each send returns only once the broker has the event."""

    async def processed(self, key: str, record: records.CoverProcessed) -> None: ...

    async def dead_letter(self, key: str | None, record: records.CoverDeadLetter,
                          headers: retry.Headers = ()) -> None: ...

    async def retry(self, tier: int, key: bytes | None, value: bytes | None,
                    headers: retry.Headers) -> None:
        """The input's bytes to retry tier ``tier`` (1-based)."""
        ...


@dataclass
class Deps:
    fetcher: Fetcher
    store: ObjectStore
    jobs: JobState
    render_pool: Executor
    limits: Limits
    presets: dict[str, Preset]
    webhooks: Webhooks | None = None
    retry_delays: tuple[float, ...] = ()  # seconds before each retry tier; () = no retries
    group: str = ""  # the consumer group, for the dead letters' headers

    async def close(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.close()
        await self.fetcher.close()
        await self.store.close()
        await self.jobs.close()
        self.render_pool.shutdown(wait=True)


def job_for(value: records.BookEnriched | records.CoverRequested) -> records.CoverJob | None:
    """The job an input asks for; None when a book has no cover URL."""
    if isinstance(value, records.CoverRequested):
        return records.CoverJob(value.job_id, value.book_id, value.image_url, value.preset,
                                value.callback_url, value.outputs, force=value.force)
    if not value.cover_image_url:
        return None
    # Deterministic: the same book, URL and preset is the same job, however often it is sent.
    digest = hashlib.sha256(
        f"{value.book_id}\0{value.cover_image_url}\0{value.preset or ''}\0{value.outputs or ''}"
        .encode()).hexdigest()
    return records.CoverJob(f"be-{digest[:24]}", value.book_id, value.cover_image_url,
                            value.preset, outputs=value.outputs, force=value.force)


async def handle(value: Any, source: Source, deps: Deps, outputs: Outputs,
                 table: CoverTable) -> str:
    """Process one decoded input; returns the outcome: "processed", "duplicate", "skipped",
    "retry" or a dead letter's reason code. Never raises."""
    metrics.IN_FLIGHT.inc()
    try:
        outcome, reason = await _handle(value, source, deps, outputs, table)
    finally:
        metrics.IN_FLIGHT.dec()
    metrics.JOBS.labels(outcome, reason).inc()
    return reason if outcome == "dead_letter" else outcome


async def _handle(value: Any, source: Source, deps: Deps, outputs: Outputs,
                  table: CoverTable) -> tuple[str, str]:
    job: records.CoverJob | None = None
    past = retry.history(source.headers, source.topic, source.partition, source.offset,
                         source.timestamp)
    attempt = past.attempts + 1
    try:
        if isinstance(value, records.Undecodable):
            raise errors.PermanentError(errors.UNDECODABLE_EVENT, value.reason)
        job = job_for(value)
        if job is None:
            log.info("no cover url, skipped", extra={"book_id": value.book_id,
                                                     "stage": "skipped"})
            return "skipped", ""
        _log_job(job, "received", "job received", url=job.image_url, topic=source.topic,
                 partition=source.partition, offset=source.offset, attempt=attempt)
        preset = _preset(job, deps.presets)
        current = table.get(job.book_id)
        if not job.force and _already_done(current, job, preset):
            _log_job(job, "duplicate", "already done, nothing to do")
            await deps.jobs.set(job.job_id, "done", book_id=job.book_id,
                                outputs=current["renditions"])
            return "duplicate", ""
        await deps.jobs.set(job.job_id, "processing", book_id=job.book_id, attempts=attempt)
        with _timed(preset):
            # A first attempt at a cover not done before writes without a HEAD per object.
            fresh = attempt == 1 and not job.force and current is None
            processed = await process(job, preset, deps, attempt, fresh)
        row = catalog_record(processed, past.timestamp)
        current = table.get(job.book_id)  # again: another event of the book may have finished
        if current is None or version_of(row) > version_of(current) or (
                job.force and version_of(row) == version_of(current)):
            table[job.book_id] = row  # the changelog carries it to the catalog database
        else:
            _log_job(job, "catalog", "a newer cover is already in the catalog")
        await outputs.processed(job.book_id, processed)
        await finish(deps, job, "done", attempts=attempt, outputs=row["renditions"],
                     placeholder=row["placeholder"])
        _log_job(job, "done", "job done", duration_ms=round(sum(processed.timings_ms.values()), 2),
                 timings_ms=processed.timings_ms, attempt=attempt)
        return "processed", ""
    except Exception as exc:  # every failure is routed; nothing escapes the agent loop
        error = exc if isinstance(exc, errors.CoverError) else errors.PermanentError(
            errors.INTERNAL_ERROR, repr(exc))
        if not isinstance(exc, errors.CoverError):
            log.exception("unexpected failure", extra={"topic": source.topic,
                                                       "partition": source.partition,
                                                       "offset": source.offset})
        first_failure = past.first_failure or records.utcnow()
        if job is not None and error.transient and attempt <= len(deps.retry_delays):
            await _retry(error, job, source, past, attempt, first_failure, deps, outputs)
            return "retry", error.code
        await _dead_letter(error, job, source, past, attempt, first_failure, deps, outputs)
        return "dead_letter", error.code


async def process(job: records.CoverJob, preset: Preset, deps: Deps, attempt: int = 1,
                  fresh: bool = False) -> records.CoverProcessed:
    """Fetch, render and store one cover; raises CoverError."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fetched = await deps.fetcher.fetch(job.image_url)
    timings["fetch"] = _ms_since(started)
    _log_job(job, "fetch", "source fetched", duration_ms=timings["fetch"],
             bytes=len(fetched.data))

    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    result: RenderResult = await loop.run_in_executor(
        deps.render_pool, render, fetched.data, preset, deps.limits)
    timings["render"] = _ms_since(started)
    _log_job(job, "render", "renditions rendered", duration_ms=timings["render"],
             source=f"{result.source_width}x{result.source_height} {result.source_format}",
             renditions=len(result.renditions))

    started = time.perf_counter()
    renditions, urls_expire_at = await store_renditions(job, preset, fetched, result,
                                                        deps.store, fresh)
    timings["store"] = _ms_since(started)
    _log_job(job, "store", "renditions stored", duration_ms=timings["store"],
             keys=[r.key for r in renditions])
    _observe(preset, fetched, result, {"fetch": timings["fetch"], **result.timings_ms,
                                       "store": timings["store"]})
    return records.CoverProcessed(
        job_id=job.job_id, book_id=job.book_id, source_url=job.image_url,
        source_sha256=fetched.sha256, source_format=result.source_format,
        source_width=result.source_width, source_height=result.source_height,
        source_bytes=len(fetched.data), preset=preset.name, preset_version=preset.version,
        renditions=renditions,
        placeholder=records.Placeholder(dominant_color=result.placeholder.dominant_color,
                                        lqip=result.placeholder.lqip,
                                        blurhash=result.placeholder.blurhash),
        processed_at=records.utcnow(), timings_ms=timings, attempts=attempt,
        urls_expire_at=urls_expire_at)


async def store_renditions(
        job: records.CoverJob, preset: Preset, fetched: Fetched, result: RenderResult,
        store: ObjectStore, fresh: bool = False,
) -> tuple[tuple[records.Rendition, ...], datetime | None]:
    """Upload every rendition; returns them and when the first of their URLs expires."""
    metadata = {"book-id": job.book_id, "source-sha256": fetched.sha256,
                "source-url-sha256": hashlib.sha256(job.image_url.encode()).hexdigest(),
                "preset": preset.name, "preset-version": preset.version}
    stored = await asyncio.gather(*(
        store.put(object_key(job.book_id, fetched.sha256, preset.name, preset.version, r.name,
                             r.extension), r.data, r.content_type, metadata, fresh)
        for r in result.renditions))
    renditions = tuple(
        records.Rendition(name=r.name, url=s.url, key=s.key, width=r.width, height=r.height,
                          format=r.format, bytes=len(r.data))
        for r, s in zip(result.renditions, stored, strict=True))
    expiries = [s.expires_at for s in stored if s.expires_at is not None]
    return renditions, min(expiries, default=None)


def catalog_record(processed: records.CoverProcessed,
                   event_time: float | None = None) -> dict[str, Any]:
    """The catalog's cover record of a book (JSON-ready): the table value and the sink row.

    Its ``version`` is the input event's time in ms (a replay keeps the original's), so an
    older request finishing later never replaces the cover of a newer one."""
    when = processed.processed_at.timestamp() if event_time is None else event_time
    renditions = [asdict(r) for r in processed.renditions]
    # Ties (a small source caps several renditions at one width) go to the later, larger spec.
    ranked = sorted(enumerate(processed.renditions), key=lambda p: (p[1].width, p[0]))
    narrowest, widest = ranked[0][1], ranked[-1][1]
    return {
        "book_id": processed.book_id, "job_id": processed.job_id,
        "cover_url": widest.url, "thumbnail_url": narrowest.url, "renditions": renditions,
        "placeholder": asdict(processed.placeholder) if processed.placeholder else None,
        "source_url": processed.source_url, "source_sha256": processed.source_sha256,
        "preset": processed.preset, "preset_version": processed.preset_version,
        "version": int(when * 1000),
        "processed_at": processed.processed_at.isoformat(timespec="milliseconds"),
        "urls_expire_at": (processed.urls_expire_at.isoformat(timespec="milliseconds")
                           if processed.urls_expire_at else None),
    }


def _preset(job: records.CoverJob, presets: dict[str, Preset]) -> Preset:
    if job.outputs:
        try:
            return parse_outputs(job.outputs)
        except SpecError as exc:
            raise errors.PermanentError(errors.INVALID_SPEC, str(exc)) from None
    name = job.preset or "cover"
    if name not in presets:
        raise errors.PermanentError(errors.UNKNOWN_PRESET, f"no preset named {name!r}")
    return presets[name]


def _already_done(current: Any, job: records.CoverJob, preset: Preset) -> bool:
    return bool(current) and current.get("source_url") == job.image_url and (
        current.get("preset") == preset.name and current.get("preset_version") == preset.version
    ) and (job.job_id.startswith("be-") or current.get("job_id") == job.job_id)


async def _retry(error: errors.CoverError, job: records.CoverJob, source: Source,
                 past: retry.History, attempt: int, first_failure: datetime, deps: Deps,
                 outputs: Outputs) -> None:
    """Re-publish the input, bytes unchanged, to the retry tier of this attempt."""
    delay = deps.retry_delays[attempt - 1]
    hint = getattr(error, "retry_after", None)  # an origin's Retry-After may ask for longer
    due = time.time() + max(delay, min(hint or 0, MAX_RETRY_AFTER))
    headers = retry.retry_headers(past, attempt, first_failure, due, error.code,
                                  retry.user_headers(source.headers))
    metrics.RETRIES.labels(str(attempt), error.code).inc()
    _log_job(job, "retry", "transient failure, retrying later", reason=error.code,
             error=error.message, attempt=attempt, delay_sec=round(due - time.time(), 1))
    await outputs.retry(attempt, source.key, source.value, headers)
    await deps.jobs.set(job.job_id, "retrying", book_id=job.book_id, attempts=attempt,
                        error={"code": error.code, "message": error.message},
                        next_attempt_at=datetime.fromtimestamp(due, UTC).isoformat())


async def _dead_letter(error: errors.CoverError, job: records.CoverJob | None, source: Source,
                       past: retry.History, attempt: int, first_failure: datetime, deps: Deps,
                       outputs: Outputs) -> None:
    book_id = job.book_id if job else (source.key.decode(errors="replace") if source.key else None)
    own_headers = retry.user_headers(source.headers)
    record = records.CoverDeadLetter(
        job_id=job.job_id if job else None, book_id=book_id, reason_code=error.code,
        error_class=type(error).__name__, message=error.message[:2000],
        transient=error.transient, attempts=attempt, first_failure_at=first_failure,
        last_failure_at=records.utcnow(), source_topic=past.topic,
        source_partition=past.partition, source_offset=past.offset,
        original_key=source.key, original_value=source.value, worker_version=__version__,
        original_headers=tuple(records.Header(k, v) for k, v in own_headers),
        original_timestamp=(datetime.fromtimestamp(past.timestamp, UTC)
                            if past.timestamp is not None else None))
    metrics.DEAD_LETTERS.labels(error.code).inc()
    log.warning("dead letter", extra={
        "job_id": record.job_id, "book_id": book_id, "stage": "dead_letter",
        "reason": error.code, "error": error.message, "transient": error.transient,
        "attempt": attempt, "topic": past.topic, "partition": past.partition,
        "offset": past.offset})
    fqcn = f"{type(error).__module__}.{type(error).__qualname__}"
    await outputs.dead_letter(book_id, record, own_headers + retry.dlt_headers(
        past, fqcn, f"{error.code}: {error.message}", deps.group))
    if job is not None:
        await finish(deps, job, "failed", attempts=attempt,
                     error={"code": error.code, "message": error.message})


async def finish(deps: Deps, job: records.CoverJob, state: str, **fields: Any) -> None:
    """Record a job's final state and, when it asked for one, send its webhook."""
    await deps.jobs.set(job.job_id, state, book_id=job.book_id, **fields)
    if job.callback_url and deps.webhooks is not None:
        deps.webhooks.notify(job.callback_url, view(job.job_id, {
            "book_id": job.book_id, "state": state,
            "updated_at": records.utcnow().isoformat(), **fields}))


def _log_job(job: records.CoverJob, stage: str, message: str, **fields: Any) -> None:
    """One step of a job's lifecycle; the fields become keys of the JSON log line."""
    log.info(message, extra={"job_id": job.job_id, "book_id": job.book_id, "stage": stage,
                             **fields})


@contextlib.contextmanager
def _timed(preset: Preset) -> Iterator[None]:
    """``image_processing_duration_seconds`` of one job, labelled by its success."""
    started, success = time.perf_counter(), "false"
    try:
        yield
        success = "true"
    finally:
        metrics.IMAGE_PROCESSING_DURATION.labels(preset.name, success).observe(
            time.perf_counter() - started)


def _observe(preset: Preset, fetched: Fetched, result: RenderResult,
             stages_ms: dict[str, float]) -> None:
    for stage, ms in stages_ms.items():
        metrics.STAGE_DURATION.labels(stage).observe(ms / 1000)
    metrics.IMAGE_ORIGINAL_SIZE.labels(preset.name).observe(len(fetched.data))
    for r in result.renditions:
        metrics.IMAGE_COMPRESSED_SIZE.labels(preset.name, r.name).observe(len(r.data))
        metrics.IMAGE_COMPRESSION_RATIO.labels(preset.name, r.name).observe(
            len(fetched.data) / max(1, len(r.data)))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)

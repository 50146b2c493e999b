"""Handing outputs to Kafka: the retry loop never gives up on its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.app import deliver


class FlakyTopic:
    """A topic whose first ``failures`` sends fail (as during a broker outage)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[bytes | None, Any]] = []
        self.attempts = 0

    def get_topic_name(self) -> str:
        return "cover_processed"

    async def send(self, key: bytes | None, value: Any,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        self.attempts += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.attempts <= self.failures:
            done.set_exception(ConnectionError("broker unreachable"))
        else:
            self.sent.append((key, value))
            done.set_result(None)
        return done


async def test_outputs_are_retried_past_any_fixed_budget() -> None:
    topic = FlakyTopic(failures=25)
    await deliver(topic, "B1", {"v": 1}, delays=(0.001, 0.002))  # type: ignore[arg-type]
    assert topic.attempts == 26 and topic.sent == [(b"B1", {"v": 1})]


async def test_a_stop_cancels_the_wait_without_sending() -> None:
    topic = FlakyTopic(failures=10**6)
    waiting = asyncio.create_task(deliver(topic, None, {}, delays=(0.001,)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert topic.sent == [] and topic.attempts > 3

"""A fetch loop whose connection nats-py has marked reconnecting, before nats-py has called
the disconnected callback that tells the process's BrokerPresence (its reconnect task first
waits for the old socket to close), must still give the event loop its turns: otherwise that
reconnect task never runs, and the whole process stops (no request, no event, no /ready)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from app.split.nats import presence
from app.split.nats_transport import NatsTransport, _Binding

GIVE_UP_SECONDS = 5.0


def test_a_connection_reconnecting_before_the_presence_knows_does_not_stall_the_loop() -> None:
    url = "nats://127.0.0.1:1"  # never connected: only the flags below are read
    transport = NatsTransport(url)
    assert not presence(url).away  # nats-py has not told it yet
    transport._nc = SimpleNamespace(is_reconnecting=True)  # type: ignore[assignment]
    binding = _Binding("orders", "Pinged", lambda _: asyncio.Future(), "s.Pinged", "orders")
    turns: list[int] = []

    async def main() -> None:
        receiving = asyncio.create_task(transport._receive_forever(binding))
        for turn in range(3):
            await asyncio.sleep(0.01)  # never returns if the fetch loop keeps the loop
            turns.append(turn)
        transport._stopping = True
        await asyncio.wait_for(receiving, GIVE_UP_SECONDS)

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # told to the test below
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GIVE_UP_SECONDS)
    stalled = thread.is_alive()
    transport._stopping = True  # ends a spinning loop, so the thread does not outlive us
    thread.join(GIVE_UP_SECONDS)
    assert not stalled, f"the event loop got no turn in {GIVE_UP_SECONDS} s (turns: {turns})"
    assert "error" not in outcome, outcome
    assert turns == [0, 1, 2]

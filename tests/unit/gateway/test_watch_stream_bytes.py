"""The watch's stream writes each observation itself (docs/decisions/0034-page-cost.md): the
bytes must be exactly what Litestar's ServerSentEventMessage writes, whatever the
observation holds (an error with line breaks, any text), and a batch is its messages in
order, read back by a text/event-stream parser as the same observations."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from litestar.response.sse import ServerSentEventMessage

from app.bus.watch import DEAD_LETTERED, FAILED, HANDLED, PARKED, PUBLISHED, REQUEST, Observation
from app.gateway.watch import _batch, _encoded

KINDS = st.sampled_from([REQUEST, PUBLISHED, HANDLED, FAILED, DEAD_LETTERED, PARKED])
TEXT = st.text(max_size=40)  # any code point: line breaks, quotes, non-ASCII
MAYBE_TEXT = st.none() | TEXT
MS = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)

observations = st.builds(
    Observation,
    kind=KINDS,
    seq=st.integers(min_value=1, max_value=2**53),
    at=st.floats(min_value=0, max_value=4e12, allow_nan=False),
    process=TEXT,
    correlation_id=MAYBE_TEXT,
    type=MAYBE_TEXT,
    consumer=MAYBE_TEXT,
    aggregate_id=MAYBE_TEXT,
    attempt=st.none() | st.integers(min_value=1, max_value=100),
    ms=MS,
    hop_ms=MS,
    error=MAYBE_TEXT,
)


def litestar_bytes(observation: Observation) -> bytes:
    message = ServerSentEventMessage(
        data=msgspec.json.encode(observation).decode(), event=observation.kind, id=observation.seq
    )
    return message.encode()


def parsed(stream: bytes) -> list[tuple[str, str, str]]:
    """(id, event, data) of each message, as an EventSource reads them."""
    messages = []
    for block in stream.decode().split("\r\n\r\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.split("\r\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        messages.append((fields["id"][0], fields["event"][0], "\n".join(fields["data"])))
    return messages


@given(observations)
def test_an_observation_is_written_as_litestar_writes_it(observation: Observation) -> None:
    assert _encoded(observation) == litestar_bytes(observation)


@given(st.lists(observations, min_size=1, max_size=5))
def test_a_batch_reads_back_as_its_observations_in_order(batch: list[Observation]) -> None:
    written = _batch(batch).encode()
    assert written == b"".join(litestar_bytes(o) for o in batch)
    read = parsed(written)
    assert [(int(i), kind) for i, kind, _ in read] == [(o.seq, o.kind) for o in batch]
    assert [msgspec.json.decode(data, type=Observation) for _, _, data in read] == batch

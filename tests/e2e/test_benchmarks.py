"""GET /api/benchmarks (issue 14, point 7): the hop's figures of the last bench/ run, as
bench/bus.py --record and bench/split.py --record wrote them into app/gateway/benchmarks.json,
for any signed-in user."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.gateway.benchmarks import FIGURES, recorded
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def one(anyio_backend: str) -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true")) as seams:
        yield seams


def test_the_committed_figures_hold_the_hop_in_process_and_over_nats() -> None:
    figures = recorded()

    assert set(figures.hops) == {"in_process", "nats"}
    for transport, hop in figures.hops.items():
        assert hop.transport == transport
        assert 0 < hop.p50_ms <= hop.p99_ms
        assert hop.events_per_second > 0
        assert hop.baseline is not None
        assert hop.commit and hop.recorded_at and hop.cores >= 1
    assert figures.hops["nats"].p50_ms > figures.hops["in_process"].p50_ms  # the boundary's price


def test_without_a_figures_file_there_are_no_figures(tmp_path: Path) -> None:
    assert recorded(tmp_path / "benchmarks.json").hops == {}


async def test_a_signed_in_user_reads_the_figures_as_recorded(one: Seams) -> None:
    user = await one.register("Bea")

    response = await one.client.get("/api/benchmarks", headers=user["headers"])

    assert response.status_code == 200, response.text
    assert response.json() == json.loads(FIGURES.read_text())


async def test_without_a_token_the_figures_are_a_401(one: Seams) -> None:
    response = await one.client.get("/api/benchmarks", headers={"Authorization": ""})

    assert response.status_code == 401


async def test_the_figures_are_documented(one: Seams) -> None:
    spec = await one.get("/schema/openapi.json")

    assert spec["paths"]["/api/benchmarks"]["get"]["summary"]

"""Where a module process says it can be reached (APP_ADVERTISE_URL, else its host and port):
bound to every interface, the address on its route to the broker, never a loopback another
host cannot reach (issue 15, point 7; docs/decisions/0033)."""

from __future__ import annotations

import pytest

from app.kernel.networks import address_toward
from app.kernel.settings import Settings, servers_of


def test_an_advertised_url_wins() -> None:
    settings = Settings.from_env(
        {}, host="0.0.0.0", port=8101, advertise_url="http://payments-1.internal:8101/"
    )
    assert settings.reachable_url == "http://payments-1.internal:8101"


def test_a_named_host_is_announced_as_it_is() -> None:
    assert Settings.from_env({}, host="10.0.0.7", port=8101).reachable_url == "http://10.0.0.7:8101"
    assert Settings.from_env({}, host="::1", port=8101).reachable_url == "http://[::1]:8101"


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_every_interface_is_announced_at_the_address_facing_the_broker(wildcard: str) -> None:
    # 192.0.2.0/24 is TEST-NET-1: routed by the default route, if any, never reached.
    broker = "nats://192.0.2.10:4222,nats://192.0.2.11:4222"
    expected = address_toward("nats://192.0.2.10:4222") or "127.0.0.1"
    settings = Settings.from_env({}, host=wildcard, port=8101, bus_url=broker)
    assert settings.reachable_url == f"http://{expected}:8101"
    on_loopback = Settings.from_env({}, host=wildcard, port=8101, bus_url="nats://127.0.0.1:1")
    assert on_loopback.reachable_url == "http://127.0.0.1:8101"


def test_the_broker_is_the_first_server_as_the_transport_reads_the_list() -> None:
    # One reading of APP_BUS_URL for the address facing the broker and for the connection
    # (app/split/nats.py): a space around a comma is no part of a server's URL.
    broker = "nats://192.0.2.10:4222 , nats://192.0.2.11:4222,"
    assert servers_of(broker) == ["nats://192.0.2.10:4222", "nats://192.0.2.11:4222"]
    expected = address_toward("nats://192.0.2.10:4222") or "127.0.0.1"
    settings = Settings.from_env({}, host="0.0.0.0", port=8101, bus_url=broker)
    assert settings.reachable_url == f"http://{expected}:8101"


def test_in_process_every_interface_is_loopback() -> None:
    assert Settings.from_env({}, host="0.0.0.0", port=8000).reachable_url == (
        "http://127.0.0.1:8000"
    )


@pytest.mark.parametrize("url", ["memory://", "", "nats://"])
def test_no_host_no_route(url: str) -> None:
    assert address_toward(url) is None

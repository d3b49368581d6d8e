"""The plan of `python -m app cluster --brokers N` (docs/decisions/0033): N clustered
nats-servers, each with its own ports and store, routed to every other one; every process
told all of them and to replicate the stream N ways."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.kernel.settings import Settings
from app.split.cluster import ClusterError, Plan, plan
from app.split.nats import servers_of

MODULES = ("users", "orders", "payments", "notifications")


def a_plan(tmp_path: Path, brokers: int = 1, nats_url: str | None = None) -> Plan:
    return plan(
        Settings.from_env({}, data_dir=str(tmp_path)),
        MODULES,
        replicas={},
        nats_url=nats_url,
        secret_key="k" * 48,
        nats_server="/usr/sbin/nats-server",
        python=sys.executable,
        brokers=brokers,
    )


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_three_brokers_are_clustered_with_their_own_ports_and_stores(tmp_path: Path) -> None:
    the_plan = a_plan(tmp_path, 3)

    brokers = the_plan.brokers
    assert [b.name for b in brokers] == ["nats.1", "nats.2", "nats.3"]
    assert the_plan.nats is brokers[0] and the_plan.nats_log == brokers[0].log
    ports = [p for b in brokers for p in (b.port, b.monitor_port, option(b.argv, "--cluster"))]
    assert len(set(ports)) == 9
    assert len({option(b.argv, "-sd") for b in brokers}) == 3
    assert len({b.log for b in brokers}) == 3
    for broker in brokers:
        own = option(broker.argv, "--cluster")
        routes = option(broker.argv, "--routes").split(",")
        others = {option(b.argv, "--cluster") for b in brokers} - {own}
        assert set(routes) == others
        assert option(broker.argv, "--cluster_name") == "seams"
        assert option(broker.argv, "-a") == "127.0.0.1"
    assert servers_of(the_plan.nats_url) == [f"nats://127.0.0.1:{b.port}" for b in brokers]
    for child in the_plan.children:
        assert child.env["APP_BUS_URL"] == the_plan.nats_url
        assert child.env["APP_NATS_REPLICAS"] == "3"


def test_one_broker_is_the_plain_private_server(tmp_path: Path) -> None:
    the_plan = a_plan(tmp_path)

    [broker] = the_plan.brokers
    assert broker.name == "nats" and "--cluster" not in broker.argv
    assert all("APP_NATS_REPLICAS" not in child.env for child in the_plan.children)


@pytest.mark.parametrize("count", [0, 2, 4, 6])
def test_a_broker_count_without_a_majority_to_spare_is_refused(tmp_path: Path, count: int) -> None:
    with pytest.raises(ClusterError, match=rf"--brokers {count}: 1, 3 or 5"):
        a_plan(tmp_path, count)


def test_brokers_with_a_url_of_ones_own_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="--brokers starts private brokers"):
        a_plan(tmp_path, 3, nats_url="nats://127.0.0.1:4222")


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("nats://a:4222", ["nats://a:4222"]),
        ("nats://a:1, nats://b:2,nats://c:3", ["nats://a:1", "nats://b:2", "nats://c:3"]),
        ("nats://a:1,", ["nats://a:1"]),
    ],
)
def test_a_bus_url_names_one_server_or_several(url: str, servers: list[str]) -> None:
    assert servers_of(url) == servers

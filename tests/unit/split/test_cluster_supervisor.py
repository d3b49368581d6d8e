"""The pure parts of `python -m app cluster`'s supervision: when a process that died is
started again, what its exit is called, the status a crash gives, and where --ephemeral
keeps the cluster's files."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import pytest

from app.kernel.settings import Settings
from app.split.cluster import (
    Backoff,
    ClusterError,
    describe_exit,
    exit_status,
    plan,
    throwaway_data_dir,
)

MODULES = ["users", "orders", "payments", "notifications"]


def delays(backoff: Backoff, uptimes: list[float]) -> list[float]:
    """The waits before each restart, for exits after these uptimes in a row."""
    streak = 0
    waits = []
    for uptime in uptimes:
        wait, streak = backoff.next(streak, uptime)
        waits.append(wait)
    return waits


def test_a_process_that_keeps_dying_waits_twice_as_long_each_time_up_to_ten_seconds() -> None:
    assert delays(Backoff(), [1.0] * 8) == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_a_process_that_stayed_up_thirty_seconds_is_restarted_at_once_again() -> None:
    assert delays(Backoff(), [1.0, 1.0, 1.0, 30.0, 1.0]) == [0.5, 1, 2, 0.5, 1]
    assert delays(Backoff(), [1.0, 1.0, 29.9]) == [0.5, 1, 2]


def test_an_exit_is_named_by_its_signal_and_a_crash_never_exits_zero() -> None:
    assert describe_exit(-signal.SIGKILL) == "-9 (SIGKILL)"
    assert describe_exit(-signal.SIGSEGV) == "-11 (SIGSEGV)"
    assert describe_exit(3) == "3"
    assert [exit_status(rc) for rc in (-signal.SIGKILL, 3, 0)] == [137, 3, 1]


def test_an_ephemeral_cluster_runs_in_a_private_temporary_data_dir_gone_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TMPDIR would put it
    settings = Settings.from_env({}, ephemeral=True)

    with pytest.raises(RuntimeError), throwaway_data_dir(settings) as inside:
        data = Path(inside.data_dir)
        assert not inside.ephemeral and data.parent == tmp_path
        assert data.stat().st_mode & 0o777 == 0o700
        (data / "nats").mkdir()
        (data / "users.db").write_text("")
        raise RuntimeError("the cluster stopped on an error")  # removed all the same

    assert list(tmp_path.iterdir()) == []


def test_a_cluster_with_a_data_dir_keeps_it(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path))
    with throwaway_data_dir(settings) as inside:
        assert inside is settings
    assert tmp_path.exists()


def test_every_process_of_the_plan_keeps_its_files_in_the_data_dir_even_if_told_ephemeral(
    tmp_path: Path,
) -> None:
    """The cluster hands each process its data dir and APP_EPHEMERAL=false: a module in
    memory would lose its store at a restart and could not share it with its replicas."""
    settings = Settings.from_env({}, data_dir=str(tmp_path))
    the_plan = plan(
        settings,
        MODULES,
        replicas={"payments": 2},
        nats_url=None,
        secret_key="k" * 48,
        nats_server="/usr/sbin/nats-server",
        python=sys.executable,
    )

    assert the_plan.nats is not None
    assert the_plan.nats.argv[-2:] == ["-sd", str(tmp_path.resolve() / "nats")]
    for child in the_plan.children:
        assert child.argv[3:5] == ["--data-dir", str(tmp_path.resolve())]
        assert child.env["APP_EPHEMERAL"] == "false"


def test_a_plan_without_a_data_dir_is_refused() -> None:
    with pytest.raises(ClusterError, match="--ephemeral runs the cluster in a temporary one"):
        plan(
            Settings.from_env({}, ephemeral=True),
            MODULES,
            replicas={},
            nats_url="nats://127.0.0.1:4222",
            secret_key="k" * 48,
        )

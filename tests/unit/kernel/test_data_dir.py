"""The data dir is private (0700, files 0600, whatever the umask) and held by one server:
an OS file lock that names its holder and dies with it.

flock conflicts between processes, so the other holder is a real child process."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.kernel.data_dir import (
    DataDirInUse,
    DataDirLock,
    make_private_database,
    prepare_data_dir,
)

HOLD = """
import sys
from pathlib import Path
from app.kernel.data_dir import DataDirLock
lock = DataDirLock(Path(sys.argv[1]), sys.argv[2], shared=sys.argv[3] == "shared")
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""
HOLD_SECONDS = 20


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@contextmanager
def held_by_another_process(
    data_dir: Path, role: str, *, shared: bool = False
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir), role, "shared" if shared else "exclusive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n", "the holder could not take the lock"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=HOLD_SECONDS)


def test_a_new_data_dir_is_0700_and_a_new_database_0600_whatever_the_umask(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    with umask(0o002):
        prepare_data_dir(data_dir)
        make_private_database(data_dir / "users.db")

    assert mode(data_dir) == 0o700
    assert mode(data_dir / "users.db") == 0o600


def test_an_existing_data_dir_and_files_open_to_others_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    for name in ("users.db", "users.db-wal", "users.db-shm"):
        (data_dir / name).write_bytes(b"")
        (data_dir / name).chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="app"):
        prepare_data_dir(data_dir)
        make_private_database(data_dir / "users.db")

    assert mode(data_dir) == 0o700
    files = ("users.db", "users.db-wal", "users.db-shm")
    assert [mode(data_dir / name) for name in files] == [0o600] * 3
    assert f"{data_dir} was open to other users (mode 755): now 700" in caplog.text
    assert f"{data_dir / 'users.db-wal'} was open to other users (mode 644): now 600" in (
        caplog.text
    )


def test_a_second_holder_is_refused_with_the_pid_role_and_data_dir_of_the_first(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    with (
        held_by_another_process(data_dir, "python -m app") as holder,
        pytest.raises(DataDirInUse) as refused,
    ):
        DataDirLock(data_dir, "python -m app create-admin").acquire()

    assert str(refused.value) == (
        f"the data dir {data_dir} is in use by pid {holder.pid} (python -m app)"
    )


def test_the_lock_dies_with_its_holder_so_a_kill_leaves_no_stale_lock(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with held_by_another_process(data_dir, "python -m app") as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(HOLD_SECONDS)

        with DataDirLock(data_dir, "python -m app") as lock:
            assert (data_dir / ".lock").read_text() == f"{os.getpid()} python -m app\n"
            assert lock.holder.pid == os.getpid()


def test_module_processes_share_the_lock_and_keep_a_monolith_out(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with (
        held_by_another_process(data_dir, "python -m app --modules users", shared=True) as one,
        DataDirLock(data_dir, "python -m app --modules payments", shared=True),
        pytest.raises(DataDirInUse) as refused,
    ):
        DataDirLock(data_dir, "python -m app").acquire()

    assert f"pid {one.pid} (python -m app --modules users)" in str(refused.value)
    assert f"pid {os.getpid()} (python -m app --modules payments)" in str(refused.value)


def test_a_monolith_keeps_module_processes_out(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with (
        held_by_another_process(data_dir, "python -m app") as monolith,
        pytest.raises(DataDirInUse) as refused,
    ):
        DataDirLock(data_dir, "python -m app --modules users", shared=True).acquire()

    assert f"pid {monolith.pid} (python -m app)" in str(refused.value)


def test_a_released_lock_can_be_taken_again_and_its_file_is_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with umask(0o022):
        with DataDirLock(data_dir, "python -m app"):
            pass
        with DataDirLock(data_dir, "python -m app"):
            pass

    assert mode(data_dir / ".lock") == 0o600

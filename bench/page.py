"""The live page's cost: sagas/s with no page open, and with one real Chromium page open.

    python bench/page.py [--orders N] [--concurrency C] [--rounds R] [--users U]
                         [--profile] [--chromium PATH]

Starts Seams as bench/saga.py does (a fresh data dir, its admin made by create-admin,
`python -m app` on loopback, the same environment), registers the users and warms up.
Then, in ONE server, it runs 2R rounds alternately without and with a page (A B A B ...,
so that a drift of the shared machine falls on both): each round places N orders paid
with tok_visa from C concurrent clients and ends when the last saga's notification is seen
(bench/saga.py's load and its notifications poller). For a page round, Debian's Chromium
(headless, driven by Playwright, never a browser Playwright downloads) is started, the
admin logs in through the page's own form and the page is left streaming everything
(GET /api/watch/stream: every request, event and handling) before the orders start; the
browser is closed after the round, so a no-page round has no browser at all.

Prints each round's sagas/s, the server's CPU and, for a page round, the CPU of each kind
of Chromium process (browser, renderer, GPU, network) and of Playwright's driver, what the
page's renderer spent (Performance.getMetrics: script, layout, style), the events the page
received and the rows it kept; then the ratio of the mean rate with a page to the mean
rate without, each page round's ratio to the mean of the no-page rounds around it, and the
ratio the CPU a saga takes would give if the machine's CPU alone bound the rate (the server's
and this process's CPU a saga, over that plus Chromium's): unlike sagas/s, that one holds
when others use the machine at the same time.
With --profile the last page round is traced (Chromium's tracing, the DevTools timeline
categories) and the events that took the most time, on each thread, are listed. Not a
test; nothing asserts, but the exit status is 1 when an order failed or a saga never
completed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import (
    ADMIN_EMAIL,
    PASSWORD,
    Account,
    commit,
    cpu_seconds,
    create_admin,
    free_port,
    log_in,
    machine,
    register_users,
    start_seams,
)
from playwright.async_api import Browser, Page, async_playwright
from saga import Level, Poller, event_loop_runner, rate_of, run_level, warm_up

CHROMIUM = "/usr/bin/chromium"
SETTLE_SECONDS = 1.0  # after the page is live: its first loads and the replay are drawn
METRICS = (
    "TaskDuration",
    "ScriptDuration",
    "LayoutDuration",
    "RecalcStyleDuration",
    "LayoutCount",
    "RecalcStyleCount",
)


# ---------------------------------------------------------------- CPU of a process tree


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _kind(pid: int) -> str | None:
    """What a descendant of this process is: a kind of Chromium process, Playwright's
    driver, or None (something else)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [word.decode(errors="replace") for word in argv if word]
    if len(words) == 1:  # Chromium rewrites its command line into one string
        words = words[0].split(" ")
    if not words:
        return None
    if "chrom" not in Path(words[0]).name:
        return "playwright driver" if any("playwright" in w for w in words) else None
    kind = next((w.split("=", 1)[1] for w in words if w.startswith("--type=")), "browser")
    if kind == "utility":
        sub = next((w.split("=", 1)[1] for w in words if w.startswith("--utility-sub-type=")), "")
        return f"utility ({sub.split('.')[0] or '?'})"
    return kind


def descendant_cpu() -> Counter[str]:
    """CPU seconds so far of every Chromium process and Playwright driver started by this
    process, by kind."""
    children = _children()
    totals: Counter[str] = Counter()
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        kind = _kind(pid)
        seconds = cpu_seconds(pid)
        if kind is not None and seconds is not None:
            totals[kind] += seconds
    return totals


# ---------------------------------------------------------------- the page


async def open_page(browser: Browser, base_url: str) -> Page:
    """The admin signed in through the page's form, its stream live."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(base_url)
    form = page.get_by_role("form", name="Log in")
    await form.get_by_label("Email").fill(ADMIN_EMAIL)
    await form.get_by_label("Password").fill(PASSWORD)
    await form.get_by_role("button", name="Log in").click()
    await page.locator("#stream-state", has_text="live").wait_for(timeout=15_000)
    await asyncio.sleep(SETTLE_SECONDS)
    return page


async def page_counts(page: Page) -> dict[str, Any]:
    """What the page says it received and shows (window.seamsPage, kept by page.js)."""
    counts: dict[str, Any] = await page.evaluate(
        """() => ({
            visibility: document.visibilityState,
            rows: document.querySelectorAll('#stream-rows tr').length,
            dropped: document.getElementById('dropped').textContent,
            received: (window.seamsPage && window.seamsPage.received) || null,
        })"""
    )
    return counts


async def metrics(session: Any) -> dict[str, float]:
    answer = await session.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in answer["metrics"] if m["name"] in METRICS}


TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8.execute",
    "blink",
    "cc",
    "gpu",
    "toplevel",
]


def hot_spots(trace: dict[str, Any], top: int = 25) -> list[tuple[str, float]]:
    """Self time (ms) per thread and event name of a Chromium trace, the largest first: an
    event's duration less that of the events nested in it on the same thread."""
    names: dict[tuple[int, int], str] = {}
    spans: dict[tuple[int, int], list[tuple[float, float, str]]] = {}
    for event in trace.get("traceEvents", []):
        thread = (event.get("pid", 0), event.get("tid", 0))
        if event.get("ph") == "M" and event.get("name") == "thread_name":
            names[thread] = event["args"]["name"]
        elif event.get("ph") == "X" and "dur" in event:
            start = float(event["ts"])
            spans.setdefault(thread, []).append((start, start + event["dur"], event["name"]))
    spent: Counter[str] = Counter()
    for thread, events in spans.items():
        events.sort(key=lambda span: (span[0], -span[1]))
        open_spans: list[list[Any]] = []  # [end, name, self time]
        for start, end, name in events:
            while open_spans and open_spans[-1][0] <= start:
                done = open_spans.pop()
                spent[f"{names.get(thread, thread[1])}: {done[1]}"] += done[2]
            if open_spans:
                open_spans[-1][2] -= end - start
            open_spans.append([end, name, end - start])
        for done in open_spans:
            spent[f"{names.get(thread, thread[1])}: {done[1]}"] += done[2]
    return [(label, micros / 1000.0) for label, micros in spent.most_common(top)]


# ---------------------------------------------------------------- rounds


@dataclass
class Round:
    number: int
    with_page: bool
    level: Level
    rate: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0  # this process: the orders' clients and the poller
    browser_cpu: Counter[str] = field(default_factory=Counter)
    renderer: dict[str, float] = field(default_factory=dict)
    page: dict[str, Any] = field(default_factory=dict)
    hot: list[tuple[str, float]] = field(default_factory=list)


async def page_round(
    number: int,
    base_url: str,
    poller: Poller,
    users: Sequence[Account],
    arguments: argparse.Namespace,
    server_pid: int,
    *,
    profile: bool,
) -> Round:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=arguments.chromium, args=["--no-sandbox"]
        )
        try:
            page = await open_page(browser, base_url)
            session = await page.context.new_cdp_session(page)
            await session.send("Performance.enable")
            if profile:
                await browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            before, cpu_before = await metrics(session), descendant_cpu()
            level, client_cpu = await load(base_url, poller, users, arguments, server_pid)
            after, cpu_after = await metrics(session), descendant_cpu()
            hot = []
            if profile:
                hot = hot_spots(json.loads(await browser.stop_tracing()))
            shown = await page_counts(page)
        finally:
            await browser.close()
    done = Round(number, True, level, client_cpu=client_cpu, hot=hot, page=shown)
    done.browser_cpu = Counter({k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after})
    done.renderer = {name: after[name] - before.get(name, 0.0) for name in after}
    return done


async def load(
    base_url: str,
    poller: Poller,
    users: Sequence[Account],
    arguments: argparse.Namespace,
    server_pid: int,
) -> tuple[Level, float]:
    """A round's orders and their sagas; the CPU seconds this process spent on them."""
    started = time.process_time()
    level = await run_level(
        base_url,
        poller,
        users,
        arguments.orders,
        arguments.concurrency,
        closed_loop=False,
        server_pid=server_pid,
    )
    return level, time.process_time() - started


async def drive(
    base_url: str,
    admin_token: str,
    users: Sequence[Account],
    arguments: argparse.Namespace,
    server_pid: int,
) -> tuple[list[Round], Poller]:
    poller = Poller(base_url, admin_token)
    polling = asyncio.create_task(poller.run())
    rounds: list[Round] = []
    try:
        warm = await warm_up(base_url, poller, users)
        print(f"warm-up: {len(users)} orders (one per user) completed in {warm:.2f} s")
        for number in range(1, 2 * arguments.rounds + 1):
            with_page = number % 2 == 0
            if with_page:
                last = number == 2 * arguments.rounds
                done = await page_round(
                    number,
                    base_url,
                    poller,
                    users,
                    arguments,
                    server_pid,
                    profile=arguments.profile and last,
                )
            else:
                await asyncio.sleep(SETTLE_SECONDS)  # as long as a page round waits
                level, client_cpu = await load(base_url, poller, users, arguments, server_pid)
                done = Round(number, False, level, client_cpu=client_cpu)
            done.rate = rate_of(done.level, poller)
            done.server_cpu = done.level.server_cpu or 0.0
            print(describe(done), flush=True)
            rounds.append(done)
        return rounds, poller
    finally:
        poller.stop()
        await polling


# ---------------------------------------------------------------- report


def describe(done: Round) -> str:
    wall = done.level.last_seen - done.level.first_sent
    sagas = max(len(done.level.placed), 1)
    line = (
        f"round {done.number} {'page   ' if done.with_page else 'no page'}: "
        f"{done.rate:7.1f} sagas/s  wall {wall:5.2f} s  server CPU "
        f"{done.server_cpu / wall:.2f} cores ({done.server_cpu / sagas * 1000:.2f} ms a saga), "
        f"load generator {done.client_cpu / wall:.2f} ({done.client_cpu / sagas * 1000:.2f} ms)"
    )
    if not done.with_page:
        return line
    chromium = sum(v for k, v in done.browser_cpu.items() if k != "playwright driver")
    kinds = ", ".join(
        f"{kind} {seconds / wall:.2f}" for kind, seconds in done.browser_cpu.most_common()
    )
    renderer = ", ".join(
        f"{name.removesuffix('Duration').lower()} {value * 1000:.0f} ms"
        if name.endswith("Duration")
        else f"{value:.0f} {name.removesuffix('Count').lower()}s"
        for name, value in done.renderer.items()
    )
    received = done.page.get("received") or {}
    page = (
        f"page {done.page.get('visibility')}: received {received.get('events', '?')} events "
        f"in {received.get('chunks', '?')} chunks, {done.page.get('rows')} rows shown"
        + (f", {done.page['dropped']}" if done.page.get("dropped") else "")
    )
    return (
        f"{line}  Chromium CPU {chromium / wall:.2f} cores "
        f"({chromium / sagas * 1000:.2f} ms a saga)\n"
        f"    by process (cores): {kinds}\n"
        f"    renderer main thread: {renderer}\n"
        f"    {page}"
    )


def summary(rounds: Sequence[Round]) -> list[str]:
    plain = [r.rate for r in rounds if not r.with_page]
    paged = [r.rate for r in rounds if r.with_page]
    lines = [
        f"no page: {' '.join(f'{rate:.1f}' for rate in plain)} sagas/s "
        f"(mean {statistics.fmean(plain):.1f})",
        f"page:    {' '.join(f'{rate:.1f}' for rate in paged)} sagas/s "
        f"(mean {statistics.fmean(paged):.1f})",
        f"page / no page: {statistics.fmean(paged) / statistics.fmean(plain):.3f} "
        f"(the bar, issue 14 point 10: at least 0.90)",
    ]
    lines.append(cpu_estimate(rounds))
    for index, done in enumerate(rounds):
        if done.with_page:
            around = [r.rate for r in rounds[max(index - 1, 0) : index + 2] if not r.with_page]
            lines.append(
                f"  round {done.number}: {done.rate / statistics.fmean(around):.3f} "
                f"of the no-page rounds around it"
            )
    return lines


def cpu_estimate(rounds: Sequence[Round]) -> str:
    """What the ratio would be if the sagas were bound by the machine's CPU alone: the CPU
    a saga takes (server and load generator) over that plus the page's. Unlike sagas/s, it
    holds on a machine that others are using at the same time."""

    def per_saga(seconds: float, done: Round) -> float:
        return seconds / max(len(done.level.placed), 1) * 1000

    system = statistics.fmean(per_saga(r.server_cpu + r.client_cpu, r) for r in rounds)
    page = statistics.fmean(
        per_saga(sum(v for k, v in r.browser_cpu.items() if k != "playwright driver"), r)
        for r in rounds
        if r.with_page
    )
    return (
        f"CPU a saga: server and load generator {system:.2f} ms, the page (Chromium) "
        f"{page:.2f} ms; bound by CPU alone, page / no page would be "
        f"{system / (system + page):.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/page.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--orders", type=int, default=2000, help="orders per round (2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pairs of rounds, no page then page (3)"
    )
    parser.add_argument("--users", type=int, default=20, help="users the orders cycle over (20)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="trace Chromium in the last page round and list where its threads spent time",
    )
    parser.add_argument("--chromium", default=CHROMIUM, help=f"the browser ({CHROMIUM})")
    arguments = parser.parse_args(argv)
    if not shutil.which(arguments.chromium):
        print(f"no Chromium at {arguments.chromium}: apt-get install chromium", file=sys.stderr)
        return 2

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="seams-page-"))
    print(
        f"Seams page benchmark: commit {commit()}, {machine()}\n"
        f"server: python -m app (1 worker) on 127.0.0.1:{port}, file-backed SQLite, as "
        f"bench/saga.py; load: {arguments.orders} orders a round, tok_visa, "
        f"{arguments.concurrency} clients, {arguments.users} users; "
        f"{2 * arguments.rounds} rounds: no page, then a headless {arguments.chromium} page "
        f"signed in as the admin (streaming everything), alternately",
        flush=True,
    )
    try:
        create_admin(data / "db")
    except RuntimeError:
        shutil.rmtree(data, ignore_errors=True)
        raise
    server = start_seams(data / "db", port=port, log_path=data / "server.log")
    try:
        server.wait_until("/ready")
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            admin_token = log_in(client, ADMIN_EMAIL)
        users = register_users(server.base_url, arguments.users, tag=data.name)
        rounds, _poller = event_loop_runner()(
            drive(server.base_url, admin_token, users, arguments, server.process.pid)
        )
    finally:
        code = server.stop()
        shutil.rmtree(data, ignore_errors=True)

    print()
    print("\n".join(summary(rounds)))
    for done in rounds:
        if done.hot:
            print(f"round {done.number}: where Chromium's threads spent their time (self time):")
            for label, spent in done.hot:
                print(f"  {spent:8.1f} ms  {label}")
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = [r for r in rounds if r.level.errors or r.level.missing]
    for done in failed:
        print(
            f"round {done.number}: {len(done.level.errors)} failed orders, "
            f"{len(done.level.missing)} sagas never completed"
        )
    print(f"server: SIGTERM -> exit {code}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""/api/admin through the split gateway: one place for the dead letters, the bus and the
fault switches of every module process and replica (issue 15, point 4).

Each module process serves its own /api/admin and /api/admin/faults behind the gateway's
proof (app/split/module_process.py). The gateway asks every live instance (from discovery)
over HTTP with a proof it signs for the admin who asks, at once and in parallel, and merges
the answers. HTTP rather than a request/reply over NATS: the module processes already answer
these routes with the same guards (admins only, development only for faults), the proof
already says who asks, and an HTTP timeout per process is the short, separate wait each
answer needs; NATS would have needed an answerer per process repeating the same routes.

A process that does not answer within ANSWER_SECONDS, or answers with an error, is named in
`unreachable` instead of failing the call (for a list or an empty answer, in the
X-Seams-Unreachable header). Processes are named `<modules>@<host:port>`, the address the
gateway reaches them at.

Module processes may share one bus store (`python -m app cluster` puts every process's
bus.db in one data dir): then each lists the same dead letters. A letter is listed once,
named after a process that runs its consumer, and replayed or discarded there only: a
process without the consumer cannot deliver it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import JSONBody

from app.gateway.admin import BusState, Count, DeadLetterOut, LetterId
from app.gateway.auth import admins_only
from app.gateway.faults import SwitchChange, SwitchName, SwitchOut, development_only
from app.kernel.errors import NotFound, Unavailable
from app.kernel.identity import Caller
from app.kernel.pages import DEFAULT_LIMIT, MAX_LIMIT, Cursor, Limit
from app.kernel.problems import AUTHENTICATED, WITH_BODY, problems
from app.split.discovery import Instance
from app.split.proof import HEADER as PROOF_HEADER
from app.split.proof import GatewayProof

log = logging.getLogger("app.split.admin")

ANSWER_SECONDS = 2.0  # how long the gateway waits for each process's answer
UNREACHABLE_HEADER = "X-Seams-Unreachable"
ADMIN = "/api/admin"


def process_name(instance: Instance) -> str:
    """How an answer names a process: its modules and the address the gateway reaches."""
    return f"{'-'.join(instance.modules)}@{urlsplit(instance.url).netloc}"


class Instances(Protocol):
    def live(self, module: str | None = None) -> list[Instance]: ...


@dataclass(frozen=True)
class Answer:
    instance: Instance
    status: int
    body: bytes

    @property
    def process(self) -> str:
        return process_name(self.instance)


@dataclass
class Round:
    """What the processes asked said; who did not answer (in time, or without an error)."""

    answers: list[Answer] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    def with_status(self, status: int) -> list[Answer]:
        return [answer for answer in self.answers if answer.status == status]

    def headers(self) -> dict[str, str]:
        return {UNREACHABLE_HEADER: ", ".join(self.unreachable)} if self.unreachable else {}


class Fleet:
    """Asks live module processes the same admin question, each with the gateway's proof."""

    def __init__(
        self,
        instances: Instances,
        proof: GatewayProof,
        *,
        seconds: float = ANSWER_SECONDS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.instances = instances
        self.proof = proof
        self.seconds = seconds
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.seconds),
                # Let idle connections go before a module's server closes them (uvicorn: 5 s),
                # so that no question goes out on a connection being closed.
                limits=httpx.Limits(keepalive_expiry=2.0),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def live(self) -> list[Instance]:
        return sorted(self.instances.live(), key=process_name)

    async def ask(
        self,
        request: Request[Any, Any, Any],
        method: str,
        path: str,
        *,
        to: Sequence[Instance] | None = None,
        params: dict[str, str] | None = None,
        body: object = None,
        expected: Iterable[int] = (200,),
    ) -> Round:
        """The answers of every live process (or `to`); one that answers with a status not
        `expected` counts as unreachable, as one that does not answer in time."""
        caller = request.scope.get("user")
        who = caller if isinstance(caller, Caller) else None
        targets = self.live() if to is None else list(to)
        answers = await asyncio.gather(
            *(self._one(instance, who, method, path, params, body) for instance in targets)
        )
        allowed = set(expected)
        round_ = Round()
        for instance, answer in zip(targets, answers, strict=True):
            if answer is not None and answer.status in allowed:
                round_.answers.append(answer)
            else:
                round_.unreachable.append(process_name(instance))
        return round_

    async def _one(
        self,
        instance: Instance,
        caller: Caller | None,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: object,
    ) -> Answer | None:
        proof = self.proof.issue(caller=caller, method=method, path=path, client_host=None)
        try:
            async with asyncio.timeout(self.seconds):
                response = await self.client.request(
                    method,
                    instance.url + path,
                    params=params,
                    content=None if body is None else msgspec.json.encode(body),
                    headers={PROOF_HEADER: proof, "content-type": "application/json"},
                )
        except (httpx.HTTPError, TimeoutError) as error:
            log.warning("%s did not answer %s %s: %r", process_name(instance), method, path, error)
            return None
        if response.status_code >= 500:
            log.warning(
                "%s answered %s %s with %d: %s",
                process_name(instance),
                method,
                path,
                response.status_code,
                response.text[:200],
            )
        return Answer(instance, response.status_code, response.content)


def _fleet(request: Request[Any, Any, Any]) -> Fleet:
    fleet: Fleet = request.app.state.admin_fleet
    return fleet


# Dead letters


class ProcessDeadLetter(DeadLetterOut, frozen=True):
    process: str  # a process that holds it, one running its consumer where there is one
    replayable: bool  # that process runs its consumer: replay and discard go there


class DeadLetterPage(msgspec.Struct, frozen=True):
    items: list[ProcessDeadLetter]
    next_cursor: str | None
    unreachable: list[str]


class Released(msgspec.Struct, frozen=True):
    replayed: list[str]
    unreachable: list[str]


class _ModulePage(msgspec.Struct):
    items: list[DeadLetterOut]
    next_cursor: str | None


def _letter_of(found: Iterable[tuple[Answer, DeadLetterOut]]) -> dict[str, ProcessDeadLetter]:
    """Each letter once, by id, named after a holder that runs its consumer if one does."""
    named: dict[str, ProcessDeadLetter] = {}
    for answer, letter in found:
        known = named.get(letter.id)
        runs_it = letter.consumer in answer.instance.modules
        if known is None or (runs_it and not known.replayable):
            named[letter.id] = ProcessDeadLetter(
                **msgspec.structs.asdict(letter), process=answer.process, replayable=runs_it
            )
    return named


async def merged_page(
    request: Request[Any, Any, Any], limit: int, cursor: str | None
) -> DeadLetterPage:
    """One page over every process: each gives its first `limit` after the cursor (ids are
    ordered), so the first `limit` of them all are among what came back."""
    params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
    round_ = await _fleet(request).ask(request, "GET", f"{ADMIN}/dead-letters", params=params)
    pairs: list[tuple[Answer, DeadLetterOut]] = []
    covered: list[str] = []  # the last id of each process that has more
    for answer in round_.answers:
        page = msgspec.json.decode(answer.body, type=_ModulePage)
        pairs += [(answer, letter) for letter in page.items]
        if page.next_cursor is not None:
            covered.append(page.next_cursor)
    letters = sorted(_letter_of(pairs).values(), key=lambda letter: letter.id)
    if covered:  # beyond the least of them, a process may hold letters not fetched yet
        horizon = min(covered)
        letters = [letter for letter in letters if letter.id <= horizon]
    if len(letters) > limit:
        letters = letters[:limit]
        next_cursor: str | None = letters[-1].id
    else:
        next_cursor = min(covered) if covered else None
    return DeadLetterPage(items=letters, next_cursor=next_cursor, unreachable=round_.unreachable)


async def _found(
    request: Request[Any, Any, Any], letter_id: str
) -> tuple[ProcessDeadLetter, Round]:
    """The letter, named after a process that holds it. 404 when no process holds it; 503
    when one that did not answer might."""
    round_ = await _fleet(request).ask(
        request, "GET", f"{ADMIN}/dead-letters/{letter_id}", expected=(200, 404)
    )
    found = [
        (answer, msgspec.json.decode(answer.body, type=DeadLetterOut))
        for answer in round_.with_status(200)
    ]
    if not found:
        if round_.unreachable:
            raise Unavailable(
                f"no process that answered holds dead letter {letter_id!r}; these did not "
                f"answer: {', '.join(round_.unreachable)}",
                headers={"Retry-After": "1", **round_.headers()},
            )
        raise NotFound(f"no dead letter {letter_id!r}")
    return _letter_of(found)[letter_id], round_


async def _holder(request: Request[Any, Any, Any], letter_id: str) -> ProcessDeadLetter:
    """The letter, at a process that holds it and runs its consumer (only there can it be
    delivered again or released); 503 when no live process that answered runs it."""
    letter, round_ = await _found(request, letter_id)
    if not letter.replayable:
        silent = f" (not answering: {', '.join(round_.unreachable)})" if round_.unreachable else ""
        raise Unavailable(
            f"dead letter {letter_id!r} is for {letter.consumer!r}, which runs in no live "
            f"process that answered{silent}: start one (python -m app --modules "
            f"{letter.consumer}) and retry",
            headers={"Retry-After": "1", **round_.headers()},
        )
    return letter


def _instance_named(request: Request[Any, Any, Any], process: str) -> list[Instance]:
    return [i for i in _fleet(request).live() if process_name(i) == process]


async def _release(request: Request[Any, Any, Any], letter: ProcessDeadLetter, how: str) -> bool:
    """Replay (`how` = "POST") or discard ("DELETE") a letter at its holder."""
    path = f"{ADMIN}/dead-letters/{letter.id}" + ("/replay" if how == "POST" else "")
    round_ = await _fleet(request).ask(
        request,
        how,
        path,
        to=_instance_named(request, letter.process),
        expected=(202, 204, 404),
    )
    if round_.unreachable:
        raise Unavailable(
            f"{letter.process}, which holds dead letter {letter.id!r}, did not answer",
            headers={"Retry-After": "1", **round_.headers()},
        )
    return any(answer.status in (202, 204) for answer in round_.answers)


class SplitAdminController(Controller):
    """The monolith's /api/admin paths, over every module process (see the module doc)."""

    path = ADMIN
    tags = ["admin"]
    guards = [admins_only]

    @get(
        "/bus",
        operation_id="getBusState",
        responses=problems(*AUTHENTICATED, 403),
        summary="Every process's bus, and their sum",
        description="The monolith's fields summed over the processes (`dead_letters` counts "
        "each letter once, also where processes share a bus store), each process's own under "
        "`processes`, and the processes that did not answer under `unreachable`.",
    )
    async def bus_state(self, request: Request[Any, Any, Any]) -> SplitBusState:
        states, letters = await asyncio.gather(
            _fleet(request).ask(request, "GET", f"{ADMIN}/bus"),
            _count_letters(request),
        )
        processes = [
            ProcessBusState(
                process=answer.process,
                modules=list(answer.instance.modules),
                **msgspec.structs.asdict(msgspec.json.decode(answer.body, type=BusState)),
            )
            for answer in states.answers
        ]
        counts: Counter[tuple[str, str, str]] = Counter()
        for state in processes:
            for count in state.counts:
                counts[(count.type, count.consumer, count.outcome)] += count.count
        return SplitBusState(
            running=bool(processes) and all(state.running for state in processes),
            busy=sum(state.busy for state in processes),
            backlog=sum(state.backlog for state in processes),
            dead_letters=letters,
            counts=[
                Count(type=t, consumer=c, outcome=o, count=n)
                for (t, c, o), n in sorted(counts.items())
            ],
            processes=processes,
            unreachable=sorted(set(states.unreachable)),
        )

    @get(
        "/dead-letters",
        operation_id="listDeadLetters",
        responses=problems(*AUTHENTICATED, 403),
        summary="Every process's dead letters, each naming its process, in id order",
    )
    async def dead_letters(
        self, request: Request[Any, Any, Any], limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> DeadLetterPage:
        return await merged_page(request, limit, cursor)

    @get(
        "/dead-letters/{letter_id:str}",
        operation_id="getDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404, 503),
        summary="One dead letter, with the process that holds it",
    )
    async def dead_letter(
        self, request: Request[Any, Any, Any], letter_id: LetterId
    ) -> ProcessDeadLetter:
        letter, _round = await _found(request, letter_id)
        return letter

    @post(
        "/dead-letters/{letter_id:str}/replay",
        operation_id="replayDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404, 503),
        summary="Deliver it again in the process that holds it, then the events parked behind it",
        status_code=202,
    )
    async def replay(self, request: Request[Any, Any, Any], letter_id: LetterId) -> Released:
        letter = await _holder(request, letter_id)
        if not await _release(request, letter, "POST"):
            raise NotFound(f"no dead letter {letter_id!r}")
        return Released(replayed=[letter_id], unreachable=[])

    @post(
        "/dead-letters/replay",
        operation_id="replayAllDeadLetters",
        responses=problems(*AUTHENTICATED, 403),
        summary="Replay every dead letter, each in a process that runs its consumer",
        status_code=202,
    )
    async def replay_all(self, request: Request[Any, Any, Any]) -> Released:
        replayed: list[str] = []
        unreachable: set[str] = set()
        async for page in _every_page(request):
            unreachable.update(page.unreachable)
            for letter in page.items:
                if not letter.replayable:
                    unreachable.add(f"{letter.consumer} (no live process)")
                    continue
                try:
                    if await _release(request, letter, "POST"):
                        replayed.append(letter.id)
                except Unavailable:
                    unreachable.add(letter.process)
        return Released(replayed=replayed, unreachable=sorted(unreachable))

    @delete(
        "/dead-letters/{letter_id:str}",
        operation_id="discardDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404, 503),
        summary="Drop it for good in the process that holds it",
        status_code=204,
    )
    async def discard(self, request: Request[Any, Any, Any], letter_id: LetterId) -> None:
        letter = await _holder(request, letter_id)
        if not await _release(request, letter, "DELETE"):
            raise NotFound(f"no dead letter {letter_id!r}")


async def _every_page(request: Request[Any, Any, Any]) -> AsyncIterator[DeadLetterPage]:
    cursor: str | None = None
    while True:
        page = await merged_page(request, MAX_LIMIT, cursor)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _count_letters(request: Request[Any, Any, Any]) -> int:
    return len({letter.id async for page in _every_page(request) for letter in page.items})


class ProcessBusState(BusState, frozen=True):
    process: str
    modules: list[str]


class SplitBusState(BusState, frozen=True):
    processes: list[ProcessBusState]
    unreachable: list[str]


# Fault switches


class ProcessSwitchOut(SwitchOut, frozen=True):
    processes: list[str]  # where the switch lives: every replica of its module


class SwitchSet(ProcessSwitchOut, frozen=True):
    unreachable: list[str]


def _merged_switches(round_: Round) -> dict[str, ProcessSwitchOut]:
    merged: dict[str, ProcessSwitchOut] = {}
    for answer in round_.answers:
        for switch in msgspec.json.decode(answer.body, type=list[SwitchOut]):
            known = merged.get(switch.name)
            where = [*(known.processes if known else []), answer.process]
            first = known or switch
            merged[switch.name] = ProcessSwitchOut(
                **msgspec.structs.asdict(first) | {"processes": where}
            )
    return merged


class SplitFaultsController(Controller):
    """The monolith's /api/admin/faults over every module process: a module's switch is set
    in every replica of it, a consumer's pause and break in each process running it."""

    path = f"{ADMIN}/faults"
    tags = ["admin"]
    guards = [development_only, admins_only]

    @get(
        "/",
        operation_id="listFaultSwitches",
        responses=problems(*AUTHENTICATED, 403),
        summary="Every process's fault switches, each once, with the processes it lives in",
        description="Processes that did not answer are named in the X-Seams-Unreachable header.",
    )
    async def list_switches(
        self, request: Request[Any, Any, Any]
    ) -> Response[list[ProcessSwitchOut]]:
        round_ = await _fleet(request).ask(request, "GET", f"{ADMIN}/faults")
        switches = sorted(_merged_switches(round_).values(), key=lambda s: (s.module, s.name))
        return Response(switches, headers=round_.headers())

    @put(
        "/{name:str}",
        operation_id="setFaultSwitch",
        responses=problems(*AUTHENTICATED, *WITH_BODY, 403, 404, 503),
        summary="Set one fault switch in every process it lives in",
    )
    async def set_switch(
        self, request: Request[Any, Any, Any], name: SwitchName, data: JSONBody[SwitchChange]
    ) -> Response[Any]:
        round_ = await _fleet(request).ask(
            request, "PUT", f"{ADMIN}/faults/{name}", body=data, expected=(200, 400, 404)
        )
        refused = round_.with_status(400)
        if refused:  # the value does not fit the switch: the module's own problem says why
            answer = refused[0]
            return Response(answer.body, status_code=400, media_type="application/problem+json")
        set_in = round_.with_status(200)
        if not set_in:
            if round_.unreachable:
                raise Unavailable(
                    f"no process that answered has the fault switch {name!r}; these did not "
                    f"answer: {', '.join(round_.unreachable)}",
                    headers={"Retry-After": "1", **round_.headers()},
                )
            raise NotFound(f"no fault switch {name!r}")
        switch = msgspec.json.decode(set_in[0].body, type=SwitchOut)
        log.warning(
            "fault switch %s set to %s in %s by %s (not answering: %s)",
            name,
            switch.value,
            ", ".join(answer.process for answer in set_in),
            getattr(request.user, "id", "someone"),
            ", ".join(round_.unreachable) or "none",
        )
        return Response(
            SwitchSet(
                **msgspec.structs.asdict(switch),
                processes=[answer.process for answer in set_in],
                unreachable=round_.unreachable,
            ),
            headers=round_.headers(),
        )

    @delete(
        "/",
        operation_id="resetFaultSwitches",
        responses=problems(*AUTHENTICATED, 403),
        summary="Switch every fault off in every process",
        description="Processes that did not answer are named in the X-Seams-Unreachable header.",
        status_code=204,
    )
    async def reset(self, request: Request[Any, Any, Any]) -> Response[None]:
        round_ = await _fleet(request).ask(request, "DELETE", f"{ADMIN}/faults", expected=(204,))
        return Response(None, status_code=204, headers=round_.headers())


SPLIT_ADMIN_ROUTES = [SplitAdminController, SplitFaultsController]

"""`watcher follow`: tasks followed live until each ends, from the API (no daemon needed) or a running watcher's store.

A source reads every open task once per round (`ApiSource`: `GET /openapi/tasks/{id}` with the config's token;
`StoreSource`: the last state the running watcher stored). Each task's `Tracked` turns what was read into its new
state and the events `detect` finds between two reads, and a view shows them: `LiveView`, a rich progress bar per
task with the events printed above; `PlainView`, one line per change, for logs and pipes. The exit status says how
the tasks ended: 0 when every one is `done`, 1 when any stopped, timed out, failed or went missing.

What is never done: inventing an end. A failed read (outage, 5xx, 429, a store that cannot be read) is shown as the
task's problem and the task is read again (less often while it lasts); only the source's own word ends a task.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TextIO

import anyio
import anyio.to_thread
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TaskProgressColumn
from rich.progress import Task as RichTask
from rich.table import Column
from rich.text import Text

from .client import VoiceFoxClient, resolve_transport
from .config import Config
from .daemon import MISSING_AFTER_404S, knobs
from .detect import Rules, detect, detect_missing
from .errors import ApiError, AuthenticationError, RateLimited, StoreError, TaskNotFound, UsageError
from .health import CallHealth, calls_last_hour
from .i18n import Translator, translator
from .model import Event, Status, TaskSnapshot, TaskState
from .notify.message import Severity, build, status_text
from .pace import AdaptiveRate, ApiGate
from .retry import auth_pause, poll_failure_delay, rate_limit_pause
from .schedule import PaceMark, pace
from .store import Store
from .zone import ZoneResolver

EXIT_DONE, EXIT_OTHERWISE, EXIT_SIGTERM = 0, 1, 128 + signal.SIGTERM


class Outcome(StrEnum):
    """How a followed task ended: the status that ends a campaign, or missing."""

    DONE = Status.DONE.value
    STOPPED = Status.STOP_OPERATE.value
    TIMED_OUT = Status.STOP_TIMEOUT.value
    FAILED = Status.STOP_ABNORMAL.value
    MISSING = "missing"


_ENDED_BY_STATUS = frozenset(o.value for o in Outcome) - {Outcome.MISSING}


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """What one look at a task gave: a snapshot (with the watcher's stored state, from a store), or why none."""

    snapshot: TaskSnapshot | None = None
    stored: TaskState | None = None  # from a store: the watcher's own state of the task (stall clock, missing)
    # The API answered 404: missing after MISSING_AFTER_404S in a row, as for the daemon (one may be a proxy's hiccup).
    not_found: bool = False
    missing: bool = False  # the source says the task is gone for good (a store's word on it)
    refused: str = ""  # the API refused the token (401/403): why
    problem: str = ""  # no answer this time: why (an outage, a 429, a store that cannot be read)
    waiting: bool = False  # a store that does not hold the task (yet)


class Source(Protocol):
    """Where tasks are read: the API or a store."""

    async def read_all(self, task_ids: Sequence[int]) -> dict[int, Reading]:
        """One reading per task."""
        ...


class ApiSource:
    """The API through `VoiceFoxClient`: every task read concurrently; a 429 or a refused token pauses every read."""

    def __init__(
        self, client: VoiceFoxClient, gate: ApiGate, rate: AdaptiveRate | None = None, concurrency: int = 8
    ) -> None:
        self._client = client
        self._gate = gate
        self._rate = rate  # `[api] max_rps`, as the daemon keeps it: the same token reads for both
        self._limit = anyio.CapacityLimiter(concurrency)  # `[watch] concurrency` reads in flight, as the daemon's

    async def read_all(self, task_ids: Sequence[int]) -> dict[int, Reading]:
        """One reading per task, after any pause the API asked for."""
        await self._gate.wait()
        readings: dict[int, Reading] = {}

        async def one(task_id: int) -> None:
            async with self._limit:
                if self._rate is not None:
                    await self._rate.acquire()
                readings[task_id] = await self._read(task_id)

        async with anyio.create_task_group() as tg:
            for task_id in task_ids:
                tg.start_soon(one, task_id)
        return readings

    async def _read(self, task_id: int) -> Reading:
        try:
            snapshot = await self._client.get_task(task_id)
        except TaskNotFound:
            return Reading(not_found=True)
        except RateLimited as exc:
            gate = self._gate
            if self._rate is not None:
                self._rate.backoff()
            gate.rate_limited = 0 if exc.retry_after is not None else gate.rate_limited + 1
            gate.pause(rate_limit_pause(exc.retry_after, gate.rate_limited))
            return Reading(problem=_reason(exc, task_id))
        except AuthenticationError as exc:
            self._gate.refused += 1
            self._gate.pause(auth_pause(self._gate.refused))
            return Reading(refused=_reason(exc, task_id))
        except ApiError as exc:
            return Reading(problem=_reason(exc, task_id))
        self._gate.rate_limited = self._gate.refused = 0
        return Reading(snapshot=snapshot)


def _reason(exc: Exception, task_id: int) -> str:
    """The client's message without the "task N: " it starts with (the line names the task already)."""
    return str(exc).removeprefix(f"task {task_id}: ")


class _StateReader(Protocol):
    async def load_states(self, task_ids: Iterable[int] | None = None) -> dict[int, TaskState]: ...
    async def unseen(self) -> dict[int, tuple[str, datetime]]: ...


class StoreSource:
    """A running watcher's store: the states it keeps and the tasks it noted the API does not know."""

    def __init__(self, store: _StateReader) -> None:
        self._store = store

    async def read_all(self, task_ids: Sequence[int]) -> dict[int, Reading]:
        """One reading per task, from one read of the store."""
        try:
            states = await self._store.load_states(task_ids)
            unseen = await self._store.unseen()
        except StoreError as exc:
            return dict.fromkeys(task_ids, Reading(problem=str(exc)))
        readings = {}
        for task_id in task_ids:
            state = states.get(task_id)
            if state is not None:
                readings[task_id] = Reading(snapshot=state.snapshot, stored=state, missing=state.missing)
            else:
                # The watcher notes a task the API never served only when the API answered 404 for it.
                readings[task_id] = Reading(missing=True) if task_id in unseen else Reading(waiting=True)
        return readings


class SqliteReader:
    """The SQLite store's reads, each in a worker thread (the event loop keeps drawing meanwhile)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise UsageError(
                f"--from store: {path}: no store there (the watcher has not run with this config); "
                "follow from the API instead (without --from store)"
            )
        self._path = path
        self._store: Store | None = None

    def _opened(self) -> Store:
        # Opened at the first read, not before: a store the watcher is still laying out cannot be opened yet, and
        # that is a problem of one round (StoreSource shows it and reads again), not the end of the follow.
        if self._store is None:
            self._store = Store.open_existing(self._path)
        return self._store

    async def load_states(self, task_ids: Iterable[int] | None = None) -> dict[int, TaskState]:
        """The stored states of these tasks."""
        ids = None if task_ids is None else list(task_ids)
        return await anyio.to_thread.run_sync(lambda: self._opened().load_states(ids))

    async def unseen(self) -> dict[int, tuple[str, datetime]]:
        """The tasks the API never served."""
        return await anyio.to_thread.run_sync(lambda: self._opened().unseen())

    def close(self) -> None:
        """Close the database, if it was opened."""
        if self._store is not None:
            self._store.close()


# -- one task ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell that is not an event of the task: a problem reading it, its end, its recovery."""

    text: str
    severity: Severity = Severity.INFO


News = Event | Notice


@dataclasses.dataclass
class Tracked:
    """One followed task: what is known of it, its pace, its current problem and, once it ended, how."""

    id: int
    state: TaskState | None = None
    outcome: Outcome | None = None
    not_found: int = 0  # 404s in a row
    problem: str = ""  # why the last read gave no answer ("" when it did)
    problem_since: datetime | None = None
    refused: str = ""  # the API refused the token for this task, never seen yet: the follow cannot go on
    waiting: bool = False
    mark: PaceMark | None = None
    eta: float | None = None  # seconds to 100 % at the pace kept since it ran
    # What the watcher's call log showed of it (a store's reading only: the API's task answer holds no calls), and
    # when that was read: the last hour is counted back from then.
    health: CallHealth | None = None
    health_read: datetime | None = None

    @property
    def snapshot(self) -> TaskSnapshot | None:
        """The last snapshot read."""
        return self.state.snapshot if self.state is not None else None

    def take(self, reading: Reading, now: datetime, rules: Rules, zones: ZoneResolver, t: Translator) -> list[News]:
        """What a reading changes, and the news of it (events as `detect` finds them, and notices)."""
        news: list[News] = []
        answered = reading.snapshot is not None or reading.not_found or reading.missing or reading.waiting
        if answered and self.problem:
            assert self.problem_since is not None
            lasted = t.duration((now - self.problem_since).total_seconds())
            news.append(Notice(t.say("Task {id} can be read again after {duration}", id=self.id, duration=lasted)))
            self.problem, self.problem_since = "", None
        self.waiting = reading.waiting
        if reading.refused:
            if self.state is None:
                self.refused = reading.refused
            return news + self._failed(t.say("the API refused the token: {reason}", reason=reading.refused), now, t)
        if reading.problem:
            return news + self._failed(reading.problem, now, t)
        if reading.not_found:
            self.not_found += 1
            if self.not_found >= MISSING_AFTER_404S:
                news += self._missing(now, t)
            return news
        self.not_found = 0
        if reading.missing:
            if self.state is None and reading.stored is not None:
                # A store's task the watcher already knows to be missing: told as the watcher told it.
                self.state = dataclasses.replace(reading.stored, missing=False)
            return news + self._missing(now, t)
        if reading.stored is not None:
            self.health, self.health_read = reading.stored.health, now
        if reading.snapshot is None:
            return news
        snapshot = reading.snapshot
        before = self.snapshot
        zones.observe(self.id, before, snapshot, now, None)
        if self.state is None and reading.stored is not None:
            # From a store: the watcher's own memory is the baseline (since when progress stood still, a stall already
            # told), so a stall is measured as the watcher measures it; only the first sight is news here.
            self.state = reading.stored
            events = detect(None, snapshot, now, rules, zone=zones.for_task(self.id))[1]
        else:
            if reading.stored is not None and self.state is not None:
                # The call health is the watcher's, as stored now: judged on a copy frozen at the first reading, it
                # would go stale and hand the stall back to the progress rule (false stalls on calling campaigns).
                self.state = dataclasses.replace(self.state, health=reading.stored.health)
            self.state, events = detect(self.state, snapshot, now, rules, zone=zones.for_task(self.id))
        news += events
        self.mark, self.eta = pace(self.mark, snapshot, now)
        if snapshot.status in _ENDED_BY_STATUS:
            self.outcome = Outcome(snapshot.status)
        return news

    def _failed(self, reason: str, now: datetime, t: Translator) -> list[News]:
        first = not self.problem
        self.problem = reason
        if not first:
            return []
        self.problem_since = now
        return [
            Notice(
                t.say("Task {id} cannot be read now ({reason}); still following it", id=self.id, reason=reason),
                Severity.WARNING,
            )
        ]

    def _missing(self, now: datetime, t: Translator) -> list[News]:
        self.outcome = Outcome.MISSING
        if self.state is not None:
            self.state, events = detect_missing(self.state, now)
            return list(events)
        return [
            Notice(t.say("Task {id} does not exist: the API answers 404 (check the id)", id=self.id), Severity.DANGER)
        ]


# -- what a person reads -----------------------------------------------------------------------------------------


def label(task: Tracked, t: Translator) -> str:
    """ "Task 1001 “Spring reminders”", or "Task 1001" before its name is known."""
    snapshot = task.snapshot
    if snapshot is not None and snapshot.name:
        return t.say("Task {id} “{name}”", id=task.id, name=snapshot.name)
    return t.say("Task {id}", id=task.id)


def status_cell(task: Tracked, t: Translator) -> tuple[str, Severity]:
    """The task's status in the language's words, with what is wrong now, and how it reads (its severity)."""
    if task.outcome is Outcome.MISSING:
        return t.gettext("missing"), Severity.DANGER
    if task.refused and task.snapshot is None:
        return t.gettext("token refused"), Severity.DANGER
    snapshot = task.snapshot
    if snapshot is None:
        if task.problem:
            return t.gettext("no answer yet"), Severity.WARNING
        if task.not_found:
            return t.gettext("not found (404), asking again"), Severity.WARNING
        if task.waiting:
            return t.gettext("not in the watcher's store yet"), Severity.WARNING
        return t.gettext("asking…"), Severity.INFO
    words = [status_text(snapshot.status, t)]
    severity = {
        Outcome.DONE: Severity.GOOD,
        Outcome.FAILED: Severity.DANGER,
        Outcome.STOPPED: Severity.WARNING,
        Outcome.TIMED_OUT: Severity.WARNING,
    }.get(task.outcome, Severity.INFO)  # type: ignore[arg-type]
    if task.state is not None and task.state.stalled:
        words.append(t.gettext("stalled"))
        severity = Severity.DANGER
    if task.outcome is None and task.health is not None and task.health.episode is not None:
        words.append(t.gettext("answer rate dropped"))
        severity = Severity.DANGER if severity is Severity.DANGER else Severity.WARNING
    if task.problem or task.not_found:
        words.append(t.gettext("no answer now") if task.problem else t.gettext("404, asking again"))
        severity = Severity.DANGER if severity is Severity.DANGER else Severity.WARNING
    return " · ".join(words), severity


def rate_cell(task: Tracked, t: Translator) -> str:
    """ "collection rate 12%", or "" before it is known."""
    snapshot = task.snapshot
    if snapshot is None or snapshot.collection_rate is None:
        return ""
    return t.say("collection rate {rate}", rate=t.percent(snapshot.collection_rate))


def calls_cell(task: Tracked, t: Translator) -> str:
    """ "312 calls in the last hour, 41 answered · answer rate 3% (was 40%)" once the watcher read the call log,
    else ""."""
    health = task.health
    if health is None or task.health_read is None:
        return ""
    calls, answered = calls_last_hour(health, task.health_read)
    parts = [
        t.say_n(
            "{count} call in the last hour, {answered} answered",
            "{count} calls in the last hour, {answered} answered",
            calls,
            answered=t.number(answered),
        )
    ]
    if health.rate is not None:
        rate = t.share(health.rate)
        if health.episode is not None:
            parts.append(t.say("answer rate {rate} (was {before})", rate=rate, before=t.share(health.episode.before)))
        else:
            parts.append(t.say("answer rate {rate}", rate=rate))
    return " · ".join(parts)


def eta_cell(task: Tracked, t: Translator) -> str:
    """ "about 3 min left" while it runs at a measured pace, else ""."""
    if task.outcome is not None or task.eta is None:
        return ""
    return t.say("about {duration} left", duration=t.duration(max(1, round(task.eta))))  # whole seconds: an estimate


def line(task: Tracked, t: Translator) -> str:
    """The plain line of a task: "Task 1001 “Spring reminders”: running · 42% · collection rate 12% · …"."""
    status, _ = status_cell(task, t)
    snapshot = task.snapshot
    parts = [status]
    if snapshot is not None:
        parts.append(t.percent(snapshot.progress))
    parts += [cell for cell in (rate_cell(task, t), calls_cell(task, t), eta_cell(task, t)) if cell]
    return t.say("{task}: {state}", task=label(task, t), state=" · ".join(parts))


def headline(item: News, t: Translator, language: str) -> tuple[str, Severity]:
    """What a piece of news says, in one line, and how it reads."""
    if isinstance(item, Notice):
        return item.text, item.severity
    message = build(item, language=language)
    return message.headline, message.severity


def summary(tasks: Sequence[Tracked], t: Translator) -> str:
    """The closing line: all finished, or which did not and how they ended."""
    others = [task for task in tasks if task.outcome is not Outcome.DONE]
    if not others:
        return t.say_n("The task finished.", "All {count} tasks finished.", len(tasks))
    how = ", ".join(t.say("{id} ({status})", id=task.id, status=status_cell(task, t)[0]) for task in others)
    return t.say_n(
        "{count} task did not finish: {which}", "{count} tasks did not finish: {which}", len(others), which=how
    )


class View(Protocol):
    """Shows the tasks and the news as they come."""

    def update(self, tasks: Sequence[Tracked], news: Sequence[tuple[datetime, News]]) -> None:
        """The tasks after a round, and the news of that round."""
        ...

    def close(self) -> None:
        """The end: every task ended, or the follow was stopped (called again: nothing more)."""
        ...


class PlainView:
    """One line per change, for logs and pipes: the news, and a task's line when what it shows changed."""

    def __init__(self, out: TextIO, t: Translator, language: str) -> None:
        self._out, self._t, self._language = out, t, language
        self._shown: dict[int, str] = {}

    def _print(self, when: datetime, text: str) -> None:
        print(f"{when.astimezone():%H:%M:%S} {text}", file=self._out, flush=True)

    def update(self, tasks: Sequence[Tracked], news: Sequence[tuple[datetime, News]]) -> None:
        """Print the news, then each task whose line changed (the ETA alone does not make a line)."""
        for when, item in news:
            self._print(when, headline(item, self._t, self._language)[0])
        now = datetime.now(UTC)
        for task in tasks:
            key = line(dataclasses.replace(task, eta=None), self._t)
            if self._shown.get(task.id) != key:
                self._shown[task.id] = key
                self._print(now, line(task, self._t))

    def close(self) -> None:
        """Nothing to undo in a plain stream."""


_STYLES = {Severity.INFO: "", Severity.GOOD: "green", Severity.WARNING: "yellow", Severity.DANGER: "bold red"}


class _Cell(ProgressColumn):
    """A text field of a task's row, as plain text (names from the API are never read as markup)."""

    def __init__(self, field: str, max_width: int | None = None) -> None:
        # One line per task whatever the terminal's width: what does not fit is cut with an ellipsis, never wrapped.
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis", max_width=max_width))
        self._field = field

    def render(self, task: RichTask) -> RenderableType:
        """The field, in the style kept beside it."""
        text = str(task.fields.get(self._field, ""))
        return Text(text, style=str(task.fields.get(f"{self._field}_style", "")), no_wrap=True, overflow="ellipsis")


class LiveView:
    """A rich progress bar per task (status, collection rate, calls, ETA), the news printed above the bars as it
    comes."""

    def __init__(self, out: TextIO, t: Translator, language: str) -> None:
        self._t, self._language = t, language
        self._console = Console(file=out, highlight=False)
        self._progress = Progress(
            _Cell("label", max_width=40),  # a long campaign name leaves room for the bar
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            _Cell("status"),
            _Cell("rate"),
            _Cell("calls"),
            _Cell("eta"),
            console=self._console,
            refresh_per_second=4,
        )
        self._rows: dict[int, TaskID] = {}
        self._progress.start()

    def update(self, tasks: Sequence[Tracked], news: Sequence[tuple[datetime, News]]) -> None:
        """Print the news above the bars and bring every row up to date."""
        for when, item in news:
            text, severity = headline(item, self._t, self._language)
            self._progress.console.print(Text(f"{when.astimezone():%H:%M:%S} {text}", style=_STYLES[severity]))
        for task in tasks:
            status, severity = status_cell(task, self._t)
            snapshot = task.snapshot
            completed = snapshot.progress if snapshot is not None and snapshot.progress is not None else 0
            if task.id not in self._rows:
                self._rows[task.id] = self._progress.add_task("", total=100)
            self._progress.update(
                self._rows[task.id],
                completed=completed,
                label=label(task, self._t),
                status=status,
                status_style=_STYLES[severity],
                rate=rate_cell(task, self._t),
                calls=calls_cell(task, self._t),
                eta=eta_cell(task, self._t),
            )
        self._progress.refresh()

    def close(self) -> None:
        """Stop drawing; the last frame stays on the screen."""
        if self._progress.live.is_started:
            self._progress.stop()


# -- the loop ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to follow and how."""

    task_ids: tuple[int, ...]
    every: float  # seconds between reads of a task
    rules: Rules
    zones: ZoneResolver
    t: Translator
    language: str


async def follow(
    plan: Plan,
    source: Source,
    view: View,
    out: TextIO,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> int:
    """Follow every task until each ended; return 0 when all are done, 1 otherwise (UsageError: a refused token)."""
    tasks = [Tracked(task_id) for task_id in plan.task_ids]
    failed_rounds = 0
    try:
        while True:
            open_ = [task for task in tasks if task.outcome is None]
            readings = await source.read_all([task.id for task in open_])
            now = clock()
            news: list[tuple[datetime, News]] = []
            for task in open_:
                news += [(now, item) for item in task.take(readings[task.id], now, plan.rules, plan.zones, plan.t)]
            view.update(tasks, news)
            if refused := [task for task in tasks if task.refused and task.snapshot is None]:
                # A token that never worked is the config's problem, not an outage: waiting would wait forever.
                raise UsageError(f"task {refused[0].id}: {refused[0].refused}; check api.token")
            if all(task.outcome is not None for task in tasks):
                break
            # While no task answers, ask less often (doubling, up to eight times --every), as the daemon does.
            failed_rounds = failed_rounds + 1 if all(readings[task.id].problem for task in open_) else 0
            await sleep(poll_failure_delay(plan.every, failed_rounds) if failed_rounds else plan.every)
    finally:
        view.close()  # before the summary: a live display still drawing would overwrite it
    print(summary(tasks, plan.t), file=out, flush=True)
    return EXIT_DONE if all(task.outcome is Outcome.DONE for task in tasks) else EXIT_OTHERWISE


async def follow_until_signal(plan: Plan, source: Source, view: View, out: TextIO) -> int:
    """`follow`, ended early by SIGTERM (exit 143: a script chained on it must not go on as if the tasks were done)."""
    result = EXIT_SIGTERM
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                nonlocal result
                result = await follow(plan, source, view, out)
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            async for _ in signals:
                tg.cancel_scope.cancel()
                break
    return result


async def run(
    config: Config,
    task_ids: Sequence[int],
    *,
    every: float,
    source: str,
    plain: bool,
    language: str,
    out: TextIO,
) -> int:
    """`watcher follow`: open the source the command line asks for, pick the view the output suits, follow."""
    plan = Plan(
        task_ids=tuple(dict.fromkeys(task_ids)),
        every=every,
        rules=knobs(config)[0],
        zones=ZoneResolver(config.watch.tz, config.watch.task_zones),
        t=translator(language),
        language=language,
    )
    view: View = PlainView(out, plan.t, language) if plain else LiveView(out, plan.t, language)
    try:
        async with _source(config, source) as reader:
            return await follow_until_signal(plan, reader, view, out)
    finally:
        view.close()


@asynccontextmanager
async def _source(config: Config, kind: str) -> AsyncIterator[Source]:
    if kind == "api":
        async with VoiceFoxClient(
            config.api.base_url,
            config.api.token.get_secret_value(),
            timeout=config.api.timeout,
            verify=config.api.verify_tls,
            transport_kind=resolve_transport(config.api.transport),
        ) as client:
            rate = AdaptiveRate(config.api.max_rps, time.monotonic, anyio.sleep)
            yield ApiSource(client, ApiGate(time.monotonic, anyio.sleep), rate, config.watch.concurrency)
        return
    if not config.store.postgres:
        sqlite = SqliteReader(Path(config.store.path))
        try:
            yield StoreSource(sqlite)
        finally:
            sqlite.close()
        return
    from .postgres import PostgresStore

    # Never creates nor migrates a schema: a follower only reads what a running watcher keeps.
    pg = await PostgresStore.open_checked(config.store.conninfo(), shown=config.store.shown(), existing=True)
    try:
        yield StoreSource(pg)
    finally:
        await pg.close()

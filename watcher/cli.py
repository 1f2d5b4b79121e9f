"""The `watcher` command: run | check | route | once | status | follow | outbox | store | notify-test | health | simulate |
demo."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

import anyio
import httpx
import structlog
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import __version__, logs, notify, systemd
from . import config as config_mod
from .cli_run import Components, delivery_client, notify_context, open_components
from .config import Config
from .daemon import knobs, with_added
from .errors import ConfigError, DeliveryError, StoreError, StoreNotEmpty, UsageError, WatcherError
from .fields import NotifierBase
from .health import CallHealth, calls_last_hour
from .i18n import DEFAULT_LANGUAGE, LANGUAGES, translator
from .matchers import check_labels, matches
from .model import RESOLVES, Event, EventType, TaskState
from .notify.message import build as build_message
from .ops import OpsServer
from .replicas import API_EVENTS, RECEIVER, TASK, WATCHER, Membership
from .routing import Route, Router
from .schedule import DOUBT_FOR, next_poll
from .store import AddedTask, OutboxCount, OutboxRow, Store
from .zone import Source, Zone, ZoneResolver, fixed, offset_label, parse_offset

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STATUS_EVERY = 15.0  # seconds between STATUS= updates to systemd
_log = structlog.get_logger("watcher.cli")


def _setup_logging(config: Config, args: argparse.Namespace, also_redact: Sequence[str] = ()) -> None:
    logs.configure(
        level=getattr(args, "log_level", None) or config.log.level,
        fmt=getattr(args, "log_format", None) or config.log.format,
        secrets=[*config_mod.secret_values(config), *also_redact],
    )
    path = config_mod.default_path(getattr(args, "config", None))
    if exposed := config_mod.literal_secrets_exposed(path):
        _log.warning(
            "config.secrets_readable",
            path=str(path),
            keys=exposed,
            hint=f"others can read these secrets: chmod 600 {path}, or use ${{VAR}} or "
            + "/".join(dict.fromkeys(f"{key.rsplit('.', 1)[-1]}_file" for key in exposed)),
        )


async def _run(config: Config, path: Path, args: argparse.Namespace) -> int:
    if not config.notifiers:
        _log.warning("config.no_notifiers", hint="events are stored but sent nowhere; add a [[notifiers]] entry")
    sd = systemd.Notifier()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with open_components(config, shared=True) as parts, anyio.create_task_group() as tg:
            if (address := config.http.address) is not None:
                page = None
                if config.http.ui:
                    from .ui import StatusPage

                    page = StatusPage(parts.daemon, parts.store)
                ops = OpsServer(parts.daemon, parts.store, parts.metrics, replicas=parts.coordinator, page=page)
                try:
                    port = await tg.start(ops.serve, *address)
                except OSError as exc:
                    raise UsageError(
                        f"http.listen: cannot listen on {config.http.listen}: {exc.strerror or exc}"
                    ) from None
                paths = ["/healthz", "/readyz", "/metrics", *(["/"] if page is not None else [])]
                _log.info("http.listening", host=address[0], port=port, paths=paths)
            parts.daemon.heartbeat_hooks.append(sd.ping)
            if sd.enabled:
                tg.start_soon(_report_status, parts, sd)
            await tg.start(parts.daemon.run)
            if parts.coordinator is not None:
                await tg.start(parts.coordinator.run)
            sd.send("READY=1", f"STATUS={await _status_line(parts)}")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    sd.send("RELOADING=1")
                    _reload(parts, path, args)
                    sd.send("READY=1", f"STATUS={await _status_line(parts)}")
                    continue
                _log.info("watcher.stopping", signal=signal.Signals(signum).name)
                sd.send("STOPPING=1")
                parts.dispatcher.shutdown()
                tg.cancel_scope.cancel()
                break
    _log.info("watcher.stopped")
    return EXIT_OK


async def _status_line(parts: Components) -> str:
    """One line for `systemctl status`: what is watched, how fresh, what waits."""
    tasks = len(parts.daemon.config.watch.ids)
    silent = time.monotonic() - parts.daemon.last_answer
    try:
        counts = await parts.store.outbox_counts()
    except StoreError:
        return f"watching {tasks} tasks; the store cannot be read"
    pending = sum(c.count for c in counts if c.state == "pending")
    dead = sum(c.count for c in counts if c.state == "dead")
    return f"watching {tasks} tasks; API answered {silent:.0f}s ago; {pending} deliveries pending, {dead} dead"


async def _report_status(parts: Components, sd: systemd.Notifier) -> None:
    while True:
        await anyio.sleep(STATUS_EVERY)
        sd.send(f"STATUS={await _status_line(parts)}")


def _reload(parts: Components, path: Path, args: argparse.Namespace) -> None:
    """SIGHUP: re-read the config; an invalid one is refused and the running one stays."""
    try:
        new = config_mod.load(path)
    except ConfigError as exc:
        _log.error(
            "config.reload_failed", path=str(path), problems=exc.problems, hint="still running the previous config"
        )
        return
    old = parts.daemon.file_config
    try:
        needs_restart = parts.reload(new)
    except Exception:  # noqa: BLE001 - a reload must never take the running daemon down
        _log.exception("config.reload_failed", path=str(path), hint="still running the previous config")
        return
    # Secrets of the config still in force (the api token changes only on restart) stay redacted with the new ones.
    _setup_logging(new, args, also_redact=config_mod.secret_values(old))
    _log.info(
        "config.reloaded",
        path=str(path),
        tasks_added=sorted(set(new.watch.ids) - set(old.watch.ids)),
        tasks_removed=sorted(set(old.watch.ids) - set(new.watch.ids)),
    )
    if needs_restart:
        _log.warning("config.restart_needed", sections=needs_restart, hint="these sections change only on restart")


async def _once(config: Config) -> int:
    async with open_components(config) as parts:
        await parts.dispatcher.drain()  # what an earlier run left undelivered goes first
        polled = await parts.daemon.poll_all()
        held = await parts.dispatcher.drain()
        pending = sum(c.count for c in await parts.store.outbox_counts() if c.state == "pending")
    _log.info("once.finished", polls_ok=polled, pending_deliveries=pending, held_by_quiet_hours=held)
    # Rows quiet hours hold are pending by design: a later run delivers them when the quiet hours end.
    return EXIT_OK if polled and pending <= held else EXIT_FAILURE


CALLLOG_SHORT_STALL = 300.0  # seconds: a stall_after below this may be shorter than a long call


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config file."""
    config = config_mod.load(config_mod.default_path(args.config))
    if problems := _template_problems(config):
        raise ConfigError(problems, str(config_mod.default_path(args.config)))
    out = args.stdout
    print(f"{config_mod.default_path(args.config)}: OK", file=out)
    print(f"  api: {config.api.base_url} (timeout {config.api.timeout:g}s)", file=out)
    print(
        f"  watch: {len(config.watch.ids)} task(s) every {config.watch.interval:g}s; progress step "
        f"{config.watch.progress_step}%, stalled after {config.watch.stall_after:g}s",
        file=out,
    )
    watch = config.watch
    zone = (
        f"{watch.timezone} (watch.timezone)"
        if watch.timezone
        else "found from the API's timestamps (watch.timezone not set; see `watcher status` once it has run)"
    )
    print(f"  calling windows read in: {zone}", file=out)
    for task_id, own in sorted(watch.task_zones.items()):
        print(f"    task {task_id}: {own.key} ([[watch.task]] timezone)", file=out)
    health = config.health
    if health.calllog:
        print(
            f"  call log: read every {health.every:g}s for running tasks in their windows; answered share judged over"
            f" {health.window} calls (from {health.min_calls}): a drop is under {health.answer_rate_floor:.0%} and"
            f" {health.answer_rate_drop:.0%} below the task's own",
            file=out,
        )
        if watch.stall_after < CALLLOG_SHORT_STALL:
            print(
                f"  warning: watch.stall_after is {watch.stall_after:g}s: the call log lists a call once it has ended,"
                " so a task on long calls may look silent; keep it above your longest calls (15m is the default)",
                file=out,
            )
    else:
        print("  call log: off ([health] calllog = false): stalls rest on progress alone", file=out)
    if config.store.postgres:
        lease = config.store.lease_for(config.watch.interval)
        print(f"  store: {config.store.shown()} (PostgreSQL; replicas share the work, lease {lease:g}s)", file=out)
    else:
        print(f"  store: {config.store.path}", file=out)
    for rule in knobs(config)[0].task_rules:  # (compiled: the config checked them)
        reads = ", ".join(rule.expression.variables) or "no variable"
        print(f"  rule {rule.name}: {rule.when} (compiled OK; reads {reads})", file=out)
    router = Router.of(config.notifiers)
    for n, route in zip(config.notifiers, router.routes, strict=True):
        events = n.events if n.events is not None else notify.DEFAULT_EVENTS[n.kind]
        language = n.language or config.messages.language
        print(f"  notifier {n.name}: {n.kind} in {language}, events {', '.join(events)}", file=out)
        for line in _route_lines(config, n, route):
            print(f"    {line}", file=out)
    if not config.notifiers:
        print("  warning: no [[notifiers]]: events would be stored but sent nowhere", file=out)

    path = config_mod.default_path(args.config)
    if exposed := config_mod.literal_secrets_exposed(path):
        print(f"  warning: others can read the secrets in {', '.join(exposed)}: chmod 600 {path}", file=out)
    return EXIT_OK


def _route_lines(config: Config, n: NotifierBase, route: Route) -> list[str]:
    """What reaches a notifier and how: its tasks, its event types, and its noise settings, for `watcher check`."""
    labels = config.watch.labels
    reached = [t for t in config.watch.ids if matches(route.matchers, labels.get(t, {}))]
    types = [t.value for t in EventType if t is not EventType.TEST and route.wants_type(t.value)]
    short = [t.rsplit(".", 1)[-1] for t in types]
    lines = []
    if route.matchers:
        lines.append(f"matchers {', '.join(map(str, route.matchers))}")
    tasks = "every task" if len(reached) == len(config.watch.ids) else _ids(reached) or "no configured task"
    lines.append(f"gets {', '.join(short) or 'no event'} of {tasks}")
    if not n.send_resolved:
        lines.append("send_resolved = false: not told when a problem is over")
    if quiet := config.quiet_hours(n):
        urgent = f"; urgent: {', '.join(n.urgent)}" if n.urgent else ""
        lines.append(f"quiet hours {quiet.describe()}: events held until they end{urgent}")
    if n.group_wait:
        lines.append(f"group_wait {n.group_wait:g}s: a burst goes out as one message")
    if n.repeat_every:
        most = f", at most {n.repeat_max} time(s)" if n.repeat_max else ""
        lines.append(f"reminds every {n.repeat_every:g}s while a problem lasts{most}")
    return lines


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(t) for t in ids[:20])
    return f"task(s) {shown}" + (f" and {len(ids) - 20} more" if len(ids) > 20 else "") if ids else ""


def _event_type(text: str) -> str:
    """--event: a full event type, or its last part ("failed")."""
    known = {t.value: t.value for t in EventType} | {t.value.rsplit(".", 1)[-1]: t.value for t in EventType}
    if text not in known:
        short = ", ".join(t.value.rsplit(".", 1)[-1] for t in EventType)
        raise argparse.ArgumentTypeError(f"{text!r} is not an event type (one of: {short}; or the full name)")
    return known[text]


def _task_id(text: str) -> int:
    try:
        return config_mod.task_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label: write name=value, e.g. team=sales")
    try:
        return next(iter(check_labels({name.strip(): value.strip()}).items()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_route(args: argparse.Namespace) -> int:
    """Say which notifiers an event of a task would reach, and why the others would not."""
    config = config_mod.load(config_mod.default_path(args.config))
    out = args.stdout
    labels = dict(config.watch.labels.get(args.task, {}))
    labels.update(dict(args.label or []))
    watched = args.task in config.watch.ids
    shown = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) or "no labels"
    print(f"{args.event} of task {args.task} ({shown}{'' if watched else '; not a configured task'}):", file=out)
    router = Router.of(config.notifiers)
    told = router.receivers(args.event, labels)
    for route in router.routes:
        if route.name in told:
            print(f"  {route.name}: told", file=out)
        elif not route.wants_type(args.event):
            why = (
                "send_resolved = false"
                if args.event in RESOLVES and not route.send_resolved
                else "its events do not include this type"
            )
            print(f"  {route.name}: not told ({why})", file=out)
        else:
            failed = [str(m) for m in route.matchers if not m(labels)]
            print(f"  {route.name}: not told (labels do not match {', '.join(failed)})", file=out)
    if not told:
        print("  nobody would be told", file=out)
    return EXIT_OK


def _template_problems(config: Config) -> list[str]:
    """Every notifier template rendered against a sample event of every type: what fails, by notifier and event."""
    from .notify.templates import TemplateError, Templates, samples

    problems = []
    for i, n in enumerate(config.notifiers):
        templates = Templates.compile(n.name, n.title_template, n.body_template)  # (compiles: the config checked it)
        if templates is None:
            continue
        language = n.language or config.messages.language
        wants = notify.EventFilter(n.events if n.events is not None else notify.DEFAULT_EVENTS[n.kind])
        for event in samples():
            if not wants(event.type):  # (notify-test's own event falls back to the built-in message if need be)
                continue
            try:
                templates.render(build_message(event, language=language, task_url=config.messages.task_url), event)
            except TemplateError as exc:
                problems.append(f"notifiers[{i}] ({n.name}): a template fails for {event.type}: {exc}")
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    path = config_mod.default_path(args.config)
    config = config_mod.load(path)
    _setup_logging(config, args)
    return anyio.run(_run, config, path, args)


def cmd_once(args: argparse.Namespace) -> int:
    """One poll round and delivery, then exit."""
    config = config_mod.load(config_mod.default_path(args.config))
    _setup_logging(config, args)
    return anyio.run(_once, config)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the last known state of each task from the store, without calling the API."""
    config = config_mod.load(config_mod.default_path(args.config))
    if not config.store.postgres and not Path(config.store.path).exists():
        print(f"{config.store.path}: no state yet (the watcher has not run with this store)", file=args.stdout)
        return EXIT_OK
    with _tool_store(config) as store:
        states = store.load_states()
        counts = store.outbox_counts()
        unseen = store.unseen()
        stored_zone = store.meta("zone")
        learned = store.meta("zone.learned")
        members = store.membership()
        added = store.added_tasks()
    file_ids = set(config.watch.ids)
    config = with_added(config, {task_id: task.labels for task_id, task in added.items()})  # as the daemon sees it
    cadence = knobs(config)[1]
    now = datetime.now(UTC)
    # Finished longer than watch.done_linger ago: the daemon no longer polls them.
    dropped = {tid for tid, s in states.items() if next_poll(s, now, cadence) is None}
    watched = set(config.watch.ids)
    # The zones as the daemon resolves them, from what the store keeps: the configured ones, each task's own
    # timestamps, and what the daemon learned.
    kept = json.loads(learned) if learned else {}
    offset = kept.get("offset") if isinstance(kept, dict) and kept.get("api") == config.api.base_url else None
    zones = ZoneResolver(config.watch.tz, config.watch.task_zones, learned=offset if isinstance(offset, int) else None)
    for tid, s in states.items():
        zones.observe(tid, None, s.snapshot, now, None)
    zone = zones.zone()
    if not zone.known and stored_zone:
        zone = Zone.from_dict(json.loads(stored_zone))

    def doubted(s: TaskState) -> bool:
        return s.windows_doubted_at is not None and now - s.windows_doubted_at < DOUBT_FOR

    def polled_by(tid: int) -> str | None:
        return members.owner_of(TASK, str(tid)) if members is not None else None

    if args.json:
        doc = {
            "zone": {**zone.to_dict(), "how": zone.describe()},
            "tasks": [
                {
                    **s.snapshot.to_dict(),
                    "progressSince": s.progress_since.isoformat(),
                    "stalled": s.stalled,
                    "missing": s.missing,
                    "watched": tid in watched,
                    "added": tid in added,  # at run time (`watcher tasks add`)
                    "polled": tid in watched and tid not in dropped,
                    "zone": zones.for_task(tid).to_dict(),
                    "windowsDoubted": doubted(s),
                    "windowsDoubtedAt": s.windows_doubted_at.isoformat() if s.windows_doubted_at else None,
                    "calls": _calls_doc(s.health, now),
                    **({"polledBy": polled_by(tid)} if members is not None else {}),
                }
                for tid, s in sorted(states.items())
            ],
            "notSeen": [
                {"id": tid, "reason": reason, "since": since.isoformat()}
                for tid, (reason, since) in sorted(unseen.items())
                if tid in watched and tid not in states
            ],
            "outbox": [{"receiver": c.receiver, "state": c.state, "count": c.count} for c in counts],
        }
        if members is not None:
            doc["replicas"] = _replicas_doc(members)
        print(json.dumps(doc, indent=2, ensure_ascii=False), file=args.stdout)
        return EXIT_OK
    out = args.stdout
    print(f"campaigns' time zone: {zone.describe()}", file=out)
    shown = zone.tz or UTC  # times are shown in the campaigns' zone when it is known, else in UTC, with the offset
    print(f"{'TASK':>8}  {'STATUS':<14}{'PROGRESS':>9}  {'LAST CHANGE':<25}  NAME", file=out)
    for tid in config.watch.ids:
        state = states.get(tid)
        if state is None:
            reason = unseen.get(tid, ("not polled yet", now))[0]
            print(f"{tid:>8}  ({reason})", file=out)
            continue
        snapshot = state.snapshot
        flags = (" [stalled]" if state.stalled else "") + (" [missing]" if state.missing else "")
        flags += " [added at run time]" if tid in added and tid not in file_ids else ""
        flags += " [finished; no longer polled]" if tid in dropped else ""
        flags += " [seen calling outside its windows: polled as if open]" if doubted(state) else ""
        own = zones.for_task(tid)
        if own.source is Source.TASK:
            flags += f" [windows in {own.name}]"
        if members is not None and tid not in dropped:
            flags += f" [polled by {polled_by(tid) or 'no replica now'}]"
        flags += " [answer rate dropped]" if state.health is not None and state.health.episode is not None else ""
        progress = f"{snapshot.progress}%" if snapshot.progress is not None else "–"
        since = _timestamp(state.progress_since, shown)
        print(f"{tid:>8}  {snapshot.status:<14}{progress:>9}  {since:<25}  {snapshot.name}{flags}", file=out)
        if state.health is not None:
            print(f"{'':>8}  {_calls_line(state.health, now, shown)}", file=out)
    for tid in sorted(set(states) - watched):
        print(f"{tid:>8}  (no longer in watch.tasks)", file=out)
    if counts:
        print("\nOUTBOX", file=out)
        for c in counts:
            print(f"  {c.receiver:<20} {c.state:<10} {c.count}", file=out)
    if members is not None:
        _print_replicas(members, out)
    return EXIT_OK


def _calls_doc(health: CallHealth | None, now: datetime) -> dict[str, object] | None:
    """What the call log showed of a task (`status --json`): counts, shares and times, never a number called."""
    if health is None:
        return None
    calls, answered = calls_last_hour(health, now)
    episode = health.episode
    return {
        "lastHour": {"calls": calls, "answered": answered},
        "answerRate": health.rate,  # the answered share of the latest calls (the judged window)
        "answerRateCalls": len(health.window),
        "total": health.calls,  # since the first look
        "answered": health.answered,
        "lastCallAt": health.last_start.isoformat() if health.last_start else None,
        "lastLookAt": health.last_look.isoformat() if health.last_look else None,
        "answerRateDropped": (
            {"before": episode.before, "after": episode.after, "since": episode.since.isoformat()}
            if episode is not None
            else None
        ),
    }


def _calls_line(health: CallHealth, now: datetime, zone: tzinfo) -> str:
    """ "calls in the last hour: 312, 41 answered · answer rate 3% (latest 100 calls)", and a collapse if ongoing."""
    calls, answered = calls_last_hour(health, now)
    text = f"calls in the last hour: {calls}, {answered} answered"
    if health.rate is not None:
        text += f" · answer rate {health.rate:.0%} (latest {len(health.window)} calls)"
    if (episode := health.episode) is not None:
        text += (
            f" · answer rate dropped: {episode.before:.0%} → {episode.after:.0%}"
            f" since {_timestamp(episode.since, zone)}"
        )
    return text


def _replicas_doc(members: Membership) -> list[dict[str, object]]:
    """The replicas on a PostgreSQL store, what each holds, and how fresh its leases are (`status --json`)."""
    return [
        {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "version": r.version,
            "alive": r.alive,
            "startedAt": r.started_at.isoformat(),
            "seenAt": r.seen_at.isoformat(),
            "seenSecondsAgo": round((members.now - r.seen_at).total_seconds(), 1),
            "tasks": sorted(int(k) for k in members.held(TASK, owner=r.id)),
            "receivers": sorted(members.held(RECEIVER, owner=r.id)),
            "announcesApiOutages": API_EVENTS in members.held(WATCHER, owner=r.id),
        }
        for r in members.replicas
    ]


def _print_replicas(members: Membership, out: TextIO) -> None:
    print("\nREPLICAS", file=out)
    if not members.replicas:
        print("  (none running)", file=out)
    for r in members.replicas:
        ago = (members.now - r.seen_at).total_seconds()
        state = f"alive, renewed {ago:.0f}s ago" if r.alive else f"gone (last seen {ago:.0f}s ago)"
        tasks, receivers = members.held(TASK, owner=r.id), members.held(RECEIVER, owner=r.id)
        print(f"  {r.id:<32} {state}; {len(tasks)} tasks, receivers: {', '.join(sorted(receivers)) or '-'}", file=out)


def _timestamp(when: datetime, zone: tzinfo) -> str:
    """ "2026-11-23 18:00:00 +09:00": a time people can read, with the offset that makes it unambiguous."""
    local = when.astimezone(zone)
    offset = local.utcoffset()
    return f"{local:%Y-%m-%d %H:%M:%S} {offset_label(int(offset.total_seconds() // 60)) if offset else '+00:00'}"


class _ToolAdmin(Protocol):
    """The operator's outbox queries, as the command-line tools call them (each to its end)."""

    def outbox_rows(
        self, *, states: Iterable[str], receiver: str | None = None, limit: int | None = 100
    ) -> list[OutboxRow]: ...
    def outbox_total(self, *, states: Iterable[str], receiver: str | None = None) -> int: ...
    def outbox_seqs(self, seqs: Iterable[int]) -> dict[int, tuple[str, str]]: ...
    def requeue(self, *, seqs: Iterable[int] = (), receiver: str | None = None, now: float) -> int: ...
    def drop(self, *, state: str, seqs: Iterable[int] = (), receiver: str | None = None) -> int: ...


class _ToolStore(Protocol):
    """What `status` and `outbox` read of a store: SQLite's `Store` itself, or PostgreSQL through a portal."""

    def load_states(self) -> dict[int, TaskState]: ...
    def outbox_counts(self) -> list[OutboxCount]: ...
    def unseen(self) -> dict[int, tuple[str, datetime]]: ...
    def meta(self, key: str) -> str | None: ...
    def membership(self) -> Membership | None: ...
    def added_tasks(self) -> dict[int, AddedTask]: ...
    def admin(self) -> _ToolAdmin: ...


class _Blocking:
    """An async object's methods, each run to its end from the command-line tools' plain code (a blocking portal)."""

    def __init__(self, portal: BlockingPortal, target: Any, admin: Any = None) -> None:
        self._portal, self._target, self._admin = portal, target, admin

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        return lambda *args, **kwargs: self._portal.call(functools.partial(method, *args, **kwargs))

    def admin(self) -> Any:
        return _Blocking(self._portal, self._admin)


@contextlib.contextmanager
def _tool_store(config: Config, *, existing: bool = False) -> Iterator[_ToolStore]:
    """The configured store for a command-line tool; `existing`: a SQLite file must be there already."""
    if not config.store.postgres:
        if existing and not Path(config.store.path).exists():
            raise StoreError(f"{config.store.path}: no state yet (the watcher has not run with this store)")
        store = Store.open(config.store.path)
        try:
            yield store
        finally:
            store.close()
        return
    from .postgres import PostgresAdmin, PostgresStore

    with start_blocking_portal() as portal:
        pg = portal.call(functools.partial(PostgresStore.open, config.store.conninfo(), shown=config.store.shown()))
        try:
            yield cast(_ToolStore, _Blocking(portal, pg, PostgresAdmin(pg)))
        finally:
            portal.call(pg.close)


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = int(now - then)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def cmd_outbox(args: argparse.Namespace) -> int:
    """List pending and dead-lettered deliveries, or retry or drop them."""
    config = config_mod.load(config_mod.default_path(args.config))
    with _tool_store(config, existing=True) as store:
        return _outbox(args, config, store)


def _outbox(args: argparse.Namespace, config: Config, store: _ToolStore) -> int:
    out = args.stdout
    admin = store.admin()
    _check_receiver(store, config, args.receiver)
    if args.action == "list":
        states = {"pending": ["pending"], "dead": ["dead"], "all": ["pending", "dead"]}[args.state]
        limit = args.limit or None  # --limit 0: every row
        rows = admin.outbox_rows(states=states, receiver=args.receiver, limit=limit)
        cut = None
        if limit is not None and len(rows) == limit:
            total = admin.outbox_total(states=states, receiver=args.receiver)
            if total > limit:
                cut = f"showing {limit} of {total}; --limit 0 for all"
        if args.json:
            print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2), file=out)
            if cut:
                print(cut, file=sys.stderr)  # stdout stays one JSON list for scripts; people still see the cut
            return EXIT_OK
        if not rows:
            print(f"no {' or '.join(states)} deliveries", file=out)
            return EXIT_OK
        now = time.time()
        print(
            f"{'SEQ':>6}  {'RECEIVER':<16}{'STATE':<9}{'TRIES':>5}  {'CREATED':<10}{'LAST TRY':<10}  EVENT",
            file=out,
        )
        for r in rows:
            print(
                f"{r.seq:>6}  {r.receiver:<16}{r.state:<9}{r.attempts:>5}  {_ago(r.created_at, now):<10}"
                f"{_ago(r.last_attempt_at, now):<10}  {r.event_type} task {r.task_id}",
                file=out,
            )
            if r.last_error:
                print(f"{'':>8}last error: {r.last_error}", file=out)
        if cut:
            print(cut, file=out)
        return EXIT_OK
    if not (args.seq or args.receiver or args.all):
        raise UsageError(f"outbox {args.action}: say which deliveries: --seq N, --receiver NAME or --all")
    state = "pending" if args.action == "drop" and args.pending else "dead"
    seqs, refused = _selected_seqs(admin, args.seq or [], state, args.receiver, args.action)
    # When every --seq was refused there is nothing to do: an empty seq list would select every row of the state.
    if seqs or not args.seq:
        if args.action == "retry":
            n = admin.requeue(seqs=seqs, receiver=args.receiver, now=time.time())
            print(
                f"{n} dead-lettered deliveries queued again (a running watcher sends them within a minute)",
                file=out,
            )
        else:
            n = admin.drop(state=state, seqs=seqs, receiver=args.receiver)
            print(f"{n} {state} deliveries dropped", file=out)
    for problem in refused:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_FAILURE if refused else EXIT_OK


def _check_receiver(store: _ToolStore, config: Config, name: str | None) -> None:
    """Raise UsageError unless --receiver names a configured notifier or one the outbox still holds rows for."""
    if name is None:
        return
    configured = [n.name for n in config.notifiers]
    if name not in configured and name not in {c.receiver for c in store.outbox_counts()}:
        raise UsageError(
            f"--receiver: no notifier named {name!r} in the config or the outbox "
            f"(configured: {', '.join(configured) or 'none'})"
        )


# Why a row in `actual` state cannot be retried or dropped as asked, keyed by (action, state acted on, actual).
_REFUSED = {
    ("retry", "dead", "pending"): "it is still queued, so there is nothing to retry",
    ("retry", "dead", "delivered"): "the receiver accepted it, so there is nothing to retry",
    ("drop", "dead", "pending"): "add --pending to drop a pending delivery",
    ("drop", "dead", "delivered"): "the receiver accepted it, so there is nothing to drop",
    ("drop", "pending", "dead"): "drop a dead letter without --pending",
    ("drop", "pending", "delivered"): "the receiver accepted it, so there is nothing to drop",
}


def _selected_seqs(
    admin: _ToolAdmin, seqs: list[int], state: str, receiver: str | None, action: str
) -> tuple[list[int], list[str]]:
    """The --seq rows that can be acted on, and why each other one cannot; UsageError for a seq that does not exist."""
    seqs = list(dict.fromkeys(seqs))
    found = admin.outbox_seqs(seqs)
    if unknown := [str(seq) for seq in seqs if seq not in found]:
        raise UsageError(
            f"--seq {', '.join(unknown)}: no such row in the outbox (`watcher outbox list` shows each row's SEQ)"
        )
    selected, refused = [], []
    for seq in seqs:
        owner, actual = found[seq]
        if actual != state:
            refused.append(f"seq {seq} is {actual}, not {state}: {_REFUSED[action, state, actual]}")
        elif receiver is not None and owner != receiver:
            refused.append(f"seq {seq} is a delivery to {owner!r}, not to {receiver!r}")
        else:
            selected.append(seq)
    return selected, refused


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy the state and the undelivered outbox from one store to another, in one transaction on the target."""
    from .storecopy import Location, copy

    source = Location.parse(args.source, option="--from")
    target = Location.parse(args.target, option="--to")
    try:
        copied = anyio.run(functools.partial(copy, source, target, replace=args.force))
    except StoreNotEmpty as exc:
        raise StoreNotEmpty(f"{exc}; copy into an empty store, or add --force to replace what it holds") from None
    if args.json:
        print(json.dumps(dataclasses.asdict(copied), indent=2), file=args.stdout)
    else:
        print(copied.summary(), file=args.stdout)
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    """Send a test event to every notifier (or one) directly, and report each result."""
    config = config_mod.load(config_mod.default_path(args.config))
    _setup_logging(config, args)
    names = [n.name for n in config.notifiers]
    if args.notifier and args.notifier not in names:
        raise UsageError(f"--notifier: no notifier named {args.notifier!r} (configured: {', '.join(names) or 'none'})")
    if not names:
        raise ConfigError(["no [[notifiers]] configured: nothing to test"], str(config_mod.default_path(args.config)))
    now = datetime.now(UTC)
    event = Event(
        id=f"test-{int(now.timestamp())}-{os.getpid()}",
        type=EventType.TEST.value,
        time=now,
        subject="test",
        data={"message": "If you can read this, voicefox-watcher can reach you."},
    )

    t = translator(config.messages.language)

    async def send_all() -> int:
        failed = 0
        async with delivery_client(config) as http:
            for name, notifier in notify.build(config.notifiers, notify_context(config, http)).items():
                if args.notifier and name != args.notifier:
                    continue
                try:
                    await notifier.send(event)
                except DeliveryError as exc:
                    failed += 1
                    line = (
                        t.say("{name}: FAILED (permanent): {error}", name=name, error=exc)
                        if exc.permanent
                        else t.say("{name}: FAILED (temporary): {error}", name=name, error=exc)
                    )
                    print(line, file=args.stdout)
                else:
                    print(t.say("{name}: sent", name=name), file=args.stdout)
        return EXIT_FAILURE if failed else EXIT_OK

    return anyio.run(send_all)


def _endpoint(config: Config, command: str) -> str:
    """The running watcher's operator endpoint, from `[http] listen` (a wildcard address asked on loopback)."""
    address = config.http.address
    if address is None:
        raise UsageError(
            f"{command}: [http] listen is not set in the config, so there is nothing to ask (or give --url)"
        )
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - mapping, not binding
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def cmd_health(args: argparse.Namespace) -> int:
    """Ask a running watcher's /healthz (or /readyz); exit 0 if it answers 200, 1 otherwise. For HEALTHCHECK."""
    if args.url:
        url = args.url
    else:
        config = config_mod.load(config_mod.default_path(args.config))
        url = f"{_endpoint(config, 'health')}/{'readyz' if args.ready else 'healthz'}"
    try:
        response = httpx.get(url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"unhealthy: {url}: {exc.__class__.__name__}", file=args.stdout)
        return EXIT_FAILURE
    print(f"{'healthy' if response.status_code == 200 else 'unhealthy'}: {response.text.strip()}", file=args.stdout)
    return EXIT_OK if response.status_code == 200 else EXIT_FAILURE


def cmd_tasks(args: argparse.Namespace) -> int:
    """`watcher tasks add|remove|list`: the tasks watched beside the config's, through a running watcher."""
    config = config_mod.load(config_mod.default_path(args.config))
    base = (args.url or _endpoint(config, "tasks")).rstrip("/")
    headers = {"Authorization": f"Bearer {config.http.token.get_secret_value()}"} if config.http.token else {}
    out = args.stdout
    if args.action in ("add", "remove") and not args.ids:
        raise UsageError(f"tasks {args.action}: give at least one task id")
    try:
        with httpx.Client(timeout=args.timeout, headers=headers) as http:
            if args.action == "list":
                response = http.get(f"{base}/tasks")
                _check_tasks_answer(response, base)
                tasks = response.json()["tasks"]
                if args.json:
                    print(json.dumps(tasks, ensure_ascii=False, indent=2), file=out)
                    return EXIT_OK
                for task in tasks:
                    labels = ", ".join(f"{k}={v}" for k, v in sorted(task["labels"].items()))
                    progress = "" if task["progress"] is None else f" {task['progress']}%"
                    shown = f"{task['status'] or 'not polled yet'}{progress}"
                    name = f" {task['name']}" if task["name"] else ""
                    print(f"{task['id']:>10} {task['source']:<6} {shown:<24}{name}  {labels}".rstrip(), file=out)
                return EXIT_OK
            failed = False
            for task_id in args.ids:
                if args.action == "add":
                    response = http.post(f"{base}/tasks", json={"id": task_id, "labels": dict(args.label or [])})
                else:
                    response = http.delete(f"{base}/tasks/{task_id}")
                if response.status_code in (404, 409):
                    failed = True
                    why = (
                        "is in the config file: edit the file to stop watching it"
                        if response.status_code == 409
                        else "was not added at run time: nothing to remove"
                    )
                    print(f"task {task_id}: {why}", file=out)
                    continue
                _check_tasks_answer(response, base)
                print(f"task {task_id}: {response.json()['status']}", file=out)
            return EXIT_FAILURE if failed else EXIT_OK
    except httpx.HTTPError as exc:
        raise WatcherError(f"tasks: cannot reach the running watcher at {base} ({exc.__class__.__name__})") from None
    except (ValueError, KeyError, TypeError):  # a 2xx that is not the watcher's JSON: another service at that URL
        raise WatcherError(
            f"tasks: {base} did not answer as a voicefox-watcher operator endpoint (check --url)"
        ) from None


def _check_tasks_answer(response: httpx.Response, base: str) -> None:
    try:
        reason = str(response.json().get("reason", ""))
    except (ValueError, AttributeError):
        reason = response.text[:200]
    if response.status_code in (401, 403):
        hint = "give [http] token in the config" if response.status_code == 401 else reason
        raise UsageError(f"tasks: the watcher at {base} refused: {hint}")
    if response.status_code >= 400:
        raise WatcherError(f"tasks: the watcher at {base} answered {response.status_code}: {reason}")


def cmd_follow(args: argparse.Namespace) -> int:
    """Follow tasks live until each ends: exit 0 when all are done, 1 when any ended otherwise."""
    from . import follow

    config = config_mod.load(config_mod.default_path(args.config))
    # Nothing should log here, but what would (a store's warning) goes to stderr: stdout is the view, or a pipe's lines.
    logs.configure(level="warning", secrets=config_mod.secret_values(config), stream=sys.stderr)
    plain = args.plain or not args.stdout.isatty() or os.environ.get("TERM") == "dumb"
    language = args.language or config.messages.language
    return anyio.run(
        functools.partial(
            follow.run,
            config,
            args.ids,
            every=args.every,
            source=args.source,
            plain=plain,
            language=language,
            out=args.stdout,
        )
    )


def _every(text: str) -> float:
    try:
        seconds = config_mod.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0.2:
        raise argparse.ArgumentTypeError(f"{text!r} is too often: at least 200ms")
    return seconds


def cmd_simulate(args: argparse.Namespace) -> int:
    """Serve the simulator until interrupted."""
    from .simulator import Simulator, demo_scenario

    sim = Simulator(token=args.token, timestamps=args.timestamps, zone=args.zone)
    if not args.empty:
        demo_scenario(sim)
    for task_id in args.task or []:
        sim.add_task(task_id, status="running", progress=0)

    async def serve() -> int:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                try:
                    port = await tg.start(sim.serve, args.host, args.port)
                except OSError as exc:
                    raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
                print(f"simulator: http://{args.host}:{port}  token: {sim.token}", file=args.stdout, flush=True)
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break
        return EXIT_OK

    return anyio.run(serve)


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulator + watcher + a webhook receiver, in one process: a campaign day in under a minute."""
    from .demo import run_demo

    return anyio.run(run_demo, args.stdout, args.scale, args.language)


def _zone(text: str) -> tzinfo:
    minutes = parse_offset(text)
    if minutes is not None:
        return fixed(minutes)
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a directory
        raise argparse.ArgumentTypeError(f"{text!r} is not a zone (e.g. +09:00, Asia/Tokyo)") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return port


def _row_limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rows (0 or more; 0 lists every row)")
    return limit


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="watcher", description="Watch VoiceFox outbound-calling tasks and notify on every transition."
    )
    parser.add_argument("--version", action="version", version=f"voicefox-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, config: bool = True, log: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        if config:
            p.add_argument(
                "-c",
                "--config",
                metavar="FILE",
                help=f"config file (default: ${config_mod.CONFIG_ENV}, then ./{config_mod.DEFAULT_CONFIG_NAME})",
            )
        if log:
            p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides [log] level")
            p.add_argument("--log-format", choices=["auto", "json", "console"], help="overrides [log] format")
        return p

    add("run", cmd_run, "run the daemon")
    add("check", cmd_check, "validate a config file (exit 0 valid, 2 invalid)", log=False)
    add("once", cmd_once, "poll every task once, deliver, exit (for cron and timers)")
    p = add("status", cmd_status, "show the last known state of each task (no API call)", log=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("follow", cmd_follow, "follow tasks live until each ends (exit 0 all done, 1 any not)", log=False)
    p.add_argument("ids", nargs="+", type=_task_id, metavar="ID", help="the tasks to follow")
    p.add_argument(
        "--from",
        dest="source",
        choices=["api", "store"],
        default="api",
        help="api: ask VoiceFox with the config's token, no daemon needed (default); store: read what a running "
        "watcher stores (no API call)",
    )
    p.add_argument("--every", type=_every, default=5.0, metavar="DURATION", help="how often to read (default 5s)")
    p.add_argument("--plain", action="store_true", help="one line per change, as when not on a terminal")
    p.add_argument("--language", choices=LANGUAGES, help="default: [messages] language")
    p = add("outbox", cmd_outbox, "list pending and dead-lettered deliveries; retry or drop them", log=False)
    p.add_argument("action", nargs="?", choices=["list", "retry", "drop"], default="list")
    p.add_argument("--state", choices=["pending", "dead", "all"], default="all", help="list: which rows (default all)")
    p.add_argument("--receiver", metavar="NAME", help="only this notifier's rows")
    p.add_argument("--seq", type=int, action="append", metavar="N", help="only this row (repeatable)")
    p.add_argument("--all", action="store_true", help="retry/drop: every row in the state")
    p.add_argument("--pending", action="store_true", help="drop: pending rows instead of dead letters")
    p.add_argument(
        "--limit", type=_row_limit, default=100, metavar="N", help="list: at most this many rows (default 100; 0: all)"
    )
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    _add_store(sub)
    p = add("route", cmd_route, "say which notifiers an event of a task would reach (and why not)", log=False)
    p.add_argument("--task", type=int, required=True, metavar="ID", help="the task (its labels from the config)")
    p.add_argument("--event", type=_event_type, required=True, metavar="TYPE", help='e.g. "failed", "stalled"')
    p.add_argument("--label", type=_label, action="append", metavar="NAME=VALUE", help="a label to add or override")
    p = add(
        "tasks", cmd_tasks, "add, remove or list the tasks a running watcher watches beside its config's", log=False
    )
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("ids", nargs="*", type=_task_id, metavar="ID")
    p.add_argument("--label", type=_label, action="append", metavar="NAME=VALUE", help="add: a label (repeatable)")
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.add_argument("--url", help="the running watcher (default: from [http] listen)")
    p.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    p = add("notify-test", cmd_notify_test, "send a test notification to each notifier")
    p.add_argument("--notifier", metavar="NAME", help="only this notifier")
    p = add(
        "health", cmd_health, "ask a running watcher's /healthz: exit 0 healthy, 1 not (for HEALTHCHECK)", log=False
    )
    p.add_argument("--ready", action="store_true", help="ask /readyz instead")
    p.add_argument("--url", help="the URL to ask (default: from [http] listen)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p = add("simulate", cmd_simulate, "serve the bundled VoiceFox simulator", config=False, log=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8765)
    p.add_argument("--token", default="sim-token-0123456789", help="the bearer token it accepts")
    p.add_argument("--empty", action="store_true", help="start without the demo campaigns")
    p.add_argument("--task", type=int, action="append", metavar="ID", help="add a running task (repeatable)")
    p.add_argument(
        "--timestamps",
        choices=["offset", "naive", "static"],
        default="offset",
        help="how createdAt/updatedAt are written: with the zone's UTC offset (default), without one, or fixed",
    )
    p.add_argument(
        "--zone",
        type=_zone,
        default="+09:00",
        metavar="ZONE",
        help='the zone its campaigns call in and its timestamps are written in: "+09:00" (default), "Asia/Shanghai"',
    )
    p = add("demo", cmd_demo, "play a campaign day against the simulator (no account needed)", config=False, log=False)
    p.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--language", choices=LANGUAGES, default=DEFAULT_LANGUAGE, help="the language of the demo's lines (default en)"
    )
    return parser


def _add_store(sub: Any) -> None:
    """`watcher store ACTION`: the store as a whole (today: copy)."""
    store = sub.add_parser("store", help="copy the state and the undelivered outbox to another store")
    actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "copy",
        help="copy SQLite -> PostgreSQL (or back): task states and undelivered deliveries",
        description="Copy a watcher's state from one store to another (a SQLite file or PostgreSQL, either way) in one "
        "transaction on the target: every task's state, the tasks the API never served, remembered values (the learned "
        "time zone), and the pending and dead-lettered deliveries with their events (same event ids, same order per "
        "receiver, same attempts). Delivered rows are history: they are not copied. Stop the watcher first: a "
        "store a running watcher holds is refused, as is a target that already holds state (unless --force).",
        epilog="PATH_OR_URL: postgresql://user@host:5432/dbname (or postgres://) is PostgreSQL; anything else is a "
        "SQLite file (a missing --to file is created). Keep the password out of the URL, where your shell history "
        "and `ps` would show it: libpq reads it from PGPASSWORD or ~/.pgpass (and TLS settings from PGSSLMODE, "
        "PGSSLROOTCERT, or ?sslmode=verify-full in the URL). Messages show the URL without its password.",
    )
    p.set_defaults(func=cmd_store_copy)
    p.add_argument("--from", dest="source", required=True, metavar="PATH_OR_URL", help="the store to copy (only read)")
    p.add_argument("--to", dest="target", required=True, metavar="PATH_OR_URL", help="the store to write")
    p.add_argument(
        "--force", action="store_true", help="replace what --to holds (emptied first, in the same transaction)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Entry point; returns the exit status. No user mistake ends in a traceback."""
    # Until the daemon's own signal handling is in place, SIGTERM means "stop now, cleanly": nothing is open
    # yet. (As PID 1 in a container a signal without a handler would be ignored, not obeyed.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_before_start)
    args = build_parser().parse_args(argv)
    args.stdout = stdout or sys.stdout
    try:
        try:
            return int(args.func(args))
        except BaseExceptionGroup as group:
            # A task group wraps what its tasks raised: report our own error as if it were raised alone.
            first = _first_watcher_error(group)
            if first is None:
                raise
            raise first from None
    except ConfigError as exc:
        print(f"error: {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WatcherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


def _first_watcher_error(group: BaseExceptionGroup[BaseException]) -> WatcherError | None:
    for exc in group.exceptions:
        if isinstance(exc, WatcherError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _first_watcher_error(exc)) is not None:
            return inner
    return None


def entrypoint() -> None:
    """console_scripts entry point."""
    sys.exit(main())

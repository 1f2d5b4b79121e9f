"""What the daemon keeps of each task's calling windows: the campaigns' zone, when each task was last looked at, and
the log lines it owes about them (the zone found, windows unreadable, a model contradicted). The rules themselves are
pure, in zone.py, schedule.py and detect.py; this is their memory and their voice."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime

import structlog

from .config import Config
from .errors import StoreError
from .model import TaskSnapshot, TaskState
from .schedule import DOUBT_FOR, offsets_open
from .stores import StateStore
from .zone import Zone, ZoneResolver, offset_label

_log = structlog.get_logger("watcher.schedule")


class Windows:
    """The zone resolver and per-task look times of one daemon, with the warnings about them; seams: `store`."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        states: Mapping[int, TaskState],
        now: datetime,
        *,
        remembered: str | None = None,
    ) -> None:
        """`remembered`: the store's "zone.learned" value, as an earlier run left it."""
        self._config = config
        self._store = store
        self._states = states  # the daemon's own, read only
        self.zones = ZoneResolver(config.watch.tz, config.watch.task_zones, learned=self._remembered_offset(remembered))
        for task_id, state in states.items():
            # What the stored answers say of the zone, before the first poll: a restart at night must not forget it.
            self.zones.observe(task_id, None, state.snapshot, now, None)
        self._watched = len(config.watch.ids)
        self._shown: Zone | None = None  # the zone last logged and stored
        self._learned_kept = self.zones.learned  # the learned offset as the store has it
        self._first_round_seen = False  # whether the end of the first round of polls was looked at
        self._looked: dict[int, datetime] = {}  # task -> when it was last polled (evidence against its windows)
        self._mismatch_warned: dict[int, date] = {}  # task -> the day its window mismatch was last logged
        self._likely: dict[int, frozenset[int]] = {}  # task -> UTC offsets (h) its seen changes fit, intersected
        self._problems: dict[int, tuple[str, ...]] = {}  # task -> unreadable schedule, as last logged

    def reconfigure(self, config: Config, removed: Iterable[int]) -> None:
        """A reload: the configured zones, and tasks no longer watched."""
        self._config = config
        self._watched = len(config.watch.ids)
        self.zones.reconfigure(config.watch.tz, config.watch.task_zones)
        removed = list(removed)
        self.zones.forget(removed)
        for task_id in removed:
            for memory in (self._looked, self._mismatch_warned, self._likely, self._problems):
                memory.pop(task_id, None)

    def zone_for(self, task_id: int) -> Zone:
        """The zone this task's windows are read in."""
        return self.zones.for_task(task_id)

    async def look(
        self, task_id: int, previous: TaskState | None, snapshot: TaskSnapshot, now: datetime
    ) -> datetime | None:
        """A poll answered: learn what it shows of the zone, say what needs saying; return the previous look."""
        looked = self._looked.get(task_id)
        self._looked[task_id] = now
        if self.zones.observe(task_id, previous.snapshot if previous else None, snapshot, now, looked):
            await self.show()
        if not self._first_round_seen and looked is None and len(self._looked) >= self._watched:
            self._after_first_round()
        if snapshot.schedule_problems and self._problems.get(task_id) != snapshot.schedule_problems:
            self._problems[task_id] = snapshot.schedule_problems
            _log.warning("schedule.unreadable", task_id=task_id, problems=list(snapshot.schedule_problems))
        return looked

    def contradicted(
        self, task_id: int, snapshot: TaskSnapshot, zone: Zone, looked: datetime | None, now: datetime
    ) -> None:
        """The task was seen at work in a window believed closed: say so once a day, with the likely zone."""
        fits = offsets_open(snapshot, now) | (offsets_open(snapshot, looked) if looked is not None else frozenset())
        self._likely[task_id] = fits = fits & self._likely.get(task_id, fits) or fits
        if self._mismatch_warned.get(task_id) == now.date():
            return
        self._mismatch_warned[task_id] = now.date()
        suggested = self.zones.suggested(task_id)
        if suggested is not None and suggested.name != zone.name:
            likely = suggested.describe()
        elif fits and len(fits) <= 6:
            low, high = min(fits), max(fits)
            likely = (
                offset_label(low * 60)
                if low == high
                else f"between {offset_label(low * 60)} and {offset_label(high * 60)}"
            )
        else:
            likely = "not clear from one change"
        _log.warning(
            "schedule.window_mismatch",
            task_id=task_id,
            zone=zone.name,
            zone_source=zone.source.value,
            likely_zone=likely,
            hint="the task changed while its calling window was believed closed: it is polled at the normal pace and "
            "can be called stalled until its windows match what the API shows for a day; if the zone is wrong, set "
            "watch.timezone (or timezone in its [[watch.task]])",
        )

    async def show(self) -> None:
        """Log the campaigns' zone and how it was found, and keep it for `watcher status`, when it changed."""
        zone, learned = self.zones.zone(), self.zones.learned
        try:
            if zone != self._shown:
                self._shown = zone
                _log.info("schedule.zone_resolved", zone=zone.name, source=zone.source.value, how=zone.describe())
                await self._store.set_meta("zone", json.dumps(zone.to_dict()))
            if learned != self._learned_kept:
                api = self._config.api.base_url
                await self._store.set_meta("zone.learned", json.dumps({"offset": learned, "api": api}))
                self._learned_kept = learned
        except StoreError as exc:
            _log.error("store.write_failed", error=str(exc), what="the campaigns' zone")

    def summary(self, now: datetime) -> tuple[str, str, int]:
        """The campaigns' zone, how it was found, and how many tasks' windows are in doubt (for /metrics)."""
        zone = self.zones.zone()
        doubted = sum(
            1
            for state in self._states.values()
            if state.windows_doubted_at is not None and now - state.windows_doubted_at < DOUBT_FOR
        )
        return zone.name, zone.source.value, doubted

    def _remembered_offset(self, text: str | None) -> int | None:
        """The UTC offset an earlier run learned from this API's naive timestamps, if it learned one."""
        try:
            kept = json.loads(text) if text else {}
        except ValueError:
            return None
        offset = kept.get("offset") if isinstance(kept, dict) else None
        # Learned of one API: a store pointed at another (a new api.base_url) starts again from what that one shows.
        if not isinstance(offset, int) or kept.get("api") != self._config.api.base_url:
            return None
        return offset

    def _after_first_round(self) -> None:
        """Every task has answered once: if the zone is still unknown while some have windows, say what it costs."""
        self._first_round_seen = True
        if self.zones.zone().known:
            return
        scheduled = sum(1 for s in self._states.values() if s.snapshot.has_schedule)
        if scheduled:
            _log.warning(
                "schedule.zone_unknown",
                tasks_with_windows=scheduled,
                hint="the API's timestamps carry no UTC offset and have not changed enough to learn one: calling "
                "windows slow no polling and silence no stall until they do; set watch.timezone to save requests",
            )

"""The campaigns' time zone, pure: which zone a task's calling windows are written in, and how the watcher knows.

VoiceFox does not say in which zone `option.startDate` and `option.startTime` are meant. In this order:

task      `[[watch.task]] timezone`, for a watcher that runs campaigns of several countries
config    `watch.timezone`
api       the UTC offset the API writes in its own timestamps (`updatedAt` such as 2026-11-23T09:00:00+08:00)
learned   from naive timestamps (2026-11-23 09:00:00): a freshly changed `updatedAt` against the watcher's UTC clock,
          to the nearest 15 minutes, once three observations agree (two thirds of the latest)
unknown   none of these: calling windows then neither slow polling nor silence a stall (see `schedule.window_state`)

An offset of zero (`Z`, `+00:00`, naive times equal to UTC) is how servers write times they keep in UTC: it says where
the server's clock is, not where a campaign calls, so it places nothing. A campaign that really calls in UTC sets
`watch.timezone = "UTC"`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo

from .i18n import N_
from .model import TaskSnapshot

# An updatedAt seen to change within this long of the previous look is fresh: the midpoint of the gap is then within
# 2.5 minutes of the change, which leaves a server clock up to 5 minutes off still rounding to the right quarter hour.
FRESH = timedelta(minutes=5)
STEP = 15  # minutes: every UTC offset in use is a multiple of a quarter hour
VOTES_KEPT = 24  # the learned offset is a clear majority of this many latest observations:
MIN_VOTES = 3  # at least this many of them, and two thirds of all
MIN_OFFSET, MAX_OFFSET = -12 * 60, 14 * 60  # minutes
# The UTC offsets zones use (minutes): whole hours, and the few half and quarter hours. A vote for any other is noise.
REAL_OFFSETS = frozenset(range(MIN_OFFSET, MAX_OFFSET + 1, 60)) | frozenset(
    {-570, -210, 210, 270, 330, 345, 390, 525, 570, 630, 765, 825}
)


class Source(StrEnum):
    """How the zone was found."""

    TASK = "task"
    CONFIG = "config"
    API = "api"
    LEARNED = "learned"
    UNKNOWN = "unknown"


HOW = {
    Source.TASK: N_("set for the task ([[watch.task]] timezone)"),
    Source.CONFIG: N_("set in watch.timezone"),
    Source.API: N_("the UTC offset in the API's own timestamps"),
    Source.LEARNED: N_("learned from the API's naive timestamps against the UTC clock"),
    Source.UNKNOWN: N_("unknown: calling windows neither slow polling nor silence stalls (set watch.timezone)"),
}


def fixed(minutes: int) -> tzinfo:
    """The fixed-offset zone `minutes` east of UTC; one object per offset, so equal zones share memo entries."""
    zone = _FIXED.get(minutes)
    if zone is None:
        zone = _FIXED[minutes] = timezone(timedelta(minutes=minutes), offset_label(minutes))
    return zone


_FIXED: dict[int, tzinfo] = {}


def offset_label(minutes: int) -> str:
    """+09:00, -03:30, +05:45."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclasses.dataclass(frozen=True, slots=True)
class Zone:
    """The zone a task's windows are read in (`tz` None: unknown) and where that came from."""

    tz: tzinfo | None
    source: Source

    @property
    def known(self) -> bool:
        """Whether the windows can be placed at all."""
        return self.tz is not None

    @property
    def name(self) -> str:
        """ "Asia/Tokyo", "+09:00" or "unknown"."""
        if self.tz is None:
            return "unknown"
        if isinstance(self.tz, ZoneInfo):
            return self.tz.key
        offset = self.tz.utcoffset(None)
        return offset_label(int(offset.total_seconds() // 60)) if offset is not None else str(self.tz)

    def describe(self) -> str:
        """ "+09:00 (the UTC offset in the API's own timestamps)"."""
        return f"{self.name} ({HOW[self.source]})" if self.known else HOW[self.source]

    def to_dict(self) -> dict[str, str]:
        """For `watcher status --json` and the store."""
        return {"name": self.name, "source": self.source.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Zone:
        """Inverse of `to_dict`; anything unreadable is unknown."""
        try:
            source = Source(d.get("source", ""))
            name = d.get("name", "")
            if source is Source.UNKNOWN:
                return UNKNOWN
            minutes = parse_offset(name)
            return cls(fixed(minutes) if minutes is not None else ZoneInfo(name), source)
        except (ValueError, KeyError, TypeError, OSError):  # (ZoneInfo reads a file named after the zone)
            return UNKNOWN


UNKNOWN = Zone(None, Source.UNKNOWN)

_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def parse_offset(text: str) -> int | None:
    """ "+09:00" -> 540; None if it is not an offset."""
    m = _OFFSET.match(text)
    if m is None:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes


def read_timestamp(text: str) -> datetime | None:
    """An API timestamp as written ("2026-11-23 09:00:00", "2026-11-23T09:00:00+08:00", "...Z"); aware or naive."""
    text = text.strip()
    if not text or not text[:1].isdigit():
        return None
    try:
        return datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        return None


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def stated_offset(snapshot: TaskSnapshot) -> int | None:
    """The non-zero UTC offset (minutes) the API wrote in the task's timestamps, if it wrote one."""
    for text in (snapshot.updated_at, snapshot.created_at):
        when = read_timestamp(text)
        if when is not None and when.tzinfo is not None:
            offset = when.utcoffset()
            minutes = _minutes(offset) if offset is not None else 0
            return minutes if minutes and MIN_OFFSET <= minutes <= MAX_OFFSET else None
    return None


def learned_offset(
    before: TaskSnapshot, after: TaskSnapshot, now: datetime, previous_look: datetime | None
) -> int | None:
    """What one fresh change of a naive `updatedAt` says of the API's UTC offset (minutes; 0 for a server writing
    UTC), or None if nothing.

    The change happened between the previous look and now: its midpoint is within half that gap of the truth, so with
    a gap of at most FRESH the nearest quarter hour is the offset, if it is one that zones use.
    """
    if previous_look is None or after.updated_at == before.updated_at or now - previous_look > FRESH:
        return None
    written = read_timestamp(after.updated_at)
    if written is None or written.tzinfo is not None:
        return None
    middle = (now - (now - previous_look) / 2).astimezone(UTC).replace(tzinfo=None)
    minutes = round((written - middle).total_seconds() / 60 / STEP) * STEP
    return minutes if minutes in REAL_OFFSETS else None


class ZoneResolver:
    """The campaigns' zone, from the config and from what the API shows; pure (the caller brings the clock)."""

    def __init__(
        self,
        configured: tzinfo | None = None,
        per_task: Mapping[int, tzinfo] | None = None,
        *,
        learned: int | None = None,
    ) -> None:
        self._configured = configured
        self._per_task = dict(per_task or {})
        self._stated: dict[int, int] = {}  # task -> the offset its own timestamps carry
        self._stated_count: Counter[int] = Counter()
        self._votes: deque[int] = deque(maxlen=VOTES_KEPT)
        self._last_vote: dict[int, int] = {}  # task -> what its latest fresh change said (a hint for warnings)
        self._learned = learned  # remembered from an earlier run, until the API says otherwise
        self._seen: set[int] = set()  # tasks whose timestamps were read at least once (by this resolver)

    def reconfigure(self, configured: tzinfo | None, per_task: Mapping[int, tzinfo]) -> None:
        """A reload: new configured zones; what was seen of the API stays."""
        self._configured = configured
        self._per_task = dict(per_task)

    def forget(self, task_ids: Iterable[int]) -> None:
        """Tasks no longer watched."""
        for task_id in task_ids:
            self._set_stated(task_id, None)
            self._last_vote.pop(task_id, None)
            self._seen.discard(task_id)

    def observe(
        self,
        task_id: int,
        before: TaskSnapshot | None,
        after: TaskSnapshot,
        now: datetime,
        previous_look: datetime | None,
    ) -> bool:
        """Take what one answer shows: the offset its timestamps carry, or a fresh change of a naive one; return
        whether that may have changed the zone (a cheap test, for the caller to decide whether to look)."""
        if (
            before is not None
            and before.updated_at == after.updated_at
            and before.created_at == after.created_at
            and task_id in self._seen
        ):
            return False  # nothing new (most polls); but a task first met after a restart is read once
        self._seen.add(task_id)
        stated = stated_offset(after)
        changed = self._stated.get(task_id) != stated
        if changed:
            self._set_stated(task_id, stated)
        if before is not None and (vote := learned_offset(before, after, now, previous_look)) is not None:
            self._votes.append(vote)
            if vote:
                self._last_vote[task_id] = vote
            else:
                self._last_vote.pop(task_id, None)
            top, n = Counter(self._votes).most_common(1)[0]
            if n >= MIN_VOTES and 3 * n >= 2 * len(self._votes):
                learned = top or None  # a server writing UTC places nothing: what was learned before is dropped
                if learned != self._learned:
                    self._learned = learned
                    changed = True
        return changed

    def _set_stated(self, task_id: int, minutes: int | None) -> None:
        old = self._stated.pop(task_id, None)
        if old is not None:
            self._stated_count[old] -= 1
            if not self._stated_count[old]:
                del self._stated_count[old]
        if minutes is not None:
            self._stated[task_id] = minutes
            self._stated_count[minutes] += 1

    @property
    def learned(self) -> int | None:
        """The offset learned from naive timestamps (minutes), if any."""
        return self._learned

    def zone(self) -> Zone:
        """The campaigns' zone for tasks without one of their own: what `watcher status` and /metrics show."""
        if self._configured is not None:
            return Zone(self._configured, Source.CONFIG)
        return self._observed()

    def _observed(self) -> Zone:
        if self._stated_count:
            return Zone(fixed(self._stated_count.most_common(1)[0][0]), Source.API)
        if self._learned is not None:
            return Zone(fixed(self._learned), Source.LEARNED)
        return UNKNOWN

    def for_task(self, task_id: int) -> Zone:
        """The zone this task's windows are read in."""
        if (own := self._per_task.get(task_id)) is not None:
            return Zone(own, Source.TASK)
        if self._configured is not None:
            return Zone(self._configured, Source.CONFIG)
        if (stated := self._stated.get(task_id)) is not None:
            return Zone(fixed(stated), Source.API)
        return self._observed()

    def suggested(self, task_id: int) -> Zone | None:
        """What the API itself suggests for this task, whatever is configured (for a warning), or None."""
        if (stated := self._stated.get(task_id)) is not None:
            return Zone(fixed(stated), Source.API)
        if (vote := self._last_vote.get(task_id)) is not None:
            return Zone(fixed(vote), Source.LEARNED)
        observed = self._observed()
        return observed if observed.known else None

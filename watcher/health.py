"""Call health, pure: what a task's call log says between looks — is it calling, and has its answered share
collapsed — with no I/O and no clock (the caller brings `now` and the records).

Progress is an integer percentage: on a 20,000-number campaign one percent is 200 calls, so a healthy campaign sits on
one figure for long, and a dialer that stopped is noticed only after that wait. Carriers labelling the calling numbers
as spam change no status at all: the answered share falls from 40 % to 3 % while the task runs. The call log shows both.

Liveness. `silent_for` is how long no call has started, as far as the looks so far have shown; a running task inside
its window silent for `stall_after` is stalled however its progress moves, and one whose progress is flat but which
keeps calling is not. Where the call log is off or its looks are stale, it says None and the progress rule stands.

Answer rate. Each new ended call goes, in start order, into a sliding window of the latest `window` calls; a call
leaving the window joins the task's own earlier totals (the baseline). After each call the window is judged, once it
and the baseline hold at least `min_calls` calls each:

- a drop, when the window's share is below both `baseline × (1 − answer_rate_drop)` and `answer_rate_floor`, and so
  few answers would happen by chance at the baseline's share less than once in 10,000 windows (a binomial tail): a
  campaign that always answers 5 % is not flagged for being low, a 40 % → 30 % dip is not news, and a 15 % campaign
  with a window of 100 is not flagged for one unlucky run. One `AnswerRateDropped` per episode; while it lasts the
  baseline is frozen (the collapsed calls are not the task's normal);
- recovered, when the share has been at or above `before × (1 − answer_rate_drop)` (above both lines whenever the
  floor is the lower one) after every one of a full window of new calls: one `AnswerRateRecovered`, no flapping.

Calls are listed once they have ended, and an answered call ends after an unanswered one that started with it, so
a call is judged only once the longest call seen lately (at most `lookback`) has passed since it started: judged as
listed, the newest calls of a busy campaign would be mostly unanswered ones at every look. Younger calls tell
liveness at once and are judged at a later look, which reads them again.

Judging call by call makes the outcome independent of how the calls were split into looks. A look asks for
`look_range`: it reaches `lookback` into the previous one, for calls that ended after it; calls seen before are
recognised by `CallRecord.key` (start, end, duration, answered: no personal data) and counted once.

Defaults, for an operations lead: a look every 2 minutes; windows of 100 calls judged once 50 calls are known on
each side (a few minutes of a busy campaign, long enough that noise is not news); a drop is a halving below 10 %.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .calllog import CallRecord

SIGNIFICANCE = 1e-4  # a window this unlikely at the baseline's share is not chance
CLOCK_SKEW = timedelta(minutes=5)  # a call that started later than this after a look is no call: never counted
# A collapse no look has confirmed for this long (the call log refused, off, failing, or the task outside its
# windows) is not reminded of: nobody is measuring it.
UNCONFIRMED_AFTER = timedelta(minutes=30)
FIRST_LOOK_BACK = timedelta(hours=1)  # the first look (or one after a long gap) reads this much: a baseline at once
STALE_LOOKS = 3  # looks older than this many `every`s: the call log is failing, so it tells nothing of liveness
MAX_WINDOW = 10_000
MAX_SEEN = 20_000  # keys kept for recognising calls seen before (a few minutes of the busiest campaign)
HOUR = timedelta(hours=1)
_KEY = re.compile(r"^(\d{1,12})/(\d{1,12}|-)/(\d{1,9}|-)/[01]$")


@dataclasses.dataclass(frozen=True, slots=True)
class HealthRules:
    """The `[health]` settings and the `stall_after` of `[watch]`, as the judgement uses them."""

    every: timedelta = timedelta(minutes=2)  # how often the call log is read
    stall_after: timedelta = timedelta(minutes=15)
    calllog: bool = True  # read the call log at all
    window: int = 100  # calls in the sliding window
    min_calls: int = 50  # calls the window and the baseline each hold before anything is judged
    answer_rate_drop: float = 0.5  # a drop is at least this fraction of the task's own earlier share...
    answer_rate_floor: float = 0.10  # ...and below this share
    lookback: timedelta = timedelta(minutes=5)  # how far a look reaches into the previous one (calls that ended late)

    def __post_init__(self) -> None:
        if not 1 <= self.min_calls <= self.window <= MAX_WINDOW:
            raise ValueError(f"health: 1 <= min_calls <= window <= {MAX_WINDOW}")
        if not (0.0 < self.answer_rate_drop < 1.0 and 0.0 < self.answer_rate_floor <= 1.0):
            raise ValueError("health: answer_rate_drop is between 0 and 1, answer_rate_floor above 0 and at most 1")
        if not (timedelta(0) < self.every and timedelta(0) <= self.lookback <= HOUR):
            raise ValueError("health: every is positive, lookback from 0 to an hour")


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerRateDropped:
    """The answered share collapsed: from `before` (the task's own) to `after` over the `calls` of the window, as
    judged at the call started at `since`."""

    since: datetime
    before: float
    after: float
    calls: int
    baseline_calls: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for event data and the stored state)."""
        return _fields(self)

    @classmethod
    def from_dict(cls, d: Any) -> AnswerRateDropped | None:
        """Inverse of `to_dict`; None for anything unreadable."""
        if not isinstance(d, Mapping):
            return None
        since = _time(d.get("since"))
        before, after = as_share(d.get("before")), as_share(d.get("after"))
        calls, baseline = _count(d.get("calls")), _count(d.get("baselineCalls"))
        if since is None or before is None or after is None or calls is None or baseline is None:
            return None
        return cls(since, before, after, calls, baseline)


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerRateRecovered:
    """The answered share is back to `now` (from the drop's `after`; the task's own was `before`), confirmed over a
    full window of calls, the last started at `until`."""

    since: datetime
    until: datetime
    before: float
    after: float
    now: float
    calls: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for event data)."""
        return {**_fields(self), "lastedSeconds": int((self.until - self.since).total_seconds())}


Finding = AnswerRateDropped | AnswerRateRecovered


@dataclasses.dataclass(frozen=True, slots=True)
class CallHealth:
    """What is kept of one task's call log between looks: counts and times only."""

    first_look: datetime | None = None
    last_look: datetime | None = None
    last_start: datetime | None = None  # the latest call start seen (ended or not)
    window: tuple[bool, ...] = ()  # answered flags of the latest ended calls, oldest first
    baseline_calls: int = 0  # the task's earlier calls (those that left the window outside an episode)
    baseline_answered: int = 0
    episode: AnswerRateDropped | None = None
    streak: int = 0  # during an episode: calls in a row after which the share was back at the recovery line
    seen: tuple[tuple[str, int], ...] = ()  # keys of calls counted lately, with how many calls had each
    hourly: tuple[tuple[int, int, int], ...] = ()  # (minute as epoch seconds, calls, answered), the latest hour
    calls: int = 0  # every ended call counted since the first look (which reached back `FIRST_LOOK_BACK`)
    answered: int = 0

    @property
    def rate(self) -> float | None:
        """The window's answered share, None while it is empty."""
        return sum(self.window) / len(self.window) if self.window else None

    @property
    def baseline_rate(self) -> float | None:
        """The task's own earlier answered share, None while it has no calls."""
        return self.baseline_answered / self.baseline_calls if self.baseline_calls else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the store."""
        return {
            "version": 1,
            "firstLook": _iso(self.first_look),
            "lastLook": _iso(self.last_look),
            "lastStart": _iso(self.last_start),
            "window": "".join("1" if a else "0" for a in self.window),
            "baseline": [self.baseline_calls, self.baseline_answered],
            "episode": self.episode.to_dict() if self.episode is not None else None,
            "streak": self.streak,
            "seen": dict(self.seen),
            "hourly": [list(h) for h in self.hourly],
            "counted": [self.calls, self.answered],
        }

    @classmethod
    def from_dict(cls, d: Any) -> CallHealth:
        """Inverse of `to_dict`; each odd value is taken as absent, so a damaged row costs history, never a crash."""
        if not isinstance(d, Mapping):
            return cls()
        window = d.get("window")
        flags = tuple(c == "1" for c in window if c in "01")[-MAX_WINDOW:] if isinstance(window, str) else ()
        baseline = d.get("baseline")
        calls, answered = (baseline if isinstance(baseline, list | tuple) and len(baseline) == 2 else (0, 0))[:2]
        calls, answered = _count(calls) or 0, _count(answered) or 0
        if answered > calls:
            calls = answered = 0
        episode = AnswerRateDropped.from_dict(d.get("episode"))
        counted = d.get("counted")
        total, total_answered = (counted if isinstance(counted, list | tuple) and len(counted) == 2 else (0, 0))[:2]
        total, total_answered = _count(total) or 0, _count(total_answered) or 0
        if total_answered > total:
            total = total_answered = 0
        seen = d.get("seen")
        kept = (
            {k: n for k, v in seen.items() if isinstance(k, str) and _KEY.match(k) and (n := _count(v))}
            if isinstance(seen, Mapping)
            else {}
        )
        hourly = d.get("hourly")
        buckets = [
            (m, c, a)
            for h in (hourly if isinstance(hourly, list) else [])
            if isinstance(h, list) and len(h) == 3
            for m, c, a in [(_count(h[0]), _count(h[1]), _count(h[2]))]
            if m is not None and c is not None and a is not None and a <= c
        ]
        last_look, last_start = _time(d.get("lastLook")), _time(d.get("lastStart"))
        if last_start is not None and (last_look is None or last_start > last_look):
            last_start = last_look  # (a start after the latest look is no call: see `observe`)
        return cls(
            first_look=_time(d.get("firstLook")),
            last_look=last_look,
            last_start=last_start,
            window=flags,
            baseline_calls=calls,
            baseline_answered=answered,
            episode=episode,
            streak=(_count(d.get("streak")) or 0) if episode is not None else 0,
            seen=_sorted_seen(kept),
            hourly=tuple(sorted(dict((m, (m, c, a)) for m, c, a in buckets).values())),
            calls=total,
            answered=total_answered,
        )


def observe(
    previous: CallHealth | None, calls: Sequence[CallRecord], now: datetime, rules: HealthRules
) -> tuple[CallHealth, list[Finding]]:
    """Take one look's records of one task (in any order, overlapping earlier looks): the new state and what it
    found, in the order the calls showed it."""
    state = previous if previous is not None else CallHealth(first_look=now)
    work = _Work(state, rules)
    # Calls older than this were in an earlier look's range, or are too old to matter: never counted again.
    watermark = state.last_start - rules.lookback if state.last_start is not None else None
    # Calls are listed once they have ended, and an answered call ends later than an unanswered one that started
    # with it: a look's newest calls are mostly the unanswered ones, and judged at once they would make a busy
    # campaign's share collapse at every look. So only calls that started at least the longest call seen lately
    # (at most `lookback`) before the look are judged; the younger ones tell liveness now, and are judged at a later
    # look, which reads them again.
    settled = now - settle_time(state, calls, rules)
    ordered = sorted(calls, key=lambda c: (c.started_at, c.key))
    multiplicity: dict[str, int] = {}
    for call in ordered:
        if call.ended_at is not None:
            multiplicity[call.key] = multiplicity.get(call.key, 0) + 1
    findings: list[Finding] = []
    for call in ordered:
        if call.started_at > now + CLOCK_SKEW:
            # In the future: a row read in the wrong zone, or broken. Taken as a call, it would hold the latest start
            # ahead of every look (silencing every stall) and the watermark with it (counting no call again).
            continue
        if work.last_start is None or call.started_at > work.last_start:
            work.last_start = min(call.started_at, now)
        # A call still under way counts for liveness only: its record will change (end, answer) when it ends.
        if call.ended_at is None or call.key not in multiplicity or call.started_at > settled:
            continue
        # The same call in two looks has one key; two calls alike to the second have one key too, and a look of a
        # time range holds both: what is new is how many more this look holds than any look before.
        copies = multiplicity.pop(call.key)
        before = work.seen.get(call.key, 0)
        work.seen[call.key] = max(before, copies)
        if watermark is not None and call.started_at < watermark:
            continue
        for _ in range(copies - before):
            if (finding := work.add(call)) is not None:
                findings.append(finding)
    return work.freeze(now), findings


def settle_time(state: CallHealth, calls: Sequence[CallRecord], rules: HealthRules) -> timedelta:
    """How long after its start a call is judged: the longest call of this look and of those recognised lately,
    at most `lookback` (a call longer than that is judged as it was listed)."""
    longest = max(
        (int((c.ended_at - c.started_at).total_seconds()) for c in calls if c.ended_at is not None), default=0
    )
    for key, _ in state.seen:
        start, end, *_ = key.split("/")
        if end != "-":
            longest = max(longest, int(end) - int(start))
    return min(rules.lookback, timedelta(seconds=longest))


def look_range(health: CallHealth | None, now: datetime, rules: HealthRules) -> tuple[datetime, datetime]:
    """The time range the next look asks for: from `lookback` before the previous look (an hour back at first, or
    after a long gap) to now."""
    since = now - FIRST_LOOK_BACK
    if health is not None and health.last_look is not None:
        since = max(since, min(now, health.last_look) - rules.lookback)
    return since, now


def confirmed(health: CallHealth | None, now: datetime) -> bool:
    """Whether a look has confirmed the task's call health lately (`UNCONFIRMED_AFTER`)."""
    return health is not None and health.last_look is not None and now - health.last_look <= UNCONFIRMED_AFTER


def calling_since(health: CallHealth | None) -> datetime | None:
    """When the task's latest known call started; None if no look has seen one."""
    return health.last_start if health is not None else None


def silent_for(
    health: CallHealth | None, now: datetime, rules: HealthRules, *, since: datetime | None = None
) -> timedelta | None:
    """How long the looks have shown no call starting (from the latest call, or if none was seen from as far back
    as the first look read, and not before `since`: when the task last became running or its window opened); None when the call log
    cannot tell (off, never read, or its latest look older than `STALE_LOOKS` looks), so the progress rule stands.

    Measured to the latest look, not to now, and a call is listed only once it has ended: a dialer is seen silent
    a call's length late at most, which `stall_after` dwarfs.
    """
    if not rules.calllog or health is None or health.last_look is None:
        return None
    if now - health.last_look > STALE_LOOKS * rules.every:
        return None
    # The API writes and reads whole seconds: a look asked up to its last whole second, and saw no call after it.
    looked = health.last_look.replace(microsecond=0)
    # No call seen at all: none since as far back as the first look read (an hour), bounded below by `since`.
    first = health.first_look - FIRST_LOOK_BACK if health.first_look is not None else looked
    quiet_since = health.last_start or first
    if since is not None:
        quiet_since = max(quiet_since, since)
    return max(timedelta(0), looked - quiet_since)


def calls_last_hour(health: CallHealth | None, now: datetime) -> tuple[int, int]:
    """(calls, answered) that started in the hour before `now`, to the minute: for display."""
    if health is None:
        return 0, 0
    start = _minute(now - HOUR)
    recent = [(c, a) for m, c, a in health.hourly if start <= m <= now.timestamp()]
    return sum(c for c, _ in recent), sum(a for _, a in recent)


class _Work:
    """One look's working copy of a CallHealth: mutable, frozen again at the end."""

    def __init__(self, state: CallHealth, rules: HealthRules) -> None:
        self.rules = rules
        self.state = state
        self.last_start = state.last_start
        self.window: deque[bool] = deque(state.window)
        self.answered = sum(state.window)
        self.baseline_calls = state.baseline_calls
        self.baseline_answered = state.baseline_answered
        self.episode = state.episode
        self.streak = state.streak
        self.seen = dict(state.seen)
        self.hourly = {m: [c, a] for m, c, a in state.hourly}
        self.calls, self.answered_total = state.calls, state.answered
        while len(self.window) > rules.window:  # the window was made smaller since
            self._evict()

    def _evict(self) -> None:
        old = self.window.popleft()
        self.answered -= old
        if self.episode is None:
            self.baseline_calls += 1
            self.baseline_answered += old

    def add(self, call: CallRecord) -> Finding | None:
        """One new ended call: into the window and the hour, then judged."""
        self.window.append(call.answered)
        self.answered += call.answered
        if len(self.window) > self.rules.window:
            self._evict()
        bucket = self.hourly.setdefault(_minute(call.started_at), [0, 0])
        bucket[0] += 1
        bucket[1] += call.answered
        self.calls += 1
        self.answered_total += call.answered
        return self._judge(call.started_at)

    def _judge(self, at: datetime) -> Finding | None:
        rules = self.rules
        n, k = len(self.window), self.answered
        if n < rules.min_calls:
            return None
        share = k / n
        if self.episode is None:
            if self.baseline_calls < rules.min_calls:
                return None
            before = self.baseline_answered / self.baseline_calls
            if (
                share < before * (1 - rules.answer_rate_drop)
                and share < rules.answer_rate_floor
                and binomial_cdf(k, n, before) < SIGNIFICANCE
            ):
                self.episode = AnswerRateDropped(at, before, share, n, self.baseline_calls)
                self.streak = 0
                return self.episode
            return None
        self.streak = self.streak + 1 if share >= self.episode.before * (1 - rules.answer_rate_drop) else 0
        if self.streak < rules.window:
            return None
        episode, self.episode, self.streak = self.episode, None, 0
        return AnswerRateRecovered(episode.since, at, episode.before, episode.after, share, n)

    def freeze(self, now: datetime) -> CallHealth:
        """The state to keep: the recognised keys and the hour pruned to what a next look can still need."""
        seen, hourly = self.seen, self.hourly
        if self.last_start is not None:
            oldest = int((self.last_start - self.rules.lookback).timestamp())
            seen = {k: n for k, n in seen.items() if int(k.split("/", 1)[0]) >= oldest}
            first_minute = _minute(self.last_start - HOUR)
            hourly = {m: b for m, b in hourly.items() if m >= first_minute}
        last_look = now if self.state.last_look is None else max(now, self.state.last_look)
        return CallHealth(
            first_look=self.state.first_look or now,
            last_look=last_look,
            last_start=self.last_start,
            window=tuple(self.window),
            baseline_calls=self.baseline_calls,
            baseline_answered=self.baseline_answered,
            episode=self.episode,
            streak=self.streak,
            seen=_sorted_seen(seen)[-MAX_SEEN:],
            hourly=tuple((m, c, a) for m, (c, a) in sorted(hourly.items())),
            calls=self.calls,
            answered=self.answered_total,
        )


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): how likely so few answers would be at share `p`."""
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    total = sum(
        math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        for i in range(max(0, k) + 1)
    )
    return min(1.0, total)


def _sorted_seen(seen: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    # Oldest first by start, so that a cap drops the oldest.
    return tuple(sorted(seen.items(), key=lambda kv: (int(kv[0].split("/", 1)[0]), kv[0])))


def _fields(finding: AnswerRateDropped | AnswerRateRecovered) -> dict[str, Any]:
    """A finding's fields by their camelCase names (as event data is written), times in ISO 8601."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(finding):
        head, *rest = field.name.split("_")
        value = getattr(finding, field.name)
        out[head + "".join(w.title() for w in rest)] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _minute(when: datetime) -> int:
    return int(when.timestamp()) // 60 * 60


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15 else None


def as_share(value: Any) -> float | None:
    """A share of calls read from JSON: a number from 0 to 1, else None (NaN, a bool, anything out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None

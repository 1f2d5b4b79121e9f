"""Call health (pure): the answer-rate judgement as tables, calls counted once across overlapping looks, liveness,
the stored state's round trip, a property over how calls are split into looks; then the scenarios end to end through
the simulator and the client on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.calllog import CallRecord
from watcher.client import VoiceFoxClient
from watcher.errors import PermissionDenied
from watcher.health import (
    FIRST_LOOK_BACK,
    AnswerRateDropped,
    AnswerRateRecovered,
    CallHealth,
    Finding,
    HealthRules,
    binomial_cdf,
    calling_since,
    calls_last_hour,
    look_range,
    observe,
    silent_for,
)
from watcher.simulator import Simulator, blocked_numbers, calllog_forbidden, creeping_campaign, silent_dialer

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
RULES = HealthRules()
GAP = timedelta(seconds=3)  # 20 calls a minute


def even(n: int, share: float) -> list[bool]:
    """`n` answered flags, an exact share spread evenly (0.4: the 3rd and 5th of every five)."""
    return [int((i + 1) * share + 1e-9) > int(i * share + 1e-9) for i in range(n)]


def noisy(n: int, share: float, seed: int) -> list[bool]:
    """`n` answered flags drawn at random at `share`: what real campaigns look like."""
    rng = random.Random(seed)
    return [rng.random() < share for _ in range(n)]


def records(flags: Sequence[bool], start: datetime = T0, gap: timedelta = GAP) -> list[CallRecord]:
    """One call per flag, `gap` apart; answered calls last 45 s, the others ring for 25 s."""
    out = []
    for i, answered in enumerate(flags):
        begin = start + i * gap
        seconds = 45 if answered else 25
        out.append(CallRecord(1, begin, answered, begin + timedelta(seconds=seconds), seconds))
    return out


def play(
    calls: Sequence[CallRecord], rules: HealthRules = RULES, every: timedelta = timedelta(minutes=2)
) -> tuple[CallHealth, list[Finding]]:
    """Look every `every` as the daemon will: each look asks `look_range` and gets the calls that started in it and
    have ended by then."""
    state: CallHealth | None = None
    findings: list[Finding] = []
    now = min(c.started_at for c in calls) + every
    last = max(c.ended_at or c.started_at for c in calls)
    while True:
        since, until = look_range(state, now, rules)
        seen = [c for c in calls if since <= c.started_at <= until and c.ended_at is not None and c.ended_at <= now]
        state, found = observe(state, seen, now, rules)
        findings += found
        if now > last:
            return state, findings
        now += every


# -- the judgement, as a table ---------------------------------------------------------------------------------


def phases(*parts: tuple[int, float]) -> list[bool]:
    return [flag for n, share in parts for flag in even(n, share)]


JUDGEMENT: dict[str, tuple[list[bool], list[type]]] = {
    "blocked numbers: 40 % to 3 %, then back": (
        phases((600, 0.4), (600, 0.03), (600, 0.4)),
        [AnswerRateDropped, AnswerRateRecovered],
    ),
    "blocked for good: one finding however long it lasts": (phases((600, 0.4), (3000, 0.03)), [AnswerRateDropped]),
    "a low but steady share (5 %) is never news": (phases((3000, 0.05)), []),
    "a low share drifting lower (5 % to 2 %) is no proof at 100 calls": (phases((600, 0.05), (600, 0.02)), []),
    "a 40 % to 30 % dip is not news": (phases((600, 0.4), (600, 0.3)), []),
    "a halving that stays above the floor (40 % to 15 %) is not news": (phases((600, 0.4), (600, 0.15)), []),
    "15 % to nothing is news": (phases((600, 0.15), (600, 0.0)), [AnswerRateDropped]),
    "too few calls are never judged": (phases((60, 0.4), (49, 0.0)), []),
    "a collapse from the first calls on is judged once a baseline exists": (
        phases((100, 0.4), (300, 0.0)),
        [AnswerRateDropped],
    ),
    "no flapping: a partial recovery below the line keeps the episode": (
        phases((600, 0.4), (300, 0.03), (600, 0.15), (300, 0.03)),
        [AnswerRateDropped],
    ),
    "two separate collapses are two episodes": (
        phases((600, 0.4), (300, 0.02), (600, 0.4), (300, 0.02), (600, 0.4)),
        [AnswerRateDropped, AnswerRateRecovered, AnswerRateDropped, AnswerRateRecovered],
    ),
}


@pytest.mark.parametrize(("flags", "expected"), JUDGEMENT.values(), ids=JUDGEMENT.keys())
def test_the_answer_rate_judgement(flags: list[bool], expected: list[type]) -> None:
    _, findings = play(records(flags))
    assert [type(f) for f in findings] == expected


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("share", [0.4, 0.2, 0.1, 0.05])
def test_a_steady_share_with_real_noise_is_never_flagged(share: float, seed: int) -> None:
    """Thousands of windows judged, one per call: chance alone must not make news."""
    _, findings = play(records(noisy(5000, share, seed)))
    assert findings == []


def test_a_noisy_collapse_is_found_once_and_its_recovery_once() -> None:
    flags = noisy(1500, 0.4, 1) + noisy(1500, 0.03, 2) + noisy(1500, 0.4, 3)
    _, findings = play(records(flags))
    assert [type(f) for f in findings] == [AnswerRateDropped, AnswerRateRecovered]


def test_the_drop_carries_before_and_after_and_the_recovery_its_episode() -> None:
    flags = phases((600, 0.4), (600, 0.03), (600, 0.4))
    state, (dropped, recovered) = play(records(flags))
    assert isinstance(dropped, AnswerRateDropped) and isinstance(recovered, AnswerRateRecovered)
    assert dropped.before == pytest.approx(0.4, abs=0.01)
    assert dropped.after < 0.1 and dropped.calls == 100 and dropped.baseline_calls >= 500
    blocked_from = T0 + 600 * GAP
    assert blocked_from < dropped.since < blocked_from + 100 * GAP  # found within a window of calls
    assert (recovered.since, recovered.before, recovered.after) == (dropped.since, dropped.before, dropped.after)
    assert recovered.now >= 0.2 and recovered.until > T0 + 1200 * GAP
    assert set(dropped.to_dict()) == {"since", "before", "after", "calls", "baselineCalls"}
    assert AnswerRateDropped.from_dict(json.loads(json.dumps(dropped.to_dict()))) == dropped
    assert recovered.to_dict() == {
        "since": dropped.since.isoformat(),
        "until": recovered.until.isoformat(),
        "lastedSeconds": int((recovered.until - recovered.since).total_seconds()),
        "before": dropped.before,
        "after": dropped.after,
        "now": recovered.now,
        "calls": 100,
    }
    assert state.episode is None and state.rate == pytest.approx(0.4)


def test_during_an_episode_the_baseline_is_frozen() -> None:
    flags = phases((600, 0.4), (2000, 0.03))
    state, (dropped,) = play(records(flags))
    assert state.episode == dropped
    assert state.baseline_calls == dropped.baseline_calls  # the blocked calls are not the task's normal


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [(0, 10, 0.5, 0.5**10), (10, 10, 0.3, 1.0), (3, 10, 0.0, 1.0), (3, 10, 1.0, 0.0), (9, 100, 0.4, 3.7758e-12)],
)
def test_binomial_tail(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_cdf(k, n, p) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "settings_",
    [{"window": 10, "min_calls": 20}, {"min_calls": 0}, {"answer_rate_drop": 1.0}, {"answer_rate_floor": 0.0}],
)
def test_impossible_rules_are_refused(settings_: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="health"):
        HealthRules(**settings_)


# -- counted once ----------------------------------------------------------------------------------------------


def test_the_same_look_twice_counts_its_calls_once() -> None:
    calls = records(even(300, 0.4))
    now = T0 + timedelta(hours=1)
    once, _ = observe(None, calls, now, RULES)
    twice, _ = observe(once, calls, now, RULES)
    assert twice == once


def test_overlapping_looks_count_each_call_once() -> None:
    calls = records(even(300, 0.4))  # 15 minutes of calls
    state, _ = observe(None, calls[:200], T0 + timedelta(minutes=11), RULES)
    state, _ = observe(state, calls[150:], T0 + timedelta(minutes=16), RULES)
    assert state.baseline_calls + len(state.window) == 300
    assert state.baseline_answered + sum(state.window) == 120
    assert (state.calls, state.answered) == (300, 120)  # the running totals a finished campaign's message tells


def test_the_totals_keep_counting_through_an_episode() -> None:
    state, _ = play(records(phases((600, 0.4), (300, 0.03))))
    assert state.episode is not None  # the baseline is frozen: the totals are not
    assert state.calls == 900 and state.answered == 240 + 9


def test_two_calls_alike_to_the_second_are_two_calls_in_every_look() -> None:
    """Two lines of a dialer can start, ring and give up in the same seconds: the key is the same, the calls two."""
    twin = records([False])[0]
    calls = [twin, dataclasses.replace(twin), *records(even(10, 0.5), start=T0 + timedelta(seconds=5))]
    state, _ = observe(None, calls, T0 + timedelta(minutes=2), RULES)
    again, _ = observe(state, calls, T0 + timedelta(minutes=3), RULES)
    assert len(state.window) == len(again.window) == 12


def test_a_call_under_way_counts_for_liveness_only_then_once_when_it_ends() -> None:
    (done,) = records([True])
    under_way = dataclasses.replace(done, answered=False, ended_at=None, duration=None)
    state, _ = observe(None, [under_way], T0 + timedelta(seconds=20), RULES)
    assert (state.window, state.last_start) == ((), T0)
    state, _ = observe(state, [done], T0 + timedelta(minutes=2), RULES)
    state, _ = observe(state, [done], T0 + timedelta(minutes=4), RULES)
    assert state.window == (True,)


def test_calls_older_than_the_lookback_of_the_latest_are_taken_as_counted() -> None:
    calls = records(even(100, 0.4))
    state, _ = observe(None, calls[50:], T0 + timedelta(minutes=6), RULES)
    late, _ = observe(state, calls[:50], T0 + timedelta(minutes=8), RULES)  # 2.5 to 5 min older than the latest
    assert len(late.window) == 50 + sum(1 for c in calls[:50] if c.started_at >= calls[-1].started_at - RULES.lookback)


def test_the_recognised_keys_are_only_those_a_next_look_can_return() -> None:
    state, _ = play(records(even(2000, 0.4)))
    assert state.last_start is not None
    assert len(state.seen) == RULES.lookback // GAP + 1
    assert all(not any(c.isalpha() for c in key) for key, _ in state.seen)


def _split(calls: list[CallRecord], cuts: list[int], overlap: timedelta) -> list[tuple[datetime, list[CallRecord]]]:
    """Looks as time ranges: each takes the calls that started from its predecessor's end less `overlap` to its own
    end, as the call log answers a range."""
    first, last = calls[0].started_at, calls[-1].started_at
    ends = [*sorted({first + timedelta(seconds=c) for c in cuts}), last + timedelta(seconds=1)]
    looks, begin = [], calls[0].started_at
    for end in ends:
        looks.append((end, [c for c in calls if begin - overlap <= c.started_at < end]))
        begin = end
    return looks


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=120),
    answered=st.lists(st.booleans(), min_size=120, max_size=120),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
    overlap=st.integers(min_value=0, max_value=300),
)
def test_any_split_of_the_same_calls_into_looks_gives_the_same_state_and_findings(
    gaps: list[int], answered: list[bool], cuts: list[int], overlap: int
) -> None:
    rules = HealthRules(window=10, min_calls=4, answer_rate_floor=0.5)  # small, so that findings happen
    starts = [T0 + timedelta(seconds=sum(gaps[: i + 1])) for i in range(len(gaps))]  # gaps of 0: calls alike
    calls = [
        CallRecord(1, s, a, s + timedelta(seconds=20), 20) for s, a in zip(starts, answered[: len(starts)], strict=True)
    ]
    now = starts[-1] + timedelta(minutes=1)
    whole, whole_findings = observe(None, calls, now, rules)
    state: CallHealth | None = None
    findings: list[Finding] = []
    # As the daemon asks (`look_range`): each look reaches at least `lookback` into the previous one, so that the
    # calls too young to judge at one look are read again at the next; the last look is at `now`.
    reach = rules.lookback + timedelta(seconds=overlap)
    last_end = calls[0].started_at
    for end, look in _split(calls, cuts, reach):
        state, found = observe(state, look, min(end, now), rules)
        findings += found
        last_end = end
    state, found = observe(state, [c for c in calls if c.started_at >= last_end - reach], now, rules)
    assert state is not None
    assert dataclasses.replace(state, first_look=None) == dataclasses.replace(whole, first_look=None)
    assert findings + found == whole_findings


# -- liveness ------------------------------------------------------------------------------------------------------


def test_a_task_that_keeps_calling_is_not_silent() -> None:
    state, _ = play(records(even(600, 0.4), gap=timedelta(seconds=6)))  # an hour at 10 a minute
    assert state.last_look is not None
    # The last look came a little after the last call: silent for that moment, far from `stall_after`.
    assert silent_for(state, state.last_look, RULES) == state.last_look - (T0 + 599 * timedelta(seconds=6))
    assert state.last_look - T0 - 599 * timedelta(seconds=6) < timedelta(minutes=3)
    assert calling_since(state) == T0 + 599 * timedelta(seconds=6)


def test_silence_is_measured_from_the_latest_call_to_the_latest_look() -> None:
    state, _ = observe(None, records(even(10, 0.4)), T0 + timedelta(minutes=1), RULES)
    for minutes in range(3, 21, 2):
        state, _ = observe(state, [], T0 + timedelta(minutes=minutes), RULES)
    assert silent_for(state, T0 + timedelta(minutes=19, seconds=30), RULES) == timedelta(minutes=19, seconds=-27)
    assert silent_for(state, T0 + timedelta(minutes=19), RULES, since=T0 + timedelta(minutes=10)) == timedelta(
        minutes=9
    )


def test_no_call_ever_seen_is_silence_since_as_far_back_as_the_first_look_read() -> None:
    state, _ = observe(None, [], T0, RULES)
    state, _ = observe(state, [], T0 + timedelta(minutes=16), RULES)
    assert calling_since(state) is None
    now = T0 + timedelta(minutes=16)
    assert silent_for(state, now, RULES) == timedelta(minutes=16) + FIRST_LOOK_BACK  # the first look read an hour
    # ...but never before the task could call (it became running, or its window opened, at `since`).
    assert silent_for(state, now, RULES, since=T0 - timedelta(minutes=2)) == timedelta(minutes=18)


@pytest.mark.parametrize(
    ("case", "rules", "now"),
    [
        ("never looked", RULES, T0),
        ("call log off", dataclasses.replace(RULES, calllog=False), T0 + timedelta(minutes=1)),
        ("looks stale (the call log fails)", RULES, T0 + timedelta(minutes=7)),
    ],
)
def test_liveness_is_unknown_when_the_call_log_cannot_tell(case: str, rules: HealthRules, now: datetime) -> None:
    state = None if case == "never looked" else observe(None, records([True]), T0, RULES)[0]
    assert silent_for(state, now, rules) is None


def test_the_first_look_reads_an_hour_and_the_next_ones_reach_into_the_previous() -> None:
    assert look_range(None, T0, RULES) == (T0 - timedelta(hours=1), T0)
    state, _ = observe(None, [], T0, RULES)
    later = T0 + timedelta(minutes=2)
    assert look_range(state, later, RULES) == (T0 - RULES.lookback, later)
    much_later = T0 + timedelta(days=1)
    assert look_range(state, much_later, RULES) == (much_later - timedelta(hours=1), much_later)


def test_calls_in_the_last_hour_for_display() -> None:
    state, _ = play(records(even(2400, 0.25)))  # two hours at 20 a minute
    assert state.last_look is not None
    calls, answered = calls_last_hour(state, T0 + timedelta(hours=2))
    assert (calls, answered) == (1200, 300)
    assert calls_last_hour(state, T0 + timedelta(hours=4)) == (0, 0)
    assert calls_last_hour(None, T0) == (0, 0)


# -- the stored state ------------------------------------------------------------------------------------------


def test_the_state_round_trips_through_json() -> None:
    state, _ = play(records(phases((600, 0.4), (300, 0.03))))
    assert state.episode is not None and state.seen and state.hourly
    assert CallHealth.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert CallHealth.from_dict(CallHealth().to_dict()) == CallHealth()


ODD_STORED: dict[str, Any] = {
    "not a mapping": ["window", "101"],
    "nothing": {},
    "wrong types": {
        "firstLook": 5,
        "lastLook": "yesterday",
        "lastStart": None,
        "window": 1011,
        "baseline": "many",
        "episode": "yes",
        "streak": "3",
        "seen": ["1/2/3/1"],
        "hourly": {"1": 2},
    },
    "odd values": {
        "window": "10x1",
        "baseline": [3, 7],
        "episode": {"since": "2026-11-23T01:00:00+00:00", "before": 4, "after": 0.01, "calls": 100},
        "streak": -1,
        "seen": {"1795392000/1795392030/30/1": True, "callee:+81 90": 1, "1795392000/-/-/0": 2},
        "hourly": [[60, 3, 5], [120, 3, 1], "x", [180, True, 0]],
    },
}


@pytest.mark.parametrize("stored", ODD_STORED.values(), ids=ODD_STORED.keys())
def test_an_odd_stored_state_is_read_without_a_crash(stored: Any) -> None:
    state = CallHealth.from_dict(stored)
    assert state.baseline_answered <= state.baseline_calls
    assert all(a <= c for _, c, a in state.hourly)
    observe(state, records(even(20, 0.5)), T0 + timedelta(minutes=2), RULES)  # and it can go on from there


def test_odd_values_keep_what_is_readable() -> None:
    state = CallHealth.from_dict(ODD_STORED["odd values"])
    assert state.window == (True, False, True)
    assert (state.baseline_calls, state.baseline_answered, state.episode, state.streak) == (0, 0, None, 0)
    assert state.seen == (("1795392000/-/-/0", 2),)
    assert state.hourly == ((120, 3, 1),)


def test_a_smaller_window_in_new_rules_hands_the_oldest_calls_to_the_baseline() -> None:
    state, _ = observe(None, records(even(100, 0.4)), T0 + timedelta(minutes=6), RULES)
    smaller = dataclasses.replace(RULES, window=60, min_calls=30)
    state, _ = observe(state, [], T0 + timedelta(minutes=8), smaller)
    assert (len(state.window), state.baseline_calls) == (60, 40)


# -- end to end: the scenarios through the simulator and the client on 127.0.0.1 ---------------------------------


class Wall:
    """The simulator's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def looks(
    sim: Simulator, wall: Wall, task_id: int, minutes: int, rules: HealthRules = RULES
) -> tuple[CallHealth | None, list[tuple[datetime, Finding]], list[int]]:
    """Look at the task's call log every `rules.every` for `minutes`, as the daemon will; what was found and when,
    and the task's progress at each look."""
    state: CallHealth | None = None
    found: list[tuple[datetime, Finding]] = []
    progress: list[int] = []

    async def no_sleep(seconds: float) -> None:
        pass

    async with sim.serving() as url, VoiceFoxClient(url, sim.token, sleep=no_sleep) as client:
        end = wall.now + timedelta(minutes=minutes)
        while wall.now < end:
            wall.now += rules.every
            since, until = look_range(state, wall.now, rules)
            log = await client.call_log([task_id], since, until, tz=sim.zone)
            state, findings = observe(state, log.for_task(task_id), wall.now, rules)
            found += [(wall.now, f) for f in findings]
            progress.append((await client.get_task(task_id)).progress or 0)
    return state, found, progress


@pytest.mark.anyio
async def test_blocked_numbers_end_to_end_one_drop_then_one_recovery() -> None:
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    (task,) = blocked_numbers(sim, blocked_after=timedelta(minutes=30))
    sim.dialer(task, answered=0.4, at=T0 + timedelta(minutes=60))  # the carriers lift the label after half an hour
    state, found, _ = await looks(sim, wall, task, minutes=90)
    (when_dropped, dropped), (when_recovered, recovered) = found
    assert isinstance(dropped, AnswerRateDropped) and isinstance(recovered, AnswerRateRecovered)
    assert dropped.before == pytest.approx(0.4, abs=0.01) and dropped.after < 0.1
    # 30 calls a minute: the window of 100 tips within a few minutes, and the recovery takes a window more.
    assert T0 + timedelta(minutes=30) < when_dropped <= T0 + timedelta(minutes=36)
    assert T0 + timedelta(minutes=60) < when_recovered <= T0 + timedelta(minutes=70)
    assert silent_for(state, wall.now, RULES) < timedelta(minutes=2)  # type: ignore[operator]


@pytest.mark.anyio
async def test_a_creeping_campaign_keeps_calling_while_its_progress_is_flat() -> None:
    """Flat progress for longer than stall_after, and the call log shows the dialer busy all along: no stall."""
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    (task,) = creeping_campaign(sim)
    state, found, progress = await looks(sim, wall, task, minutes=18)
    assert set(progress) == {40} and found == []
    assert silent_for(state, wall.now, RULES) < timedelta(minutes=2)  # type: ignore[operator]
    assert state is not None and state.rate == pytest.approx(0.4, abs=0.02)


@pytest.mark.anyio
async def test_a_silent_dialer_is_silent_for_stall_after_while_running() -> None:
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    (task,) = silent_dialer(sim, silent_after=timedelta(minutes=10))
    state, found, _ = await looks(sim, wall, task, minutes=26)
    last_call = T0 + timedelta(minutes=10) - timedelta(seconds=5)  # 12 calls a minute, none from minute 10 on
    assert calling_since(state) == last_call
    assert silent_for(state, wall.now, RULES) == wall.now - last_call == timedelta(minutes=16, seconds=5)
    assert found == [] and sim.current(task)["status"] == "running"  # type: ignore[index]


@pytest.mark.anyio
async def test_a_refused_call_log_is_permission_denied_and_leaves_liveness_to_progress() -> None:
    """The token may not read calls: one clear refusal, the call log goes off, and the stall rule keeps to progress."""
    wall = Wall()
    sim = Simulator(wall_clock=wall)
    (task,) = calllog_forbidden(sim)

    async def no_sleep(seconds: float) -> None:
        pass

    async with sim.serving() as url, VoiceFoxClient(url, sim.token, sleep=no_sleep) as client:
        with pytest.raises(PermissionDenied):
            await client.call_log([task], *look_range(None, wall.now, RULES), tz=sim.zone)
        assert (await client.get_task(task)).status == "running"
    assert sim.calllog_requests == 1  # refused once, not retried
    assert silent_for(None, wall.now, dataclasses.replace(RULES, calllog=False)) is None


def test_a_busy_campaigns_newest_calls_do_not_make_a_collapse_of_their_own() -> None:
    # Calls are listed once they end, and answered ones last longer: at every look the newest listed calls are mostly
    # unanswered. 200 calls a minute at 20 %, answered calls 150 s long: judged as listed, that looks like a collapse
    # at look after look; judged once they have all had the time to end, it is the campaign's steady share.
    flags = noisy(6000, 0.2, seed=3)
    calls = []
    for i, answered in enumerate(flags):
        begin = T0 + i * timedelta(seconds=0.3)
        seconds = 150 if answered else 25
        calls.append(CallRecord(1, begin, answered, begin + timedelta(seconds=seconds), seconds))
    state, findings = play(calls)
    assert findings == []
    assert state.calls == 6000  # each judged once, none lost for being held back


def test_a_call_in_the_future_is_no_call() -> None:
    # A row read in the wrong zone (or broken) must not hold the latest start ahead of every look: that would say
    # "calling" for ever, silencing every stall, and keep every later call from being counted.
    calls = records(even(100, 0.4))
    now = T0 + timedelta(minutes=6)
    ahead = now + timedelta(hours=2)
    state, _ = observe(None, [*calls, CallRecord(1, ahead, True, ahead + timedelta(seconds=30), 30)], now, RULES)
    assert state.last_start == calls[-1].started_at and state.calls == 100
    later = now + timedelta(minutes=4)
    fresh = [c for c in records(even(40, 0.4), start=now) if c.ended_at is not None and c.ended_at <= later]
    state, _ = observe(state, fresh, later, RULES)
    assert state.last_start == fresh[-1].started_at
    stored = {**state.to_dict(), "lastStart": ahead.isoformat()}
    assert CallHealth.from_dict(stored).last_start == state.last_look

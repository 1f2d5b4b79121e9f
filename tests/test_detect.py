"""Detection rules, table by table: (previous state, snapshot, now) -> (next state, events), with an explicit clock."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from watcher.detect import Rules, detect, detect_missing, transition_type
from watcher.model import Event, EventType, TaskSnapshot, TaskState, parse_task_body
from watcher.simulator import task_body

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STALL = timedelta(minutes=15)
RULES = Rules(progress_step=10, stall_after=STALL)
TASK = 1001


def snap(status: str = "running", progress: int | None = 0, task_id: int = TASK) -> TaskSnapshot:
    return TaskSnapshot(
        id=task_id,
        status=status,
        name="November reminders",
        progress=progress,
        total=1200,
        collection_rate=37,
        summary="",
        suggestion="",
        updated_at="2026-11-23 09:00:00",
    )


def known(snapshot: TaskSnapshot, since: datetime = T0, *, stalled: bool = False, missing: bool = False) -> TaskState:
    return TaskState(snapshot, progress_since=since, stalled=stalled, missing=missing)


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


E = EventType
ALL_STATUSES = ["pending", "running", "stop.operate", "stop.timeout", "stop.abnormal", "done"]
UNKNOWN = "paused.quota"  # a status VoiceFox might add one day

# Every ordered pair of distinct statuses (the six documented ones plus an unknown one) and its event.
TRANSITIONS: list[tuple[str, str, EventType]] = [
    # -> running: started from pending, resumed from any stop.*, otherwise just changed
    ("pending", "running", E.STARTED),
    ("stop.operate", "running", E.RESUMED),
    ("stop.timeout", "running", E.RESUMED),
    ("stop.abnormal", "running", E.RESUMED),
    ("done", "running", E.CHANGED),
    (UNKNOWN, "running", E.CHANGED),
    # -> done: finished, whatever came before
    ("pending", "done", E.FINISHED),
    ("running", "done", E.FINISHED),
    ("stop.operate", "done", E.FINISHED),
    ("stop.timeout", "done", E.FINISHED),
    ("stop.abnormal", "done", E.FINISHED),
    (UNKNOWN, "done", E.FINISHED),
    # -> stop.operate: stopped
    ("pending", "stop.operate", E.STOPPED),
    ("running", "stop.operate", E.STOPPED),
    ("stop.timeout", "stop.operate", E.STOPPED),
    ("stop.abnormal", "stop.operate", E.STOPPED),
    ("done", "stop.operate", E.STOPPED),
    (UNKNOWN, "stop.operate", E.STOPPED),
    # -> stop.timeout: timed_out
    ("pending", "stop.timeout", E.TIMED_OUT),
    ("running", "stop.timeout", E.TIMED_OUT),
    ("stop.operate", "stop.timeout", E.TIMED_OUT),
    ("stop.abnormal", "stop.timeout", E.TIMED_OUT),
    ("done", "stop.timeout", E.TIMED_OUT),
    (UNKNOWN, "stop.timeout", E.TIMED_OUT),
    # -> stop.abnormal: failed
    ("pending", "stop.abnormal", E.FAILED),
    ("running", "stop.abnormal", E.FAILED),
    ("stop.operate", "stop.abnormal", E.FAILED),
    ("stop.timeout", "stop.abnormal", E.FAILED),
    ("done", "stop.abnormal", E.FAILED),
    (UNKNOWN, "stop.abnormal", E.FAILED),
    # -> pending: nothing documented goes back to pending, so it is only "changed"
    ("running", "pending", E.CHANGED),
    ("stop.operate", "pending", E.CHANGED),
    ("stop.timeout", "pending", E.CHANGED),
    ("stop.abnormal", "pending", E.CHANGED),
    ("done", "pending", E.CHANGED),
    (UNKNOWN, "pending", E.CHANGED),
    # -> an unknown status: changed, never a crash
    ("pending", UNKNOWN, E.CHANGED),
    ("running", UNKNOWN, E.CHANGED),
    ("stop.operate", UNKNOWN, E.CHANGED),
    ("stop.timeout", UNKNOWN, E.CHANGED),
    ("stop.abnormal", UNKNOWN, E.CHANGED),
    ("done", UNKNOWN, E.CHANGED),
    ("paused", UNKNOWN, E.CHANGED),
    ("pending", "RUNNING", E.CHANGED),  # statuses are case-sensitive: "RUNNING" is not documented
    ("pending", "", E.CHANGED),
]


def _transition_id(row: tuple[str, str, EventType]) -> str:
    return f"{row[0] or '(empty)'}->{row[1] or '(empty)'}"


@pytest.mark.parametrize(("before", "after", "expected"), TRANSITIONS, ids=[_transition_id(r) for r in TRANSITIONS])
def test_transition_type_names_each_status_change(before: str, after: str, expected: EventType) -> None:
    assert transition_type(before, after) is expected


@pytest.mark.parametrize(("before", "after", "expected"), TRANSITIONS, ids=[_transition_id(r) for r in TRANSITIONS])
def test_detect_emits_exactly_the_transition_event(before: str, after: str, expected: EventType) -> None:
    """With progress unchanged, a status change yields one event: the transition's."""
    state, events = detect(known(snap(before, 50)), snap(after, 50), T0 + timedelta(seconds=30), RULES)
    assert types(events) == [expected.value]
    assert state.snapshot == snap(after, 50)
    assert state.progress_since == T0 + timedelta(seconds=30)


def test_every_documented_pair_is_in_the_transition_table() -> None:
    covered = {(b, a) for b, a, _ in TRANSITIONS}
    for before in [*ALL_STATUSES, UNKNOWN]:
        for after in [*ALL_STATUSES, UNKNOWN]:
            if before != after:
                assert (before, after) in covered


@pytest.mark.parametrize("status", [*ALL_STATUSES, UNKNOWN])
@pytest.mark.parametrize("progress", [None, 0, 55, 100])
def test_unchanged_snapshot_emits_nothing(status: str, progress: int | None) -> None:
    state, events = detect(known(snap(status, progress)), snap(status, progress), T0 + timedelta(seconds=30), RULES)
    assert events == []
    assert state.progress_since == T0


# --- first sight ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "running", "done", UNKNOWN])
@pytest.mark.parametrize("progress", [None, 0, 37, 100])
def test_first_sight_is_exactly_one_observed_event(status: str, progress: int | None) -> None:
    """A task seen for the first time is observed; no started/finished/progressed is invented."""
    state, events = detect(None, snap(status, progress), T0, RULES)
    assert types(events) == [E.OBSERVED.value]
    assert events[0].data["previous"] is None
    assert state == TaskState(snap(status, progress), progress_since=T0, stalled=False, missing=False)


@pytest.mark.parametrize(
    ("status", "announced"),
    [("stop.abnormal", E.FAILED), ("stop.timeout", E.TIMED_OUT), ("stop.operate", E.STOPPED)],
)
def test_first_sight_of_a_stopped_task_also_announces_the_stop(status: str, announced: E) -> None:
    """A campaign that failed before the watcher started (or before it was added) reaches those who hear of failures:
    the event is the stop's own type, with no previous status and `firstSight` set."""
    state, events = detect(None, snap(status, 40), T0, RULES)
    assert types(events) == [E.OBSERVED.value, announced.value]
    assert events[1].data["previous"] is None
    assert events[1].data["firstSight"] is True
    assert events[0].id != events[1].id
    _, again = detect(state, snap(status, 40), T0 + timedelta(minutes=5), RULES)
    assert again == []  # once, not on every poll


def test_first_sight_of_a_running_task_starts_the_stall_clock_now() -> None:
    state, _ = detect(None, snap("running", 20), T0, RULES)
    _, events = detect(state, snap("running", 20), T0 + STALL - timedelta(seconds=1), RULES)
    assert events == []
    _, events = detect(state, snap("running", 20), T0 + STALL, RULES)
    assert types(events) == [E.STALLED.value]


# --- progressed ----------------------------------------------------------------------------------------------------

# (progress before, progress after, progress_step, the milestone of the one `progressed` event or None for no event)
PROGRESS: list[tuple[int | None, int | None, int, int | None]] = [
    (0, 9, 10, None),
    (0, 10, 10, 10),
    (9, 10, 10, 10),
    (10, 11, 10, None),
    (10, 19, 10, None),
    (19, 20, 10, 20),
    (5, 35, 10, 30),  # two multiples crossed in one poll: one event, the highest milestone
    (0, 100, 10, 100),
    (99, 100, 10, 100),
    (40, 30, 10, None),  # going backwards is no milestone
    (30, 30, 10, None),
    (0, 24, 25, None),
    (24, 25, 25, 25),
    (0, 99, 25, 75),
    (0, 1, 1, 1),
    (0, 100, 100, 100),
    (0, 50, 0, None),  # progress_step = 0 turns `progressed` off
    (0, 100, 0, None),
    (None, 50, 10, None),  # no known progress before: nothing to compare
    (50, None, 10, None),
]


@pytest.mark.parametrize(("before", "after", "step", "milestone"), PROGRESS)
def test_progressed_when_progress_crosses_a_multiple_of_the_step(
    before: int | None, after: int | None, step: int, milestone: int | None
) -> None:
    rules = Rules(progress_step=step, stall_after=STALL)
    _, events = detect(known(snap("running", before)), snap("running", after), T0 + timedelta(minutes=1), rules)
    progressed = [e for e in events if e.type == E.PROGRESSED]
    if milestone is None:
        assert progressed == []
    else:
        assert len(progressed) == 1
        assert progressed[0].data["milestone"] == milestone
    assert types(events) == [E.PROGRESSED.value] * len(progressed)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("running", "done", E.FINISHED),
        ("running", "stop.operate", E.STOPPED),
        ("running", "stop.timeout", E.TIMED_OUT),
        ("running", "stop.abnormal", E.FAILED),
        ("pending", "done", E.FINISHED),
    ],
)
def test_progressed_is_not_emitted_with_a_terminal_status_event(before: str, after: str, expected: EventType) -> None:
    _, events = detect(known(snap(before, 42)), snap(after, 100), T0 + timedelta(minutes=1), RULES)
    assert types(events) == [expected.value]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("pending", "running", E.STARTED),
        ("stop.operate", "running", E.RESUMED),
        ("running", UNKNOWN, E.CHANGED),
    ],
)
def test_progressed_follows_a_non_terminal_status_event_in_the_same_poll(
    before: str, after: str, expected: EventType
) -> None:
    _, events = detect(known(snap(before, 5)), snap(after, 21), T0 + timedelta(minutes=1), RULES)
    assert types(events) == [expected.value, E.PROGRESSED.value]
    assert events[1].data["milestone"] == 20


def test_progress_change_without_a_milestone_restarts_the_stall_clock() -> None:
    now = T0 + timedelta(minutes=10)
    state, events = detect(known(snap("running", 11)), snap("running", 12), now, RULES)
    assert events == []
    assert state.progress_since == now


# --- stalled -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "stalls"),
    [
        (timedelta(0), False),
        (timedelta(minutes=14, seconds=59), False),
        (STALL, True),
        (timedelta(hours=3), True),
    ],
)
def test_running_task_stalls_after_stall_after_of_unchanged_progress(elapsed: timedelta, stalls: bool) -> None:
    state, events = detect(known(snap("running", 40)), snap("running", 40), T0 + elapsed, RULES)
    assert types(events) == ([E.STALLED.value] if stalls else [])
    assert state.stalled is stalls
    assert state.progress_since == T0


def test_stalled_event_says_since_when_and_for_how_long() -> None:
    _, events = detect(known(snap("running", 40)), snap("running", 40), T0 + timedelta(minutes=20), RULES)
    (event,) = events
    assert event.data["stalledSince"] == T0.isoformat()
    assert event.data["stalledForSeconds"] == 20 * 60
    assert event.data["task"]["progress"] == 40


def test_stalled_is_emitted_once_per_episode() -> None:
    state = known(snap("running", 40))
    emitted = []
    for minutes in range(0, 120, 5):
        state, events = detect(state, snap("running", 40), T0 + timedelta(minutes=minutes), RULES)
        emitted += types(events)
    assert emitted == [E.STALLED.value]
    assert state.stalled


def test_progress_change_ends_a_stall_episode_and_a_new_one_can_start() -> None:
    state, events = detect(known(snap("running", 40)), snap("running", 40), T0 + STALL, RULES)
    assert types(events) == [E.STALLED.value]
    moved = T0 + STALL + timedelta(minutes=1)
    state, events = detect(state, snap("running", 41), moved, RULES)
    assert types(events) == [E.UNSTALLED.value]
    assert events[0].data["resolves"] == {
        "type": E.STALLED.value,
        "since": T0.isoformat(),
        "lastedSeconds": int((STALL + timedelta(minutes=1)).total_seconds()),
    }
    assert not state.stalled
    assert state.progress_since == moved
    state, events = detect(state, snap("running", 41), moved + STALL - timedelta(seconds=1), RULES)
    assert events == []
    state, events = detect(state, snap("running", 41), moved + STALL, RULES)
    assert types(events) == [E.STALLED.value]
    assert state.stalled


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ("done", [E.FINISHED]),
        ("stop.abnormal", [E.FAILED]),
        ("stop.operate", [E.STOPPED]),
        ("pending", [E.CHANGED, E.UNSTALLED]),
    ],
)
def test_a_status_that_ends_the_campaign_ends_a_stall_without_an_unstalled_notice(
    after: str, expected: list[E]
) -> None:
    """`unstalled` says a stalled campaign moves again; a final status says what happened itself."""
    state, _ = detect(known(snap("running", 40)), snap("running", 40), T0 + STALL, RULES)
    state, events = detect(state, snap(after, 40), T0 + STALL + timedelta(minutes=1), RULES)
    assert types(events) == [e.value for e in expected]
    assert not state.stalled


@pytest.mark.parametrize(
    ("stopped", "problem"),
    [("stop.operate", E.STOPPED), ("stop.timeout", E.TIMED_OUT), ("stop.abnormal", E.FAILED)],
)
def test_resumed_says_which_stop_it_resolves_and_how_long_it_lasted(stopped: str, problem: E) -> None:
    state, _ = detect(known(snap("running", 40)), snap(stopped, 40), T0 + timedelta(minutes=1), RULES)
    _, events = detect(state, snap("running", 40), T0 + timedelta(minutes=31), RULES)
    assert types(events) == [E.RESUMED.value]
    assert events[0].data["resolves"] == {
        "type": problem.value,
        "since": (T0 + timedelta(minutes=1)).isoformat(),
        "lastedSeconds": 1800,
    }


@pytest.mark.parametrize("status", ["pending", "stop.operate", "stop.timeout", "stop.abnormal", "done", UNKNOWN])
def test_no_stall_while_not_running(status: str) -> None:
    state, events = detect(known(snap(status, 40)), snap(status, 40), T0 + timedelta(days=2), RULES)
    assert events == []
    assert not state.stalled


def test_resuming_after_a_long_stop_does_not_stall_at_once() -> None:
    """A status change restarts the stall clock, so a resumed task gets its full stall_after."""
    now = T0 + timedelta(hours=5)
    state, events = detect(known(snap("stop.operate", 40)), snap("running", 40), now, RULES)
    assert types(events) == [E.RESUMED.value]
    assert state.progress_since == now
    assert not state.stalled


def test_stall_after_is_taken_from_the_rules() -> None:
    rules = Rules(progress_step=10, stall_after=timedelta(seconds=90))
    _, events = detect(known(snap("running", 40)), snap("running", 40), T0 + timedelta(seconds=90), rules)
    assert types(events) == [E.STALLED.value]


# --- missing -------------------------------------------------------------------------------------------------------


def test_missing_is_emitted_once_for_a_task_seen_before() -> None:
    state: TaskState | None = known(snap("running", 40))
    state, events = detect_missing(state, T0 + timedelta(minutes=1))
    assert types(events) == [E.MISSING.value]
    assert state is not None
    assert state.missing
    assert events[0].data["task"] == snap("running", 40).to_dict()
    assert events[0].data["previous"] == {"status": "running", "progress": 40}
    again, events = detect_missing(state, T0 + timedelta(minutes=2))
    assert events == []
    assert again == state


def test_missing_never_seen_task_yields_nothing() -> None:
    assert detect_missing(None, T0) == (None, [])


def test_reappearing_task_clears_missing_and_can_go_missing_again() -> None:
    state, _ = detect_missing(known(snap("running", 40)), T0 + timedelta(minutes=1))
    assert state is not None
    back, events = detect(state, snap("running", 40), T0 + timedelta(minutes=2), RULES)
    assert types(events) == [E.REAPPEARED.value]
    assert events[0].data["resolves"] == {"type": E.MISSING.value}
    assert not back.missing
    gone, events = detect_missing(back, T0 + timedelta(minutes=3))
    assert types(events) == [E.MISSING.value]
    assert gone is not None
    assert gone.missing


def test_reappearing_with_a_new_status_reports_the_transition_and_clears_missing() -> None:
    state, _ = detect_missing(known(snap("running", 40)), T0 + timedelta(minutes=1))
    assert state is not None
    back, events = detect(state, snap("done", 100), T0 + timedelta(minutes=2), RULES)
    assert types(events) == [E.REAPPEARED.value, E.FINISHED.value]
    assert not back.missing


# --- event identity and content -----------------------------------------------------------------------------------


def _scenarios() -> list[list[Event]]:
    """A spread of polls whose events must all have distinct ids."""
    t1 = T0 + timedelta(minutes=1)
    out = [
        detect(None, snap("pending", 0), T0, RULES)[1],
        detect(None, snap("pending", 0, task_id=TASK + 1), T0, RULES)[1],
        detect(None, snap("pending", 0), t1, RULES)[1],
        detect(known(snap("pending", 0)), snap("running", 25), t1, RULES)[1],
        detect(known(snap("running", 25)), snap("running", 35), t1, RULES)[1],
        detect(known(snap("running", 35)), snap("running", 35), T0 + STALL, RULES)[1],
        detect(known(snap("running", 35)), snap("done", 100), t1, RULES)[1],
        detect(known(snap("running", 35)), snap("stop.abnormal", 35), t1, RULES)[1],
        detect(known(snap("stop.abnormal", 35)), snap("running", 35), t1, RULES)[1],
        detect_missing(known(snap("running", 35)), t1)[1],
        detect_missing(known(snap("running", 35)), T0 + timedelta(minutes=2))[1],
    ]
    assert all(out)
    return out


def test_event_ids_are_stable_for_the_same_inputs() -> None:
    first = [[e.id for e in events] for events in _scenarios()]
    second = [[e.id for e in events] for events in _scenarios()]
    assert first == second


def test_event_ids_are_distinct_between_events() -> None:
    ids = [e.id for events in _scenarios() for e in events]
    assert len(ids) == len(set(ids))


def test_event_ids_are_uuids() -> None:
    for events in _scenarios():
        for e in events:
            assert str(uuid.UUID(e.id)) == e.id


def test_events_of_one_poll_have_distinct_ids() -> None:
    _, events = detect(known(snap("pending", 0)), snap("running", 30), T0, RULES)
    assert types(events) == [E.STARTED.value, E.PROGRESSED.value]
    assert events[0].id != events[1].id


def test_event_carries_time_subject_task_snapshot_and_previous() -> None:
    now = T0 + timedelta(minutes=3)
    current = snap("done", 100)
    _, (event,) = detect(known(snap("running", 80)), current, now, RULES)
    assert event.type == E.FINISHED.value
    assert event.time == now
    assert event.subject == str(TASK)
    assert event.data["task"] == current.to_dict()
    assert event.data["task"] == {
        "id": TASK,
        "name": "November reminders",
        "status": "done",
        "progress": 100,
        "total": 1200,
        "collectionRate": 37,
        "summary": "",
        "suggestion": "",
        "updatedAt": "2026-11-23 09:00:00",
        "createdAt": "",
        "startDate": "",
        "startTime": [],
    }
    assert event.data["previous"] == {"status": "running", "progress": 80}


def test_events_survive_to_dict_and_from_dict() -> None:
    for events in _scenarios():
        for e in events:
            doc = json.loads(json.dumps(e.to_dict()))
            assert Event.from_dict(doc) == e


SECRETS = [
    "ws-token-secret",
    "wsurl-secret",
    "websocketToken",
    "websocketUrl",
    "819012345678",
    "819087654321",
    "campaign.owner@example.com",
    "numbers",
    "creator",
]


def test_events_never_carry_secrets_from_the_api_body() -> None:
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    first = parse_task_body(json.dumps(task_body(TASK, "Secrets inside", status="pending", progress=0)), TASK)
    second = parse_task_body(json.dumps(task_body(TASK, "Secrets inside", status="running", progress=30)), TASK)
    state, events = detect(None, first, T0, RULES)
    state, more = detect(state, second, t1, RULES)
    _, gone = detect_missing(state, t2)
    all_events = events + more + gone
    assert types(all_events) == [E.OBSERVED.value, E.STARTED.value, E.PROGRESSED.value, E.MISSING.value]
    text = json.dumps([e.to_dict() for e in all_events], ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in text
        assert secret not in repr(all_events)

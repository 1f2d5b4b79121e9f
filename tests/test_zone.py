"""The campaigns' time zone (pure, table-tested), windows that never silence an alert, and evidence beating the model."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from watcher.detect import Rules, detect
from watcher.model import TaskSnapshot, TaskState
from watcher.schedule import DOUBT_FOR, Cadence, Evidence, contradicts, next_poll, offsets_open, window_state
from watcher.zone import (
    UNKNOWN,
    Source,
    Zone,
    ZoneResolver,
    fixed,
    learned_offset,
    read_timestamp,
    stated_offset,
)

CALLING, NONE = Evidence.CALLING, Evidence.NONE
TOKYO = ZoneInfo("Asia/Tokyo")
SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-11-23 01:30 UTC = 10:30 in Tokyo (inside 09:00-18:00), 09:30 in Shanghai.
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
CADENCE = Cadence(interval=30.0, slow_interval=300.0, done_linger=3600.0)
WINDOWS = (("09:00", "18:00"),)


def snap(updated: str = "", created: str = "", **kw: object) -> TaskSnapshot:
    fields: dict[str, object] = {"id": 1, "status": "running", "progress": 10, "windows": WINDOWS}
    fields.update(kw)
    return TaskSnapshot(updated_at=updated, created_at=created, **fields)  # type: ignore[arg-type]


# -- reading timestamps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updated", "created", "offset"),
    [
        ("2026-11-23T09:00:00+09:00", "", 540),
        ("2026-11-23T09:00:00+08:00", "", 480),
        ("2026-11-23 09:00:00+0530", "", 330),
        ("2026-11-23T09:00:00.123456-03:00", "", -180),
        ("", "2026-11-01T10:00:00+09:00", 540),  # createdAt when updatedAt says nothing
        ("2026-11-23T00:00:00Z", "", None),  # UTC is where servers keep clocks: it places nothing
        ("2026-11-23T00:00:00+00:00", "", None),
        ("2026-11-23 09:00:00", "", None),  # naive
        ("2026/11/23 09:00:00", "", None),
        ("not a time", "", None),
        ("", "", None),
        ("2026-11-23T09:00:00+15:00", "", None),  # no such offset on Earth
    ],
)
def test_the_offset_the_api_writes(updated: str, created: str, offset: int | None) -> None:
    assert stated_offset(snap(updated, created)) == offset


@pytest.mark.parametrize(
    ("updated", "looked_before", "offset"),
    [
        # Changed between a look 30 s ago and now (01:30 UTC), written in Tokyo time: +09:00.
        ("2026-11-23 10:29:50", timedelta(seconds=30), 540),
        ("2026-11-23 10:25:10", timedelta(minutes=5), 540),  # five minutes old: still the nearest quarter hour
        ("2026-11-23 09:29:59", timedelta(seconds=30), 480),  # Shanghai
        ("2026-11-23 07:00:00", timedelta(seconds=30), 330),  # India, +05:30
        ("2026-11-23 07:15:00", timedelta(seconds=30), 345),  # Nepal, +05:45
        ("2026-11-22 22:30:00", timedelta(seconds=30), -180),
        ("2026-11-23 01:29:55", timedelta(seconds=30), 0),  # a vote for UTC (which will place nothing)
        ("2026-11-23 01:41:00", timedelta(seconds=30), None),  # +00:15 is no zone's offset: a clock off, not a zone
        ("2026-11-23 10:29:50", timedelta(minutes=30), None),  # not fresh: it may have changed long ago
        ("2026-11-23 10:25:10", timedelta(minutes=6), None),
        ("2026-11-23 10:29:50", None, None),  # no earlier look
        ("2026-11-23T10:29:50+09:00", timedelta(seconds=30), None),  # not naive: stated, not learned
    ],
)
def test_one_fresh_change_of_a_naive_timestamp(
    updated: str, looked_before: timedelta | None, offset: int | None
) -> None:
    before = snap("2026-11-23 10:00:00")
    previous_look = NOW - looked_before if looked_before is not None else None
    assert learned_offset(before, snap(updated), NOW, previous_look) == offset


def test_an_unchanged_timestamp_teaches_nothing() -> None:
    same = snap("2026-11-23 10:29:50")
    assert learned_offset(same, same, NOW, NOW - timedelta(seconds=30)) is None


def test_read_timestamp_never_raises() -> None:
    for text in ["", "x", "2026-13-01 00:00:00", "99999-01-01", "2026-11-23T25:00:00", "\x00"]:
        assert read_timestamp(text) is None


# -- the resolution order -----------------------------------------------------------------------------------------


def resolver_after(
    *answers: tuple[int, str], configured: ZoneInfo | None = None, per_task: dict[int, ZoneInfo] | None = None
) -> ZoneResolver:
    """A resolver that saw, per task, a first answer then one changed 30 s later with the given updatedAt."""
    zones = ZoneResolver(configured, per_task or {})
    when = NOW
    for task, updated in answers:
        before = snap("2026-11-01 00:00:00", id=task)
        zones.observe(task, None, before, when - timedelta(seconds=30), None)
        zones.observe(task, before, snap(updated, id=task), when, when - timedelta(seconds=30))
        when += timedelta(seconds=1)
    return zones


@pytest.mark.parametrize(
    ("case", "zones", "name", "source"),
    [
        ("nothing known", resolver_after(), "unknown", Source.UNKNOWN),
        ("configured", resolver_after((1, "2026-11-23T10:29:50+08:00"), configured=TOKYO), "Asia/Tokyo", Source.CONFIG),
        ("stated by the API", resolver_after((1, "2026-11-23T10:29:50+09:00")), "+09:00", Source.API),
        ("one naive change is not enough", resolver_after((1, "2026-11-23 10:29:50")), "unknown", Source.UNKNOWN),
        ("nor two", resolver_after((1, "2026-11-23 10:29:50"), (2, "2026-11-23 10:30:00")), "unknown", Source.UNKNOWN),
        (
            "three agreeing naive changes",
            resolver_after((1, "2026-11-23 10:29:50"), (2, "2026-11-23 10:30:00"), (3, "2026-11-23 10:30:01")),
            "+09:00",
            Source.LEARNED,
        ),
        (
            "not without two thirds",
            resolver_after(
                (1, "2026-11-23 10:29:50"),
                (2, "2026-11-23 09:30:00"),
                (3, "2026-11-23 10:30:01"),
                (4, "2026-11-23 09:30:02"),
                (5, "2026-11-23 10:30:03"),
            ),
            "unknown",
            Source.UNKNOWN,
        ),
        (
            "three of four",
            resolver_after(
                (1, "2026-11-23 10:29:50"),
                (2, "2026-11-23 09:30:00"),
                (3, "2026-11-23 10:30:01"),
                (4, "2026-11-23 10:30:03"),
            ),
            "+09:00",
            Source.LEARNED,
        ),
        (
            "a clock a few minutes off still rounds right",
            resolver_after((1, "2026-11-23 10:34:00"), (2, "2026-11-23 10:33:30"), (3, "2026-11-23 10:34:10")),
            "+09:00",
            Source.LEARNED,
        ),
        (
            "a UTC server places nothing",
            resolver_after((1, "2026-11-23T01:29:50Z"), (2, "2026-11-23 01:30:00"), (3, "2026-11-23 01:30:01")),
            "unknown",
            Source.UNKNOWN,
        ),
        (
            "a stated offset beats a learned one",
            resolver_after(
                (1, "2026-11-23 09:29:50"),
                (2, "2026-11-23 09:30:00"),
                (3, "2026-11-23 09:30:01"),
                (4, "2026-11-23T10:30:00+09:00"),
            ),
            "+09:00",
            Source.API,
        ),
    ],
)
def test_the_campaigns_zone(case: str, zones: ZoneResolver, name: str, source: Source) -> None:
    zone = zones.zone()
    assert (zone.name, zone.source) == (name, source), case


def test_a_task_zone_beats_the_configured_one_which_beats_what_the_api_says() -> None:
    zones = resolver_after((1, "2026-11-23T10:29:50+09:00"), (2, "2026-11-23T09:29:50+08:00"), per_task={3: SHANGHAI})
    assert zones.for_task(1) == Zone(fixed(540), Source.API)
    assert zones.for_task(2) == Zone(fixed(480), Source.API)  # each task's own timestamps
    assert zones.for_task(3) == Zone(SHANGHAI, Source.TASK)
    assert zones.for_task(4).source is Source.API  # no timestamps of its own: the API's zone
    zones.reconfigure(TOKYO, {3: SHANGHAI})
    assert zones.for_task(1) == Zone(TOKYO, Source.CONFIG)
    assert zones.for_task(3) == Zone(SHANGHAI, Source.TASK)
    assert zones.suggested(2) == Zone(fixed(480), Source.API)  # what the API says, for a warning


def test_a_learned_zone_is_remembered_and_yields_to_new_evidence() -> None:
    zones = ZoneResolver(learned=540)
    assert zones.zone() == Zone(fixed(540), Source.LEARNED)
    before = snap("2026-11-01 00:00:00")
    for i, updated in enumerate(["2026-11-23 09:29:50", "2026-11-23 09:30:00", "2026-11-23 09:30:05"]):
        zones.observe(i, before, snap(updated, id=i), NOW, NOW - timedelta(seconds=30))
    assert zones.zone() == Zone(fixed(480), Source.LEARNED)
    for i, updated in enumerate(["2026-11-23 01:29:50", "2026-11-23 01:30:00", "2026-11-23 01:30:05"] * 2):
        zones.observe(10 + i, before, snap(updated, id=10 + i), NOW, NOW - timedelta(seconds=30))
    assert zones.zone() == UNKNOWN  # the server turned out to write UTC: what was learned is dropped


def test_a_task_met_again_after_a_restart_speaks_for_the_zone_at_once() -> None:
    """The stored answer is what a new resolver first sees; the next answer, unchanged, must not be ignored."""
    stored = snap("2026-11-23T10:00:00+09:00")
    zones = ZoneResolver()
    zones.observe(1, stored, stored, NOW, None)  # the first poll after a restart: nothing changed since the store
    assert zones.zone() == Zone(fixed(540), Source.API)


def test_forgotten_tasks_no_longer_speak_for_the_zone() -> None:
    zones = resolver_after((1, "2026-11-23T10:29:50+09:00"))
    zones.forget([1])
    assert zones.zone() == UNKNOWN


def test_zones_survive_the_store() -> None:
    for zone in [UNKNOWN, Zone(fixed(540), Source.API), Zone(TOKYO, Source.CONFIG), Zone(fixed(-210), Source.LEARNED)]:
        assert Zone.from_dict(zone.to_dict()) == zone
    assert Zone.from_dict({"name": "Nowhere/Else", "source": "config"}) == UNKNOWN
    assert Zone.from_dict({}) == UNKNOWN


# -- windows with the zone unknown: a guess never silences an alert ----------------------------------------------


def test_with_the_zone_unknown_windows_slow_nothing_that_might_call() -> None:
    night_in_tokyo = NOW.replace(hour=15)  # 00:00 in Tokyo
    state = TaskState(snap(), progress_since=NOW)
    assert next_poll(state, night_in_tokyo, CADENCE, zone=TOKYO) == 300.0  # placed: asleep
    assert next_poll(state, night_in_tokyo, CADENCE, zone=None) == 30.0  # not placed: heard at the normal pace
    pending = TaskState(snap(status="pending"), progress_since=NOW)
    assert next_poll(pending, night_in_tokyo, CADENCE, zone=None) == 30.0
    ws = window_state(state.snapshot, night_in_tokyo, None)
    assert (ws.open, ws.placed) == (True, False)


def test_with_the_zone_unknown_a_start_date_not_yet_reached_anywhere_still_waits() -> None:
    later = snap(status="pending", start_date="2026-11-30")
    ws = window_state(later, NOW, None)
    assert not ws.open
    # The first moment it is 2026-11-30 09:00 anywhere: in UTC+14, i.e. 2026-11-29 19:00 UTC.
    assert ws.next_open == datetime(2026, 11, 29, 19, 0, tzinfo=UTC)
    assert next_poll(TaskState(later, progress_since=NOW), NOW, CADENCE, zone=None) == 300.0
    tomorrow = snap(status="pending", start_date="2026-11-24")
    assert window_state(tomorrow, NOW.replace(hour=20), None).open  # 10:00 on the 24th in UTC+14: it may call


def test_the_status_the_api_reports_wins_over_the_start_date() -> None:
    running_early = snap(status="running", start_date="2026-12-01")
    assert window_state(running_early, NOW, TOKYO).open  # it is calling: it has started, whatever the date says
    assert next_poll(TaskState(running_early, progress_since=NOW), NOW, CADENCE, zone=TOKYO) == 30.0
    assert not window_state(dataclasses.replace(running_early, status="pending"), NOW, TOKYO).open


def test_a_stall_with_the_zone_unknown_is_raised_and_says_the_windows_could_not_be_placed() -> None:
    night_in_tokyo = NOW.replace(hour=15)
    rules = Rules(stall_after=timedelta(minutes=15))
    previous = TaskState(snap(), progress_since=night_in_tokyo - timedelta(hours=1))
    _, placed = detect(previous, snap(), night_in_tokyo, rules, zone=Zone(TOKYO, Source.CONFIG))
    assert placed == []  # believed closed: no stall
    _, (stalled,) = detect(previous, snap(), night_in_tokyo, rules, zone=UNKNOWN)
    assert stalled.type == "voicefox.task.stalled"
    assert stalled.data["windows"] == {
        "zone": "unknown",
        "zoneSource": "unknown",
        "placed": False,
        "doubted": False,
        "fix": "watch.timezone",
    }


def test_a_stall_of_a_task_without_windows_says_nothing_of_zones() -> None:
    previous = TaskState(snap(windows=()), progress_since=NOW - timedelta(hours=1))
    _, (stalled,) = detect(previous, snap(windows=()), NOW, Rules(), zone=UNKNOWN)
    assert "windows" not in stalled.data


# -- evidence beats the model ------------------------------------------------------------------------------------

# The configured zone is wrong: New York, where 09:00-18:00 is 14:00-23:00 UTC; the campaign calls in Tokyo hours.
NEW_YORK = Zone(ZoneInfo("America/New_York"), Source.CONFIG)


@pytest.mark.parametrize(
    ("case", "before", "after", "looked", "evidence"),
    [
        ("progress moved, closed at both looks", snap(progress=10), snap(progress=12), timedelta(minutes=5), CALLING),
        (
            "the collection rate moved",
            snap(collection_rate=30),
            snap(collection_rate=31),
            timedelta(minutes=5),
            CALLING,
        ),
        # An operator may start or resume a campaign at any hour: it calls once its window opens.
        ("started running in a closed window", snap(status="pending"), snap(), timedelta(minutes=5), NONE),
        ("resumed in a closed window", snap(status="stop.operate"), snap(), timedelta(minutes=5), NONE),
        (
            "updatedAt moved while running",
            snap("2026-11-23 10:20:00"),
            snap("2026-11-23 10:29:00"),
            timedelta(minutes=5),
            Evidence.UPDATED,
        ),
        ("nothing moved", snap(), snap(), timedelta(minutes=5), NONE),
        ("stopped by an operator at night", snap(), snap(status="stop.operate"), timedelta(minutes=5), NONE),
        ("no earlier look (a restart)", snap(progress=10), snap(progress=12), None, NONE),
        # 13:30 UTC, before the (believed) 14:00 UTC opening; the look before, 22:00 UTC, in yesterday's window.
        (
            "the window was open at the previous look",
            snap(progress=10),
            snap(progress=12),
            timedelta(hours=15, minutes=30),
            NONE,
        ),
    ],
)
def test_what_contradicts_the_windows(
    case: str, before: TaskSnapshot, after: TaskSnapshot, looked: timedelta | None, evidence: Evidence
) -> None:
    now = NOW.replace(hour=13, minute=30) if "previous look" in case else NOW
    previous_look = now - looked if looked is not None else None
    assert contradicts(before, after, previous_look, now, NEW_YORK.tz) is evidence, case


def test_progress_just_after_a_window_closed_is_no_evidence_of_calling_outside_it() -> None:
    # New York's (believed) window closes at 23:00 UTC: the calls under way then end, and complete progress, after it.
    closed = NOW.replace(day=22, hour=23, minute=0)
    just_after = (closed + timedelta(minutes=2), closed + timedelta(minutes=7))
    assert contradicts(snap(progress=10), snap(progress=12), *just_after, NEW_YORK.tz) is NONE
    later = (closed + timedelta(minutes=15), closed + timedelta(minutes=20))
    assert contradicts(snap(progress=10), snap(progress=12), *later, NEW_YORK.tz) is CALLING


def test_no_contradiction_without_a_placed_schedule() -> None:
    looked = NOW - timedelta(minutes=5)
    assert contradicts(snap(progress=1), snap(progress=2), looked, NOW, None) is NONE
    assert contradicts(snap(progress=1, windows=()), snap(progress=2, windows=()), looked, NOW, NEW_YORK.tz) is NONE


def test_an_update_alone_counts_only_when_it_repeats_in_the_same_closed_stretch() -> None:
    """An operator editing a running campaign at night is no sign of calling; updates that keep coming are."""
    rules = Rules(stall_after=timedelta(minutes=15))
    looked = NOW - timedelta(minutes=5)
    state = TaskState(snap("2026-11-23 10:20:00"), progress_since=NOW - timedelta(hours=1))
    once, _ = detect(state, snap("2026-11-23 10:29:00"), NOW, rules, zone=NEW_YORK, previous_look=looked)
    assert (once.windows_doubted_at, once.updated_while_closed_at) == (None, NOW)
    assert next_poll(once, NOW, CADENCE, zone=NEW_YORK.tz) == 300.0  # still believed
    later = NOW + timedelta(minutes=5)
    twice, _ = detect(once, snap("2026-11-23 10:34:00"), later, rules, zone=NEW_YORK, previous_look=NOW)
    assert twice.windows_doubted_at == later
    assert next_poll(twice, later, CADENCE, zone=NEW_YORK.tz) == 30.0
    # An edit one night and another the next are two single edits, not calling.
    next_night = NOW + timedelta(days=1)
    apart, _ = detect(
        once,
        snap("2026-11-24 10:29:00"),
        next_night,
        rules,
        zone=NEW_YORK,
        previous_look=next_night - timedelta(minutes=5),
    )
    assert (apart.windows_doubted_at, apart.updated_while_closed_at) == (None, next_night)


def test_a_change_in_a_believed_closed_window_puts_the_task_on_the_normal_pace_and_the_stall_clock_on() -> None:
    rules = Rules(stall_after=timedelta(minutes=15))
    start = TaskState(snap(progress=10), progress_since=NOW - timedelta(hours=1))
    assert next_poll(start, NOW, CADENCE, zone=NEW_YORK.tz) == 300.0  # believed asleep
    state, events = detect(
        start, snap(progress=12), NOW, rules, zone=NEW_YORK, previous_look=NOW - timedelta(minutes=5)
    )
    assert state.windows_doubted_at == NOW
    assert [e.type for e in events] == []  # (12 % crosses no 10 % milestone)
    assert next_poll(state, NOW + timedelta(seconds=30), CADENCE, zone=NEW_YORK.tz) == 30.0
    # It stops moving: after stall_after it is called stalled although the model says its window is shut.
    later = NOW + timedelta(minutes=16)
    _, (stalled,) = detect(
        state, snap(progress=12), later, rules, zone=NEW_YORK, previous_look=later - timedelta(seconds=30)
    )
    assert stalled.data["windows"]["doubted"] is True
    assert stalled.data["stalledForSeconds"] == 16 * 60


def test_the_doubt_lasts_a_full_cycle_after_the_last_contradiction_then_the_windows_count_again() -> None:
    state = TaskState(snap(progress=12), progress_since=NOW, windows_doubted_at=NOW)
    still = NOW + DOUBT_FOR - timedelta(minutes=1)
    kept, _ = detect(
        state, snap(progress=12), still, Rules(), zone=NEW_YORK, previous_look=still - timedelta(seconds=30)
    )
    assert kept.windows_doubted_at == NOW
    over = NOW + DOUBT_FOR + timedelta(hours=1)  # 02:30 UTC: closed in New York
    cleared, _ = detect(
        state, snap(progress=12), over, Rules(), zone=NEW_YORK, previous_look=over - timedelta(seconds=30)
    )
    assert cleared.windows_doubted_at is None
    assert next_poll(cleared, over, CADENCE, zone=NEW_YORK.tz) == 300.0


def test_the_offsets_a_change_fits() -> None:
    # At 01:30 UTC a 09:00-18:00 window is open from UTC+8 (09:30) to UTC+14 (15:30), and from UTC-12 (13:30 the day
    # before) to UTC-8 (17:30); at UTC-7 it is 18:30: closed.
    fits = offsets_open(snap(), NOW)
    assert fits == frozenset({8, 9, 10, 11, 12, 13, 14, -12, -11, -10, -9, -8})


@pytest.mark.parametrize("windows", [(("02:30", "05:00"),), (("00:00", "02:30"),), (("01:30", "01:45"),)])
@pytest.mark.parametrize("day", ["2026-03-08", "2026-11-01"])  # New York springs forward, then falls back
def test_the_remembered_answer_is_the_fresh_one_across_a_dst_jump(
    windows: tuple[tuple[str, str], ...], day: str
) -> None:
    from watcher import schedule

    ny = ZoneInfo("America/New_York")
    task = snap(windows=windows)
    start = datetime.fromisoformat(f"{day}T05:00:00+00:00")  # midnight or 01:00 in New York
    schedule._memo.clear()
    for minute in range(0, 6 * 60, 7):
        when = start + timedelta(minutes=minute)
        remembered = window_state(task, when, ny)
        kept = dict(schedule._memo)
        schedule._memo.clear()
        assert window_state(task, when, ny) == remembered, when
        schedule._memo.update(kept)

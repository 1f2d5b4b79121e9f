"""Quiet hours: parsing, quiet_at, ends_after, quiet_between and describe, with explicit instants (no clock)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from watcher.quiet import EMPTY, QuietHours

# 2024-05-06 is a Monday: the week of 6-12 May 2024 has no DST change in any zone used below.
NIGHTS = [{"days": "mon-fri", "from": "20:00", "to": "08:00"}]
WEEKEND = [{"days": "sat-sun"}]
SAT_NIGHT = [{"days": "sat", "from": "20:00", "to": "08:00"}]
# Windows with a boundary near 02:00-03:00 on Sundays, the hour DST skips or repeats in Europe and North America.
SUN_0230_0500 = [{"days": "sun", "from": "02:30", "to": "05:00"}]
SUN_0100_0230 = [{"days": "sun", "from": "01:00", "to": "02:30"}]
SUN_0230_0400 = [{"days": "sun", "from": "02:30", "to": "04:00"}]
SUN_TO_0230 = [{"days": "sun", "to": "02:30"}]
SUN_0200_0300 = [{"days": "sun", "from": "02:00", "to": "03:00"}]
SAT_2200_0600 = [{"days": "sat", "from": "22:00", "to": "06:00"}]


def at(text: str, zone: str = "Asia/Tokyo") -> datetime:
    """An aware instant from a wall time in `zone` (not used for wall times a DST change skips or repeats)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def utc(text: str) -> datetime:
    """An instant from its UTC text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("entries", "zone", "when", "expected"),
    [
        # mon-fri 20:00-08:00: `from` inclusive, `to` exclusive, crossing midnight.
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 19:59:59"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 20:00"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 23:59"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 00:00"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 07:59:59.999999"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 08:00"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 12:00"), False),
        # Monday morning belongs to Sunday's window, and Sunday is not listed; Saturday morning belongs to Friday's.
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 00:00"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 07:00"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-11 07:59"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-11 08:00"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-11 20:00"), False),
        (NIGHTS, "Asia/Tokyo", at("2024-05-12 23:00"), False),
        # Written in Tokyo, asked in UTC and in Berlin: Monday 20:00 JST is 11:00 UTC and 13:00 CEST.
        (NIGHTS, "Asia/Tokyo", utc("2024-05-06 10:59"), False),
        (NIGHTS, "Asia/Tokyo", utc("2024-05-06 11:00"), True),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 13:00", "Europe/Berlin"), True),
        (NIGHTS, "Asia/Tokyo", utc("2024-05-06 22:59"), True),
        (NIGHTS, "Asia/Tokyo", utc("2024-05-06 23:00"), False),
        # Sunday 20:00 UTC is already Monday 05:00 in Tokyo: not quiet there, though it would be a weeknight in UTC.
        (NIGHTS, "UTC", utc("2024-05-12 20:00"), False),
        (NIGHTS, "Asia/Tokyo", utc("2024-05-12 20:00"), False),
        # fri-mon wraps around the week.
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-10 00:00"), True),
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-12 12:00"), True),
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-06 23:59"), True),
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-07 00:00"), False),
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-08 12:00"), False),
        ([{"days": "fri-mon"}], "UTC", utc("2024-05-09 23:59"), False),
        # Listed days, full names in any case, and omitted `from` or `to`.
        ([{"days": "mon,wed,fri", "from": "9:00", "to": "17:30"}], "UTC", utc("2024-05-08 08:59"), False),
        ([{"days": "mon,wed,fri", "from": "9:00", "to": "17:30"}], "UTC", utc("2024-05-08 09:00"), True),
        ([{"days": "mon,wed,fri", "from": "9:00", "to": "17:30"}], "UTC", utc("2024-05-08 17:29"), True),
        ([{"days": "mon,wed,fri", "from": "9:00", "to": "17:30"}], "UTC", utc("2024-05-08 17:30"), False),
        ([{"days": "mon,wed,fri", "from": "9:00", "to": "17:30"}], "UTC", utc("2024-05-07 12:00"), False),
        ([{"days": "Monday-WEDNESDAY"}], "UTC", utc("2024-05-08 12:00"), True),
        ([{"days": "Monday-WEDNESDAY"}], "UTC", utc("2024-05-09 12:00"), False),
        ([{"days": "mon-fri,sun"}], "UTC", utc("2024-05-12 12:00"), True),
        ([{"days": "mon-fri,sun"}], "UTC", utc("2024-05-11 12:00"), False),
        ([{"days": "sun", "to": "07:00"}], "UTC", utc("2024-05-12 06:59"), True),
        ([{"days": "sun", "to": "07:00"}], "UTC", utc("2024-05-12 07:00"), False),
        ([{"days": "sat", "from": "22:00"}], "UTC", utc("2024-05-11 23:59:59"), True),
        ([{"days": "sat", "from": "22:00"}], "UTC", utc("2024-05-12 00:00"), False),
        ([{"days": "sat", "from": "22:00", "to": "00:00"}], "UTC", utc("2024-05-11 23:59"), True),
        ([{"days": "sat", "from": "22:00", "to": "00:00"}], "UTC", utc("2024-05-12 00:00"), False),
        ([{"from": "12:00", "to": "13:00"}], "UTC", utc("2024-05-09 12:30"), True),
        # DST: a start in the spring gap (Berlin skips 02:00-03:00 on 31 March 2024) falls at 03:00 CEST = 01:00 UTC.
        (SUN_0230_0500, "Europe/Berlin", utc("2024-03-31 00:59:59"), False),
        (SUN_0230_0500, "Europe/Berlin", utc("2024-03-31 01:00"), True),
        (SUN_0230_0500, "Europe/Berlin", utc("2024-04-07 00:29"), False),
        (SUN_0230_0500, "Europe/Berlin", utc("2024-04-07 00:30"), True),
        # An ambiguous start (Berlin repeats 02:00-03:00 on 27 October 2024) is the first 02:30, CEST = 00:30 UTC.
        (SUN_0230_0400, "Europe/Berlin", utc("2024-10-27 00:29"), False),
        (SUN_0230_0400, "Europe/Berlin", utc("2024-10-27 00:30"), True),
        # An ambiguous end is the first 02:30 too: the second 02:00-02:30 (CET, 01:00-01:30 UTC) is not quiet.
        (SUN_TO_0230, "Europe/Berlin", utc("2024-10-27 00:29"), True),
        (SUN_TO_0230, "Europe/Berlin", utc("2024-10-27 00:30"), False),
        (SUN_TO_0230, "Europe/Berlin", utc("2024-10-27 01:15"), False),
        # A window wholly inside the gap does not happen that day (New York skips 02:00-03:00 on 10 March 2024).
        (SUN_0200_0300, "America/New_York", utc("2024-03-10 07:00"), False),
        (SUN_0200_0300, "America/New_York", utc("2024-03-10 06:59"), False),
        (SUN_0200_0300, "America/New_York", utc("2024-03-17 06:30"), True),
    ],
)
def test_quiet_at(entries: list[dict[str, Any]], zone: str, when: datetime, expected: bool) -> None:
    assert QuietHours.parse(entries, zone).quiet_at(when) is expected


@pytest.mark.parametrize(
    ("entries", "zone", "when", "expected"),
    [
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 21:00"), utc("2024-05-06 23:00")),  # Tue 08:00 JST
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 20:00"), utc("2024-05-06 23:00")),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 07:59"), utc("2024-05-06 23:00")),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 08:00"), None),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 12:00"), None),
        # Fri 20:00 -> Sat 08:00 merges with the whole weekend, which ends Monday 00:00 (Sunday's night is not listed).
        (NIGHTS + WEEKEND, "Asia/Tokyo", at("2024-05-10 21:00"), at("2024-05-13 00:00")),
        (NIGHTS + WEEKEND, "Asia/Tokyo", at("2024-05-11 12:00"), at("2024-05-13 00:00")),
        # ...or later when another window continues it, and on to where that one overlaps a third.
        (
            [*NIGHTS, *WEEKEND, {"days": "mon", "to": "09:00"}],
            "Asia/Tokyo",
            at("2024-05-10 21:00"),
            at("2024-05-13 09:00"),
        ),
        (
            [*NIGHTS, *WEEKEND, {"days": "mon", "to": "09:00"}, {"days": "mon", "from": "08:30", "to": "10:00"}],
            "Asia/Tokyo",
            at("2024-05-10 21:00"),
            at("2024-05-13 10:00"),
        ),
        # Windows that touch merge; a one-minute break does not.
        (
            [{"days": "mon", "from": "08:00", "to": "12:00"}, {"days": "mon", "from": "12:00", "to": "13:00"}],
            "UTC",
            utc("2024-05-06 09:00"),
            utc("2024-05-06 13:00"),
        ),
        (
            [{"days": "mon", "from": "08:00", "to": "12:00"}, {"days": "mon", "from": "12:01", "to": "13:00"}],
            "UTC",
            utc("2024-05-06 09:00"),
            utc("2024-05-06 12:00"),
        ),
        # Berlin, fall back on Sunday 27 October 2024: 20:00 CEST -> 08:00 CET is 13 real hours, ending 07:00 UTC.
        (SAT_NIGHT, "Europe/Berlin", utc("2024-10-26 19:00"), utc("2024-10-27 07:00")),
        # Berlin, spring forward on Sunday 31 March 2024: 20:00 CET -> 08:00 CEST is 11 hours, ending 06:00 UTC.
        (SAT_NIGHT, "Europe/Berlin", utc("2024-03-30 20:00"), utc("2024-03-31 06:00")),
        # Boundaries in the gap: a start at 02:30 is 03:00 CEST; an end at 02:30 is 03:00 CEST as well.
        (SUN_0230_0500, "Europe/Berlin", utc("2024-03-31 01:00"), utc("2024-03-31 03:00")),
        (SUN_0100_0230, "Europe/Berlin", utc("2024-03-31 00:30"), utc("2024-03-31 01:00")),
        # Boundaries in the repeated hour: the first 02:30 (CEST, 00:30 UTC); 04:00 CET is 03:00 UTC.
        (SUN_0230_0400, "Europe/Berlin", utc("2024-10-27 00:30"), utc("2024-10-27 03:00")),
        (SUN_TO_0230, "Europe/Berlin", utc("2024-10-27 00:00"), utc("2024-10-27 00:30")),
        # New York, spring forward on Sunday 10 March 2024: 22:00 EST -> 06:00 EDT is 7 hours.
        (SAT_2200_0600, "America/New_York", utc("2024-03-10 04:00"), utc("2024-03-10 10:00")),
        # New York, fall back on Sunday 3 November 2024: 22:00 EDT -> 06:00 EST is 9 hours.
        (SAT_2200_0600, "America/New_York", utc("2024-11-03 03:00"), utc("2024-11-03 11:00")),
        # An end at 02:30 on the spring-forward night in New York is 03:00 EDT, 07:00 UTC.
        (SUN_TO_0230, "America/New_York", utc("2024-03-10 06:00"), utc("2024-03-10 07:00")),
    ],
)
def test_ends_after(entries: list[dict[str, Any]], zone: str, when: datetime, expected: datetime | None) -> None:
    ends = QuietHours.parse(entries, zone).ends_after(when)
    assert ends == expected
    if ends is not None:
        assert ends.tzinfo is UTC


@pytest.mark.parametrize(
    ("entries", "zone", "start", "end", "expected"),
    [
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 00:00"), at("2024-05-13 00:00"), timedelta(hours=60)),
        (NIGHTS + WEEKEND, "Asia/Tokyo", at("2024-05-06 00:00"), at("2024-05-13 00:00"), timedelta(hours=100)),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 22:00"), at("2024-05-07 01:00"), timedelta(hours=3)),
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 22:00"), at("2024-05-06 22:00"), timedelta(0)),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 01:00"), at("2024-05-06 22:00"), timedelta(0)),
        (NIGHTS, "Asia/Tokyo", at("2024-05-07 08:00"), at("2024-05-07 20:00"), timedelta(0)),
        # The same span asked in UTC: Mon 11:00 UTC is 20:00 JST.
        (NIGHTS, "Asia/Tokyo", utc("2024-05-06 10:00"), utc("2024-05-06 12:30"), timedelta(hours=1.5)),
        # Overlapping windows count once.
        (
            [{"days": "mon", "from": "08:00", "to": "12:00"}, {"days": "mon", "from": "10:00", "to": "14:00"}],
            "UTC",
            utc("2024-05-06 00:00"),
            utc("2024-05-07 00:00"),
            timedelta(hours=6),
        ),
        (
            [{"days": "mon", "from": "08:00", "to": "14:00"}, {"days": "mon", "from": "10:00", "to": "12:00"}],
            "UTC",
            utc("2024-05-06 00:00"),
            utc("2024-05-07 00:00"),
            timedelta(hours=6),
        ),
        # DST nights last their wall-clock span.
        (SAT_NIGHT, "Europe/Berlin", utc("2024-10-26 12:00"), utc("2024-10-27 12:00"), timedelta(hours=13)),
        (SAT_NIGHT, "Europe/Berlin", utc("2024-03-30 12:00"), utc("2024-03-31 12:00"), timedelta(hours=11)),
        (SUN_0230_0400, "Europe/Berlin", utc("2024-10-26"), utc("2024-10-28"), timedelta(hours=2.5)),
        (SUN_0200_0300, "America/New_York", utc("2024-03-09"), utc("2024-03-12"), timedelta(0)),
        # Long ranges: four weeks of nights.
        (NIGHTS, "Asia/Tokyo", at("2024-05-06 00:00"), at("2024-06-03 00:00"), timedelta(hours=240)),
        ([], "UTC", utc("2024-05-06"), utc("2024-05-13"), timedelta(0)),
    ],
)
def test_quiet_between(
    entries: list[dict[str, Any]], zone: str, start: datetime, end: datetime, expected: timedelta
) -> None:
    assert QuietHours.parse(entries, zone).quiet_between(start, end) == expected


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"from": "25:00"}], 'quiet[0].from: "25:00" is not a time of day (write "HH:MM")'),
        ([{}, {"days": "sat", "from": "25:00"}], 'quiet[1].from: "25:00" is not a time of day (write "HH:MM")'),
        ([{"days": "sat", "from": "8"}], 'quiet[0].from: "8" is not a time of day'),
        ([{"days": "sat", "from": "08:60"}], 'quiet[0].from: "08:60" is not a time of day'),
        ([{"days": "sat", "from": "8:0"}], 'quiet[0].from: "8:0" is not a time of day'),
        ([{"days": "sat", "from": "08:00:60"}], 'quiet[0].from: "08:00:60" is not a time of day'),
        ([{"days": "sat", "from": "８"}], 'quiet[0].from: "８" is not a time of day'),
        ([{"days": "sat", "from": 800}], "quiet[0].from: 800 is not a time of day"),
        ([{"days": "sat", "from": "24:00"}], 'quiet[0].from: "24:00" is the end of a day'),
        ([{"days": "sat", "to": "24:01"}], 'quiet[0].to: "24:01" is not a time of day'),
        ([{"days": "sat", "to": time(8, 0, 30, 5)}], "quiet[0].to: datetime.time(8, 0, 30, 5) is not a time of day"),
        ([{"days": "sat", "from": "08:00", "to": "08:00"}], 'quiet[0]: from and to are both "08:00"'),
        ([{"days": "sat", "to": "00:00"}], 'quiet[0]: from and to are both "00:00"'),
        ([{"days": "sat", "form": "20:00"}], 'quiet[0]: unknown key "form" (known: days, from, to)'),
        ([{"day": "sat", "until": "x"}], 'quiet[0]: unknown keys "day", "until" (known: days, from, to)'),
        ([{"days": "mon-fry"}], 'quiet[0].days: "mon-fry": "fry" is not a day (write e.g. "mon-fri"'),
        ([{"days": "mon--fri"}], 'quiet[0].days: "mon--fri": a day is missing'),
        ([{"days": "mon,"}], 'quiet[0].days: "mon,": a day is missing'),
        ([{"days": "mon-wed-fri"}], 'quiet[0].days: "mon-wed-fri": "mon-wed-fri" is not a range of days'),
        ([{"days": ""}], 'quiet[0].days: "" is not a list of days'),
        ([{"days": ["mon"]}], "quiet[0].days: ['mon'] is not a list of days"),
        (["mon-fri 20:00-08:00"], "quiet[0]: expected a table such as"),
        ({"days": "mon"}, "quiet: expected a list of windows"),
        ("mon-fri", "quiet: expected a list of windows"),
        # Always quiet: refused rather than holding everything for ever.
        (
            [{}],
            "quiet: quiet hours cover the whole week: nothing would ever be delivered (use urgent or remove a window)",
        ),
        ([{"from": "00:00", "to": "24:00"}], "cover the whole week"),
        ([{"from": "12:00", "to": "12:01"}, {"from": "12:01", "to": "12:00"}], "cover the whole week"),
        ([{"days": "fri-mon"}, {"days": "tue-thu"}], "cover the whole week"),
        (  # Sunday's window runs into Monday, and Monday's fills the rest
            [{"days": "tue-sun"}, {"days": "sun", "from": "12:00", "to": "11:59"}, {"days": "mon", "from": "11:59"}],
            "cover the whole week",
        ),
    ],
)
def test_parse_refuses(entries: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        QuietHours.parse(entries, "Europe/Berlin")


def test_parse_names_the_key_it_is_given() -> None:
    with pytest.raises(ValueError, match=re.escape('notifiers[2].quiet[0].to: "x" is not a time of day')):
        QuietHours.parse([{"to": "x"}], "UTC", key="notifiers[2].quiet")


@pytest.mark.parametrize("zone", ["Mars/Base", "America", "", "/etc/localtime", "asia/tokyo"])
def test_parse_refuses_an_unknown_zone(zone: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{json.dumps(zone)} is not a time zone")):
        QuietHours.parse([], zone)


def test_almost_the_whole_week_is_accepted() -> None:
    hours = QuietHours.parse([{"from": "00:01", "to": "24:00"}, {"days": "mon-sat", "to": "00:01"}], "UTC")
    assert hours.quiet_at(utc("2024-05-12 23:59"))
    assert not hours.quiet_at(utc("2024-05-12 00:00"))
    assert hours.ends_after(utc("2024-05-06 00:00")) == utc("2024-05-12 00:00")


def test_a_toml_local_time_is_a_time_of_day() -> None:
    assert QuietHours.parse([{"from": time(20, 0), "to": time(8, 0)}], "UTC") == QuietHours.parse(
        [{"from": "20:00", "to": "08:00"}], "UTC"
    )


@pytest.mark.parametrize(
    ("entries", "zone", "text"),
    [
        (NIGHTS + WEEKEND, "Asia/Tokyo", "mon-fri 20:00–08:00, sat-sun all day (Asia/Tokyo)"),
        ([{"days": "fri-mon", "from": "9:00", "to": "17:00"}], "UTC", "fri-mon 09:00–17:00 (UTC)"),
        ([{"days": "mon,wed,friday", "from": "22:00"}], "UTC", "mon,wed,fri 22:00–24:00 (UTC)"),
        ([{"days": "sat", "from": "22:00", "to": "00:00"}], "UTC", "sat 22:00–24:00 (UTC)"),
        ([{"from": "20:00", "to": "08:00"}], "Europe/Berlin", "daily 20:00–08:00 (Europe/Berlin)"),
        ([{"days": "sun,sat", "to": "09:00"}], "UTC", "sat-sun 00:00–09:00 (UTC)"),
    ],
)
def test_describe(entries: list[dict[str, Any]], zone: str, text: str) -> None:
    assert QuietHours.parse(entries, zone).describe() == text


def test_empty_is_never_quiet() -> None:
    when = utc("2024-05-06 12:00")
    assert not EMPTY.quiet_at(when)
    assert EMPTY.ends_after(when) is None
    assert EMPTY.quiet_between(when, when + timedelta(days=30)) == timedelta(0)
    assert EMPTY.describe() == "none"
    assert QuietHours.parse([], "UTC") == EMPTY


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.quiet_at(datetime(2024, 5, 6, 12)),
        lambda q: q.ends_after(datetime(2024, 5, 6, 12)),
        lambda q: q.quiet_between(datetime(2024, 5, 6, 12), utc("2024-05-07 12:00")),
        lambda q: q.quiet_between(utc("2024-05-06 12:00"), datetime(2024, 5, 7, 12)),
    ],
)
def test_a_naive_datetime_is_refused(call: Any) -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        call(QuietHours.parse(NIGHTS, "Asia/Tokyo"))


# Zones with DST at 02:00 (Berlin, New York), a 30-minute DST (Lord Howe), DST at midnight (São Paulo until 2019),
# a skipped day (Apia, 30 December 2011) and none (Tokyo).
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Apia", "Asia/Tokyo"]
TRANSITIONS = [
    utc("2024-03-31 01:00"),
    utc("2024-10-27 01:00"),
    utc("2024-03-10 07:00"),
    utc("2024-11-03 06:00"),
    utc("2024-04-06 15:00"),
    utc("2024-10-05 15:30"),
    utc("2018-11-04 03:00"),
    utc("2019-02-17 02:00"),
    utc("2011-12-30 10:00"),
]
_clocks = st.sampled_from(["00:00", "01:30", "02:00", "02:30", "03:00", "08:00", "20:00", "23:30"]) | st.builds(
    "{}:{:02d}".format, st.integers(0, 23), st.integers(0, 59)
)
_day_lists = st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, max_size=3)
_entries = st.fixed_dictionaries(
    {},
    optional={
        "days": _day_lists.map(",".join) | st.sampled_from(["mon-fri", "sat-sun", "fri-mon", "sun"]),
        "from": _clocks,
        "to": _clocks | st.just("24:00"),
    },
)
_instants = st.datetimes(datetime(2010, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)) | st.builds(
    lambda base, seconds: base + timedelta(seconds=seconds),
    st.sampled_from(TRANSITIONS),
    st.integers(-3 * 86400, 3 * 86400),
)


def _parsed(entries: list[dict[str, str]], zone: str) -> QuietHours:
    try:
        return QuietHours.parse(entries, zone)
    except ValueError:
        reject()  # always quiet, or from == to: not quiet hours


@settings(max_examples=300, deadline=None)
@given(st.lists(_entries, min_size=1, max_size=3), st.sampled_from(ZONES), _instants)
def test_ends_after_agrees_with_quiet_at(entries: list[dict[str, str]], zone: str, when: datetime) -> None:
    """Quiet iff there is an end; the end is later, not quiet, and the whole stretch up to it is quiet."""
    hours = _parsed(entries, zone)
    ends = hours.ends_after(when)
    assert hours.quiet_at(when) is (ends is not None)
    assert (hours.quiet_between(when, when + timedelta(microseconds=1)) > timedelta(0)) is (ends is not None)
    if ends is not None:
        assert ends > when
        assert not hours.quiet_at(ends)
        assert hours.quiet_between(when, ends) == ends - when


def test_full_width_times_read_as_ascii() -> None:
    assert QuietHours.parse([{"from": "２０：００", "to": " 8:00 "}], "UTC") == QuietHours.parse(
        [{"from": "20:00", "to": "08:00"}], "UTC"
    )


def test_windows_may_be_written_to_the_second() -> None:
    """Seconds are allowed ("HH:MM:SS", or a TOML local time): end-to-end tests compress a night into seconds."""
    quiet = QuietHours.parse([{"from": "20:00:15", "to": time(20, 0, 45)}], "UTC")
    assert not quiet.quiet_at(utc("2024-05-06 20:00") + timedelta(seconds=14))
    assert quiet.quiet_at(utc("2024-05-06 20:00") + timedelta(seconds=15))
    assert quiet.ends_after(utc("2024-05-06 20:00") + timedelta(seconds=30)) == utc("2024-05-06 20:00") + timedelta(
        seconds=45
    )
    assert quiet.describe() == "daily 20:00:15–20:00:45 (UTC)"

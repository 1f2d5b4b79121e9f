"""Calling schedules read as people write them: each value understood, or dropped whole with the problem named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.model import parse_schedule, parse_task_body
from watcher.schedule import clock_seconds

NINE_TO_SIX = (("09:00", "18:00"),)


@pytest.mark.parametrize(
    ("start_time", "windows"),
    [
        ([["09:00", "12:00"], ["14:00", "18:00"]], (("09:00", "12:00"), ("14:00", "18:00"))),
        ([["9:00", "18:00"]], NINE_TO_SIX),  # no leading zero
        ([["09:00:00", "12:00:00"]], (("09:00", "12:00"),)),  # with seconds
        ([["09:00:30", "12:00:00"]], (("09:00:30", "12:00"),)),  # seconds kept when they say something
        ([["18:00", "24:00"]], (("18:00", "24:00"),)),  # the end of the day
        ([["22:00", "02:00"]], (("22:00", "02:00"),)),  # across midnight
        ([["00:00", "00:00"]], (("00:00", "00:00"),)),  # the whole day
        (["09:00", "18:00"], NINE_TO_SIX),  # a single pair, not nested
        ("09:00-18:00", NINE_TO_SIX),  # one string
        ("09:00-12:00, 14:00-18:00", (("09:00", "12:00"), ("14:00", "18:00"))),
        (["09:00~12:00", "14:00〜18:00"], (("09:00", "12:00"), ("14:00", "18:00"))),
        ([["09:00-18:00"]], NINE_TO_SIX),  # a range inside a one-element list
        ([["０９：００", "１８：００"]], NINE_TO_SIX),  # full-width digits and colons
        ([], ()),  # no windows: any time
        (None, ()),
    ],
)
def test_windows_as_people_write_them_are_understood(start_time: Any, windows: tuple[tuple[str, str], ...]) -> None:
    schedule = parse_schedule({"startDate": "2026-11-01", "startTime": start_time})
    assert schedule.windows == windows
    assert schedule.problems == ()


@pytest.mark.parametrize(
    "start_time",
    [
        [["09:00", "12:00"], ["x", "y"]],  # one bad window: not the others alone (that would close it silently)
        [["09:00", "25:00"]],
        [["09:60", "12:00"]],
        [["24:00", "06:00"]],  # 24:00 only ends a day
        [["24:30", "06:00"]],
        [["09:00"]],
        [["09:00", "12:00", "15:00"]],
        [[9, 12]],
        "all day",
        {"from": "09:00", "to": "18:00"},
        42,
        [None],
        [["09:00", "12:00"]] * 200,
    ],
)
def test_unreadable_windows_mean_any_time_with_the_problem_named(start_time: Any) -> None:
    schedule = parse_schedule({"startDate": "2026-11-01", "startTime": start_time})
    assert schedule.windows == ()
    assert schedule.start_date == "2026-11-01"
    (problem,) = schedule.problems
    assert problem.startswith("option.startTime")
    assert "any time" in problem


@pytest.mark.parametrize(
    ("start_date", "read", "problem"),
    [
        ("2026-11-01", "2026-11-01", False),
        ("2026-11-01 00:00:00", "2026-11-01", False),
        ("2026-11-01T00:00:00+09:00", "2026-11-01", False),
        ("2026/11/1", "2026-11-01", False),
        ("２０２６-１１-０１", "2026-11-01", False),
        ("", "", False),
        (None, "", False),
        ("tomorrow", "", True),
        ("2026-02-30", "", True),
        (20261101, "", True),
    ],
)
def test_start_dates(start_date: Any, read: str, problem: bool) -> None:
    schedule = parse_schedule({"startDate": start_date, "startTime": [["09:00", "18:00"]]})
    assert schedule.start_date == read
    assert bool(schedule.problems) is problem
    assert schedule.windows == NINE_TO_SIX


def test_a_task_body_keeps_the_problem_for_the_log_but_not_in_what_it_stores() -> None:
    body = {"id": 7, "status": "running", "option": {"startTime": [["9am", "5pm"]], "numbers": [819012345678]}}
    snapshot = parse_task_body(json.dumps(body), 7)
    assert snapshot.windows == ()
    assert snapshot.schedule_problems == (
        'option.startTime has an unreadable window ["9am", "5pm"]: calls are taken as possible at any time of day',
    )
    assert "819012345678" not in repr(snapshot.schedule_problems)
    assert "problem" not in json.dumps(snapshot.to_dict())


_times = st.one_of(
    st.from_regex(r"\A([01]?\d|2[0-4]):[0-5]\d(:[0-5]\d)?\Z"),
    st.text(max_size=8),
    st.integers(-5, 30),
    st.none(),
)
_windows = st.one_of(
    st.lists(st.lists(_times, min_size=0, max_size=3), max_size=6),
    st.lists(_times, max_size=4),
    st.text(max_size=30),
    st.none(),
    st.integers(),
    st.dictionaries(st.text(max_size=5), _times, max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    option=st.one_of(
        st.none(),
        st.integers(),
        st.fixed_dictionaries(
            {}, optional={"startTime": _windows, "startDate": st.one_of(st.text(max_size=20), st.none(), st.integers())}
        ),
    )
)
def test_any_option_is_either_understood_or_any_time_never_an_exception(option: Any) -> None:
    schedule = parse_schedule(option)
    for start, end in schedule.windows:
        assert 0 <= clock_seconds(start) < 86400
        assert 0 <= clock_seconds(end) <= 86400
    raw = option.get("startTime") if isinstance(option, dict) else None
    if schedule.problems and raw not in (None, [], ""):
        # Whatever could not be read left no partial schedule behind: a partial one could close an open window.
        assert schedule.windows == () or all("startTime" not in p for p in schedule.problems)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 24), st.integers(0, 59)),
        min_size=1,
        max_size=8,
    )
)
def test_every_well_formed_schedule_is_read_whole(pairs: list[tuple[int, int, int, int]]) -> None:
    start_time = [[f"{a}:{b:02d}", f"{c:02d}:{d if c < 24 else 0:02d}"] for a, b, c, d in pairs]
    schedule = parse_schedule({"startTime": start_time})
    assert schedule.problems == ()
    assert len(schedule.windows) == len(pairs)
    for (start, end), (a, b, c, d) in zip(schedule.windows, pairs, strict=True):
        assert clock_seconds(start) == a * 3600 + b * 60
        assert clock_seconds(end) == c * 3600 + (d if c < 24 else 0) * 60

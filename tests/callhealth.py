"""Call health states for the tests of what shows and keeps it: built from a few calls, or set down figure by figure."""

from __future__ import annotations

from datetime import datetime, timedelta

from watcher.calllog import CallRecord
from watcher.health import AnswerRateDropped, CallHealth, HealthRules, observe


def looked(now: datetime, answered: list[bool], gap: timedelta = timedelta(seconds=30)) -> CallHealth:
    """One look at these calls, 20 s each, the last started `gap` before `now` (as the daemon would keep it)."""
    start = now - gap * len(answered)
    calls = [
        CallRecord(1, begin, a, begin + timedelta(seconds=20), 20)
        for i, a in enumerate(answered)
        for begin in [start + gap * i]
    ]
    health, _ = observe(None, calls, now, HealthRules())
    return health


def steady(now: datetime) -> CallHealth:
    """A campaign answering 40 %: 120 calls in the last hour, 48 answered."""
    minute = int(now.timestamp()) // 60 * 60
    return CallHealth(
        first_look=now - timedelta(hours=3),
        last_look=now,
        last_start=now - timedelta(seconds=30),
        window=(True,) * 40 + (False,) * 60,
        baseline_calls=700,
        baseline_answered=280,
        hourly=((minute - 600, 120, 48),),
        calls=800,
        answered=320,
    )


def collapsed(now: datetime) -> CallHealth:
    """A campaign whose answered share fell from 40 % to 4 % ten minutes ago (3 % over its latest 100 calls): 312
    calls in the last hour, 41 answered (and 50 more before that hour)."""
    minute = int(now.timestamp()) // 60 * 60
    return CallHealth(
        first_look=now - timedelta(hours=3),
        last_look=now,
        last_start=now - timedelta(seconds=30),
        window=(True,) * 3 + (False,) * 97,
        baseline_calls=400,
        baseline_answered=160,
        episode=AnswerRateDropped(now - timedelta(minutes=10), before=0.4, after=0.04, calls=100, baseline_calls=400),
        hourly=((minute - 3660, 50, 20), (minute - 1800, 212, 38), (minute - 60, 100, 3)),
        calls=500,
        answered=163,
    )

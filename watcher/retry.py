"""Every backoff number in one place: retry policy is data, declared once."""

from __future__ import annotations

import dataclasses
import random

import tenacity

from .errors import RateLimited, TransientApiError


@dataclasses.dataclass(frozen=True, slots=True)
class ApiRetry:
    """Retries of one API request inside one poll; beyond them the poll fails and the next one is scheduled."""

    attempts: int = 3
    initial: float = 0.5
    maximum: float = 5.0
    jitter: float = 0.5
    budget: float = 20.0  # no new attempt once this long has passed since the first one started

    def tenacity_kwargs(self, spent: float = 0.0) -> dict[str, object]:
        """The tenacity arguments for this policy, `spent` seconds into the budget (sleep is the caller's seam)."""
        return {
            "stop": tenacity.stop_after_attempt(self.attempts)
            | tenacity.stop_after_delay(max(0.0, self.budget - spent)),
            # = wait_exponential_jitter, spelt in parts that mean the same in every tenacity 8.x/9.x.
            "wait": tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
            + tenacity.wait_random(0, self.jitter),
            # A 429 is not retried here: the daemon pauses every poll for Retry-After instead.
            "retry": tenacity.retry_if_exception(
                lambda e: isinstance(e, TransientApiError) and not isinstance(e, RateLimited)
            ),
            "reraise": True,
        }


API_RETRY = ApiRetry()

# 401/403: the token is wrong for every task at once; ask again slowly rather than hammer the API:
# 30 s after the first refusal, doubling up to 5 min while it goes on.
AUTH_BACKOFF_INITIAL = 30.0
AUTH_BACKOFF_MAX = 300.0
# 429 without Retry-After: pause all polls this long (doubling, capped) before asking again.
RATE_LIMIT_DEFAULT = 5.0
RATE_LIMIT_MAX = 300.0
# Consecutive failed polls of one task back off from the interval up to this many intervals.
POLL_FAILURE_MAX_INTERVALS = 8

# Deliveries: 1 s, 2 s, 4 s ... capped by [delivery] backoff_max, each with up to 20% jitter.
DELIVERY_INITIAL = 1.0
DELIVERY_JITTER = 0.2


# Idle delivery workers look at the outbox again this often even unprompted (rows requeued by `watcher outbox`).
IDLE_RECHECK = 60.0
# After a failed read or write of the state database, wait this long before trying again.
STORE_RETRY = 5.0
# Exponents are capped before they are raised: 2.0 ** 1025 overflows a float, and no backoff needs more than 2 ** 30.
_MAX_EXPONENT = 30


def _doubling(n: int) -> float:
    return 2.0 ** min(_MAX_EXPONENT, max(0, n - 1))


def delivery_delay(
    attempts: int, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait before delivery attempt number `attempts + 1`; honours a receiver's Retry-After."""
    base = min(cap, DELIVERY_INITIAL * _doubling(attempts))
    delay = base * (1 + DELIVERY_JITTER * (rng or random).random())
    delay = min(delay, cap)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def auth_pause(refusals: int) -> float:
    """Seconds every poll waits after the `refusals`-th 401/403 in a row."""
    return min(AUTH_BACKOFF_MAX, AUTH_BACKOFF_INITIAL * _doubling(refusals))


def rate_limit_pause(retry_after: float | None, in_a_row: int) -> float:
    """Seconds every poll waits after a 429: Retry-After if given (capped at an hour), else doubling from 5 s."""
    if retry_after is not None:
        return min(retry_after, 3600.0)
    return min(RATE_LIMIT_MAX, RATE_LIMIT_DEFAULT * _doubling(in_a_row))


def poll_failure_delay(interval: float, failures: int) -> float:
    """Seconds until the next poll of a task whose last `failures` polls failed."""
    return interval * min(POLL_FAILURE_MAX_INTERVALS, _doubling(failures))

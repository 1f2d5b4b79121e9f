"""How fast the watcher may ask the API: a pause every poll honours (429, refused token) and an AIMD rate limit.

The rate limit is shared by all polls (`api.max_rps`, 0 = none until the API objects). A 429 halves it
(multiplicative decrease); every second without one adds back a step (additive increase) up to the configured
ceiling, so many tasks never stampede the API and a busy API is given room at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable


class ApiGate:
    """A pause shared by every poll: after a 429 or an auth failure nobody asks the API until it ends."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]) -> None:
        self._clock = clock
        self._sleep = sleep
        self.not_before = 0.0
        self.rate_limited = 0  # consecutive 429s without Retry-After
        self.refused = 0  # consecutive 401/403s

    def pause(self, seconds: float) -> None:
        """Ask nothing for at least `seconds` from now."""
        self.not_before = max(self.not_before, self._clock() + seconds)

    async def wait(self) -> None:
        """Return once the pause, if any, is over."""
        while (remaining := self.not_before - self._clock()) > 0:
            await self._sleep(remaining)


class AdaptiveRate:
    """A token bucket whose rate backs off on 429 and recovers step by step; seams: `clock`, `sleep`."""

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        *,
        floor: float = 0.2,
        recover_per_second: float | None = None,
    ) -> None:
        self.ceiling = max_rps if max_rps > 0 else math.inf
        self.rate = self.ceiling
        self._floor = floor
        self._step = recover_per_second
        self._clock = clock
        self._sleep = sleep
        self._tokens = 1.0
        self._last = clock()
        self._recent: deque[float] = deque()  # start times of the last second's requests: the rate in use
        self._peak = 1.0  # the rate in use when the last 429 came

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = now
        if self.rate < self.ceiling:
            # Additive increase: back towards the ceiling while the API stays quiet (1 request/s more each second
            # by default). Without a ceiling, the limit lifts once it is twice what is being used.
            self.rate = min(self.ceiling, self.rate + (self._step or 1.0) * elapsed)
            if math.isinf(self.ceiling) and self.rate >= 2 * self._peak:
                self.rate = self.ceiling  # twice the pace that drew the 429: the limit has done its job
        if math.isfinite(self.rate):
            self._tokens = min(max(1.0, self.rate), self._tokens + elapsed * self.rate)

    async def acquire(self) -> None:
        """Wait for permission to send one request."""
        while True:
            now = self._clock()
            self._refill(now)
            # (A hair under one token counts as one: float rounding must not spin the loop on a 1e-17 s sleep.)
            if not math.isfinite(self.rate) or self._tokens >= 1.0 - 1e-9:
                if math.isfinite(self.rate):
                    self._tokens = max(0.0, self._tokens - 1.0)
                self._recent.append(now)
                self._in_use(now)
                return
            await self._sleep(max(1e-6, (1.0 - self._tokens) / self.rate))

    def _in_use(self, now: float) -> int:
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        return len(self._recent)

    def backoff(self) -> None:
        """The API said 429: halve the rate in use (multiplicative decrease)."""
        now = self._clock()
        self._refill(now)
        in_use = float(self._in_use(now) or 1)
        self._peak = in_use
        self.rate = max(self._floor, min(self.rate, in_use) / 2)
        self._tokens = min(self._tokens, 1.0)

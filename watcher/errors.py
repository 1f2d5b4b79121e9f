"""The one error tree of voicefox-watcher.

Every failure that crosses a module boundary is one of these; lower-level exceptions (httpx, sqlite3, tomllib,
pydantic) are translated once, where they are raised, and never escape to callers.

    WatcherError
    ├── ConfigError              invalid config file; carries every problem with its key path
    ├── UsageError               a command line that cannot be carried out (unknown notifier, no selection)
    ├── StoreError               the state database cannot be opened, read or written
    │   └── StoreNotEmpty        a copy's target already holds a watcher's state
    ├── ApiError                 the VoiceFox API did not give us a task (or a call log)
    │   ├── AuthenticationError  401/403: the token is missing, wrong or of another workspace
    │   ├── PermissionDenied     403 for the call log: the token may read tasks but not calls (switch it off)
    │   ├── TaskNotFound         404: no such task
    │   └── TransientApiError    worth asking again: 5xx, timeout, connection error, malformed body
    │       └── RateLimited      429: ask again no sooner than `retry_after` seconds
    └── DeliveryError            a receiver did not accept a notification; `permanent` decides retry
"""

from __future__ import annotations

from collections.abc import Sequence


class WatcherError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(WatcherError):
    """The configuration is invalid; `problems` lists each one as "key.path: what is wrong"."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.problems))


class UsageError(WatcherError):
    """The command line asks for something that cannot be done; the message says what to write instead."""


class StoreError(WatcherError):
    """The state database cannot be used."""


class StaleState(StoreError):
    """A task's new state was not written: another replica wrote that task since this one read it."""


class StoreNotEmpty(StoreError):
    """A copy's target already holds a watcher's state (tasks, events, deliveries or remembered values)."""


class ApiError(WatcherError):
    """The VoiceFox API did not give us the task."""


class AuthenticationError(ApiError):
    """The API refused our token (401/403)."""

    def __init__(self, message: str, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(message)


class PermissionDenied(ApiError):
    """The API answered 403 for the call log: the token lacks that permission, so the caller switches it off.

    Not an `AuthenticationError`: the token still reads tasks, and nothing should pause the task polls over it.
    """

    def __init__(self, message: str, status_code: int = 403) -> None:
        self.status_code = status_code
        super().__init__(message)


class TaskNotFound(ApiError):
    """The API answered 404 for the task."""


class TransientApiError(ApiError):
    """A failure worth retrying: 5xx, timeout, connection error, malformed body."""


class RateLimited(TransientApiError):
    """The API answered 429; `retry_after` is how long to wait at least, in seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class DeliveryError(WatcherError):
    """A receiver did not accept a notification.

    `permanent` errors (a 4xx other than 408/429, a payload the receiver rejects) are dead-lettered at once;
    the others are retried with backoff, no sooner than `retry_after` seconds when the receiver said so.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(message)

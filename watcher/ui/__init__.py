"""The status page on `[http] listen` (`[http] ui = true`): `board` decides what it shows, `page` serves it."""

from .page import StatusPage

__all__ = ["StatusPage"]

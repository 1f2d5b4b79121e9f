"""Languages: the message catalogues (gettext `.po` files, read with Babel) and locale-aware numbers, times and
durations (Babel's CLDR data).

Every word a person reads goes through a `Translator`: `t.say("Campaign “{name}” finished", name=...)`.
The English text is the message id; `watcher/locales/<language>/LC_MESSAGES/watcher.po` holds each translation, and
`watcher/locales/watcher.pot` every message id (regenerate it with `python -m watcher.i18n extract`). Languages:
"""

from __future__ import annotations

import functools
import io
import sys
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from babel.units import format_unit

LANGUAGES = ("en", "ja", "zh-Hans", "zh-Hant")  # as people write them (BCP 47); `en` is the source language
DEFAULT_LANGUAGE = "en"
LOCALES = Path(__file__).parent / "locales"
DOMAIN = "watcher"
# What marks a message id; (1, 2): a singular and a plural message, one of which is chosen by a count.
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None, "NP_": (1, 2), "say": None, "say_n": (1, 2)}

__doc__ = (__doc__ or "") + " " + ", ".join(LANGUAGES) + "."


def N_(message: str) -> str:
    """Mark a message id for the catalogues without translating it here."""
    return message


def NP_(singular: str, plural: str) -> tuple[str, str]:
    """Mark a singular and a plural message id for the catalogues without translating them here."""
    return singular, plural


def _babel_name(language: str) -> str:
    return language.replace("-", "_")  # zh-Hans -> zh_Hans: Babel's (and gettext's) spelling


def catalogue_path(language: str) -> Path:
    """Where the `.po` file of a language lives."""
    return LOCALES / _babel_name(language) / "LC_MESSAGES" / f"{DOMAIN}.po"


class Translator:
    """One language's messages and formats; build with `translator(language)` (cached)."""

    def __init__(self, language: str) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"{language!r} is not a supported language (use one of: {', '.join(LANGUAGES)})")
        self.language = language
        self.locale = Locale.parse(_babel_name(language))
        self._translations: NullTranslations = NullTranslations()
        if language != DEFAULT_LANGUAGE:
            with catalogue_path(language).open("rb") as po:
                catalog = read_po(po, locale=self.locale, domain=DOMAIN)
            # gettext reads compiled catalogues: compile the .po in memory (it is small) rather than ship a .mo.
            compiled = io.BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            self._translations = Translations(fp=compiled, domain=DOMAIN)

    def gettext(self, message: str) -> str:
        """The message in this language (the English text itself where a catalogue lacks it)."""
        return self._translations.ugettext(message)

    def say(self, message: str, **fields: object) -> str:
        """The message in this language with its placeholders filled; a translation whose placeholders do not fit
        (a translator's slip) gives the English text instead of an exception that would cost an alert."""
        try:
            return self.gettext(message).format(**fields)
        except (KeyError, IndexError, ValueError, AttributeError):
            return message.format(**fields)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        """The singular or plural message for `n` in this language."""
        return self._translations.ungettext(singular, plural, n)

    def say_n(self, singular: str, plural: str, n: int, **fields: object) -> str:
        """The singular or plural message for `n` with its placeholders filled (`count` is `n` as the language writes
        numbers); the English text, as `say`, where a translation's placeholders do not fit."""
        fields = {"count": self.number(n)} | fields
        try:
            return self.ngettext(singular, plural, n).format(**fields)
        except (KeyError, IndexError, ValueError, AttributeError):
            return (singular if n == 1 else plural).format(**fields)

    def number(self, value: int | float) -> str:
        """12,345 / 12,345 / 12 345, as the language writes numbers."""
        try:
            return format_decimal(value, locale=self.locale)
        except (ArithmeticError, ValueError, TypeError):  # (Babel's decimals have limits; an alert has none)
            return str(value)

    def percent(self, value: int | None) -> str:
        """A whole percentage ("41%"), or a dash when unknown."""
        if value is None:
            return "–"
        return self.say("{value}%", value=self.number(value))

    def share(self, value: float | None) -> str:
        """A share from 0 to 1 as a percentage ("41%"; "2.5%" under 10 %, where a whole figure would hide a fall
        from 4 % to 0.4 %), or a dash when unknown or not a share."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return "–"  # (NaN fails the comparison too)
        percent = value * 100
        shown: float = round(percent) if percent >= 10 else round(percent, 1)
        if shown == int(shown):
            shown = int(shown)
        return self.say("{value}%", value=self.number(shown))

    def duration(self, seconds: float) -> str:
        """ "45 sec", "15 min", "2 hr, 5 min" (en); "2 時間 5 分" (ja); "2小时5分钟" (zh-Hans): at most two units
        (and a fraction of a second only under ten seconds, as a demo's interval)."""
        if seconds < 10 and seconds != int(seconds):
            return format_unit(round(max(0.0, seconds), 2), "duration-second", length="short", locale=self.locale)
        seconds = max(0, int(seconds))
        if seconds < 120:
            parts = [(seconds, "duration-second")]
        elif seconds < 7200:
            parts = [(seconds // 60, "duration-minute")]
        else:
            hours, minutes = divmod(seconds // 60, 60)
            parts = [(hours, "duration-hour")] + ([(minutes, "duration-minute")] if minutes else [])
        units = [format_unit(n, unit, length="short", locale=self.locale) for n, unit in parts]
        return format_list(units, style="unit-short", locale=self.locale)

    def time(self, when: datetime, zone: tzinfo | None) -> str:
        """A date and time in `zone` (UTC when None), as the language writes them, with the UTC offset."""
        shown = when.astimezone(zone) if zone is not None else when
        offset = shown.utcoffset() or timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        label = f"UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return f"{format_datetime(shown, 'medium', tzinfo=shown.tzinfo, locale=self.locale)} ({label})"


@functools.cache
def translator(language: str = DEFAULT_LANGUAGE) -> Translator:
    """The (shared) translator of a language."""
    return Translator(language)


def _extract(out: Path) -> None:
    """Write the template of every message id found in the package (`python -m watcher.i18n extract`)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import write_po

    catalog = Catalog(project="voicefox-watcher", domain=DOMAIN)
    package = Path(__file__).parent
    for filename, lineno, message, comments, _context in extract_from_dir(
        package, method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        catalog.add(message, locations=[(f"watcher/{filename}", lineno)], auto_comments=comments, flags=())
    with out.open("wb") as f:
        write_po(f, catalog, omit_header=False, sort_output=True, width=120)


def _update() -> None:
    """Bring every language's `.po` in line with the template: new message ids arrive untranslated (a test then
    fails until a translator fills them), vanished ones are dropped."""
    from babel.messages.pofile import write_po

    with (LOCALES / f"{DOMAIN}.pot").open("rb") as f:
        template = read_po(f)
    for language in LANGUAGES[1:]:
        path = catalogue_path(language)
        with path.open("rb") as f:
            catalog = read_po(f, locale=_babel_name(language), domain=DOMAIN)
        catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, catalog, width=120, sort_output=True, ignore_obsolete=True)
        print(f"updated {path}")


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    if sys.argv[1:] == ["extract"]:
        _extract(LOCALES / f"{DOMAIN}.pot")
        _update()
        print(f"wrote {LOCALES / f'{DOMAIN}.pot'}")
    else:
        print("usage: python -m watcher.i18n extract   (the template from the code, then every language's .po)")

"""Business calendars (SPEC §8): when SLA clocks run, and how far they have run.

SLA targets are written in business time ("4h" on a mon–fri 09:00–18:00 calendar means four
office hours, not four hours of wall time), so due dates cannot be computed with plain
datetime arithmetic. This module turns a `[[calendars]]` entry into a `BusinessCalendar`
that answers three questions: when is `duration` of business time over (`add`), how much
business time lies between two moments (`elapsed`, used to pause clocks and report progress),
and is the desk open now (`is_open`).

Pure: no I/O and no clock of its own, so due times are reproducible and testable; the caller
stores them on the case, which keeps timers as data that survive restarts.

Conventions, chosen so that configuration reads the way people talk about office hours:
- Hours are wall-clock times in the calendar's time zone, every day the same, also on DST
  days: business time is measured in real elapsed time, so a range that spans the skipped
  hour in spring is an hour shorter and one that spans the repeated hour in autumn is an hour
  longer. A range that starts inside a DST gap opens when the gap ends; an ambiguous start is
  its first occurrence and an ambiguous end its last (the range is never cut short).
- Ranges are half-open [start, end): at 18:00 a 09:00–18:00 desk is closed, but a clock that
  runs out exactly at 18:00 is due at 18:00.
- Holidays are local dates and close the whole day.
- "24:00" may end a range; it is stored as `time(0)` in the end position (a `time` cannot hold
  24:00, and an end of 00:00 means nothing else because ranges must not be empty).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from maild.config import CalendarConfig

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = "24x7"

_MIDNIGHT = time(0)
_FULL_DAY: tuple[tuple[time, time], ...] = ((_MIDNIGHT, _MIDNIGHT),)
_RANGE_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DURATION_RE = re.compile(r"^(?:(\d+)w)?\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")
_DURATION_UNITS = ("weeks", "days", "hours", "minutes", "seconds")


class CalendarError(ValueError):
    """A calendar definition that cannot be used; the message names the calendar, the key and why,
    so `maild check` can point the operator at the line to fix."""


def _minutes(t: time, *, end: bool = False) -> float:
    """Minutes since midnight, with an end of 00:00 counting as 24:00 (see module docstring)."""
    if end and t == _MIDNIGHT:
        return 24 * 60
    return t.hour * 60 + t.minute + (t.second + t.microsecond / 1_000_000) / 60


def _check_ranges(ranges: Iterable[tuple[time, time]]) -> str | None:
    """Why `ranges` break the invariant (sorted, non-overlapping, start < end), or None."""
    previous_end = -1.0
    for start, end in ranges:
        if start.tzinfo is not None or end.tzinfo is not None:
            return "times must be naive (the calendar's time zone applies)"
        s, e = _minutes(start), _minutes(end, end=True)
        if s >= e:
            return f"range {_fmt(start, end)} does not end after it starts"
        if s < previous_end:
            return f"range {_fmt(start, end)} overlaps the one before it"
        previous_end = e
    return None


def _fmt(start: time, end: time) -> str:
    end_text = "24:00" if end == _MIDNIGHT else end.strftime("%H:%M")
    return f"{start.strftime('%H:%M')}-{end_text}"


@dataclass(frozen=True)
class BusinessCalendar:
    """Open hours per weekday (0 = Monday) in a time zone, minus holidays.

    Immutable so one instance can be shared by every case on the calendar; the invariants are
    checked on construction because `add` steps from opening to opening and would never end on
    a calendar that never opens.
    """

    name: str
    tz: ZoneInfo
    hours: dict[int, tuple[tuple[time, time], ...]]
    holidays: frozenset[date]

    def __post_init__(self) -> None:
        for weekday, ranges in self.hours.items():
            if weekday not in range(7):
                raise CalendarError(f"calendar {self.name!r}: hours: weekday {weekday!r} is not 0 (mon) .. 6 (sun)")
            why = _check_ranges(ranges)
            if why:
                raise CalendarError(f"calendar {self.name!r}: hours.{WEEKDAYS[weekday]}: {why}")
        if not any(self.hours.values()):
            raise CalendarError(f"calendar {self.name!r}: hours: has no business hours "
                                "(give at least one weekday, e.g. mon = \"09:00-18:00\")")

    # --- construction -------------------------------------------------------------------

    @classmethod
    def always(cls) -> BusinessCalendar:
        """The built-in "24x7" calendar: every moment counts, so business time is plain time."""
        return cls(name=ALWAYS, tz=ZoneInfo("UTC"), hours=dict.fromkeys(range(7), _FULL_DAY), holidays=frozenset())

    @classmethod
    def from_config(cls, cfg: CalendarConfig) -> BusinessCalendar:
        """Parse a `[[calendars]]` entry; every problem found is reported in one CalendarError so the
        operator can fix them all at once."""
        name = cfg.name
        problems: list[str] = []

        def problem(key: str, why: str) -> None:
            problems.append(f"calendar {name!r}: {key}: {why}")

        if not isinstance(name, str) or not name.strip():
            problem("name", "must not be empty")

        tz: ZoneInfo | None = None
        try:
            if not isinstance(cfg.timezone, str) or not cfg.timezone:
                raise ValueError
            tz = ZoneInfo(cfg.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            problem("timezone", f"unknown time zone {cfg.timezone!r} (use an IANA name such as Europe/Prague or UTC)")

        hours: dict[int, tuple[tuple[time, time], ...]] = {}
        before_hours = len(problems)
        raw_hours = cfg.hours if isinstance(cfg.hours, dict) else {}
        if not isinstance(cfg.hours, dict):
            problem("hours", "expected a table such as { mon = \"09:00-18:00\" }")
        for key, value in raw_hours.items():
            day = key.strip().lower() if isinstance(key, str) else key
            if day not in WEEKDAYS:
                problem(f"hours.{key}", f"not a weekday (use {', '.join(WEEKDAYS)})")
                continue
            weekday = WEEKDAYS.index(day)
            if weekday in hours:
                problem(f"hours.{key}", "weekday given twice")
                continue
            ranges, why = _parse_ranges(value)
            if why:
                problem(f"hours.{key}", why)
                continue
            hours[weekday] = ranges
        if len(problems) == before_hours and not any(hours.values()):
            problem("hours", "has no business hours (give at least one weekday, e.g. mon = \"09:00-18:00\")")

        holidays: set[date] = set()
        raw_holidays = cfg.holidays if isinstance(cfg.holidays, list | tuple) else []
        if not isinstance(cfg.holidays, list | tuple):
            problem("holidays", "expected a list of dates such as [\"2026-12-24\"]")
        for i, value in enumerate(raw_holidays):
            parsed = _parse_holiday(value)
            if parsed is None:
                problem(f"holidays[{i}]", f"{value!r} is not a date (expected YYYY-MM-DD, e.g. 2026-12-24)")
            else:
                holidays.add(parsed)

        if problems or tz is None:
            raise CalendarError("; ".join(problems))
        return cls(name=name, tz=tz, hours=hours, holidays=frozenset(holidays))

    # --- queries ------------------------------------------------------------------------

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The moment (aware, UTC) when `duration` of business time has passed after `start`.

        Counting begins at `start` if the desk is open then, else at the next opening, so a zero
        duration gives the first open moment. The result may be a closing time: a clock that runs
        out at 18:00 is due at 18:00, not at the next morning's opening.
        """
        start_utc = _utc(start, "start")
        if duration < timedelta(0):
            raise ValueError(f"calendar {self.name!r}: cannot add a negative duration ({duration})")
        if self._always_open():
            return start_utc + duration
        remaining = duration
        for opens, closes in self._intervals(self._local_date(start_utc) - timedelta(days=1)):
            if closes <= start_utc:
                continue
            begin = max(opens, start_utc)
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable: the interval stream is endless")  # pragma: no cover

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time between two moments (zero if `end` is not after `start`); the inverse of
        `add` for moments that `add` can return."""
        start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
        if end_utc <= start_utc:
            return timedelta(0)
        if self._always_open():
            return end_utc - start_utc
        total = timedelta(0)
        for opens, closes in self._intervals(self._local_date(start_utc) - timedelta(days=1)):
            if opens >= end_utc:
                break
            begin, finish = max(opens, start_utc), min(closes, end_utc)
            if finish > begin:
                total += finish - begin
        return total

    def is_open(self, moment: datetime) -> bool:
        """Whether business time runs at `moment` (ranges are half-open: open at 09:00, closed at 18:00)."""
        moment_utc = _utc(moment, "moment")
        if self._always_open():
            return True
        for opens, closes in self._intervals(self._local_date(moment_utc) - timedelta(days=1)):
            if opens > moment_utc:
                return False
            if moment_utc < closes:
                return True
        raise AssertionError("unreachable: the interval stream is endless")  # pragma: no cover

    # --- internals ----------------------------------------------------------------------

    def _always_open(self) -> bool:
        """Whole days every day and no holidays: business time is plain time in any zone (DST only
        changes how long a local day is, and every instant of it counts)."""
        return not self.holidays and all(self.hours.get(d) == _FULL_DAY for d in range(7))

    def _local_date(self, moment_utc: datetime) -> date:
        return moment_utc.astimezone(self.tz).date()

    def _intervals(self, first_day: date) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals as UTC instants, in order and never overlapping, from `first_day` on (endless).

        Stepping by day and by range keeps `add` and `elapsed` proportional to the number of calendar
        days crossed, not to the duration's minutes.
        """
        day = first_day
        last_end: datetime | None = None
        one_day = timedelta(days=1)
        while True:
            if day not in self.holidays:
                for start, end in self.hours.get(day.weekday(), ()):
                    opens = _instant(day, start, self.tz, end=False)
                    closes = _instant(day + one_day if end == _MIDNIGHT else day, end, self.tz, end=True)
                    if last_end is not None and opens < last_end:
                        opens = last_end  # an ambiguous midnight must not count twice
                    if closes > opens:
                        yield opens, closes
                        last_end = closes
            day += one_day


def _utc(moment: datetime, what: str) -> datetime:
    """`moment` in UTC; naive datetimes are refused because their zone would be a guess."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _instant(day: date, t: time, tz: ZoneInfo, *, end: bool) -> datetime:
    """The UTC instant of local wall time `day t` in `tz`.

    Ambiguous times (autumn) resolve to the first occurrence for a start and the last for an end,
    so a range is never shortened; nonexistent times (spring gap) resolve to the moment the gap ends,
    so a range neither loses time after the gap nor gains time that never happened.
    """
    naive = datetime.combine(day, t)
    local = naive.replace(tzinfo=tz, fold=1 if end else 0)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == naive:
        return instant
    # In a gap: fold=1 maps with the offset after the jump (an instant before it), fold=0 with the
    # offset before it (an instant after it); the transition lies in between, on a whole second.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    after = hi.astimezone(tz).utcoffset()
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if (lo + timedelta(seconds=mid)).astimezone(tz).utcoffset() == after:
            hi_s = mid
        else:
            lo_s = mid
    return lo + timedelta(seconds=hi_s)


def _parse_time(hh: str, mm: str, *, end: bool) -> time | None:
    hour, minute = int(hh), int(mm)
    if end and hour == 24 and minute == 0:
        return _MIDNIGHT
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _parse_ranges(value: object) -> tuple[tuple[tuple[time, time], ...], str | None]:
    """Parse "09:00-12:00,13:00-17:00" (or a list of such strings) into sorted ranges, or say why not."""
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        return (), f"expected a string such as \"09:00-18:00\", got {value!r}"
    ranges: list[tuple[time, time]] = []
    for part in value.split(","):
        m = _RANGE_RE.match(part)
        if not m:
            return (), f"bad range {part.strip()!r} (expected HH:MM-HH:MM, e.g. 09:00-18:00)"
        start = _parse_time(m.group(1), m.group(2), end=False)
        end = _parse_time(m.group(3), m.group(4), end=True)
        if start is None or end is None:
            return (), f"bad range {part.strip()!r} (hours 00-23, minutes 00-59; 24:00 only as an end)"
        if end == _MIDNIGHT:
            if m.group(3) != "24":
                return (), f"bad range {part.strip()!r}: ends at 00:00 (write 24:00 for the end of the day)"
        elif _minutes(start) >= _minutes(end):
            return (), f"bad range {part.strip()!r}: does not end after it starts"
        ranges.append((start, end))
    ranges.sort(key=lambda r: (_minutes(r[0]), _minutes(r[1], end=True)))
    for (s1, e1), (s2, e2) in pairwise(ranges):
        if _minutes(s2) < _minutes(e1, end=True):
            return (), f"ranges {_fmt(s1, e1)} and {_fmt(s2, e2)} overlap"
    return tuple(ranges), None


def _parse_holiday(value: object) -> date | None:
    """A holiday as a date; TOML's unquoted dates arrive as `date` and are taken as they are."""
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE_RE.match(value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def parse_duration(text: str) -> timedelta:
    """Parse an SLA duration: "90s", "30m", "4h", "1h30m", "3d", "2w".

    Units go from largest to smallest, each at most once. `d` and `w` are plain multiples
    (1d = 24h, 1w = 7d) counted as business time like any other duration: "3d" on an office
    calendar is 72 office hours, not three working days; this keeps one meaning for a duration
    whatever calendar it meets.
    """
    if not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: expected text such as 30m, 4h, 1h30m, 3d")
    cleaned = text.strip().lower()
    m = _DURATION_RE.match(cleaned)
    if not cleaned or not m or not any(m.groups()):
        raise ValueError(f"bad duration {text!r}: expected a number with a unit (w, d, h, m, s) "
                         "such as 30m, 4h, 1h30m, 3d, largest unit first")
    try:
        return timedelta(**{unit: int(n) for unit, n in zip(_DURATION_UNITS, m.groups(), strict=True) if n})
    except OverflowError:
        raise ValueError(f"bad duration {text!r}: too long") from None


def calendars_by_name(configs: list[CalendarConfig]) -> dict[str, BusinessCalendar]:
    """All configured calendars by name, plus the built-in "24x7"; every problem in one CalendarError."""
    result: dict[str, BusinessCalendar] = {ALWAYS: BusinessCalendar.always()}
    problems: list[str] = []
    for cfg in configs:
        if cfg.name == ALWAYS:
            problems.append(f"calendar {cfg.name!r}: name: {ALWAYS} is built in and cannot be redefined")
            continue
        try:
            calendar = BusinessCalendar.from_config(cfg)
        except CalendarError as e:
            problems.append(str(e))
            continue
        if calendar.name in result:
            problems.append(f"calendar {cfg.name!r}: name: defined twice")
            continue
        result[calendar.name] = calendar
    if problems:
        raise CalendarError("; ".join(problems))
    return result

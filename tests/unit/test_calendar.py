"""Business calendars (SPEC §8): SLA clocks count business time in the calendar's zone, skip
nights, weekends and holidays, follow DST on the wall clock, and refuse bad definitions with a
message that names the calendar, the key and why."""

from __future__ import annotations

import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from maild.config import CalendarConfig
from maild.rules.calendar import (
    WEEKDAYS,
    BusinessCalendar,
    CalendarError,
    calendars_by_name,
    parse_duration,
)

PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
WORKDAYS = WEEKDAYS[:5]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cal(hours: dict[str, str] | None = None, timezone: str = "UTC", holidays: list[str] | None = None,
        name: str = "office") -> BusinessCalendar:
    if hours is None:
        hours = dict.fromkeys(WORKDAYS, "09:00-18:00")
    return BusinessCalendar.from_config(CalendarConfig(name=name, timezone=timezone, hours=hours,
                                                       holidays=holidays or []))


H = timedelta(hours=1)
M = timedelta(minutes=1)


# --- the SPEC example and everyday cases ---------------------------------------------------

def test_spec_example_friday_afternoon_resolution_due_monday_noon() -> None:
    assert utc(2026, 11, 20).weekday() == 4
    assert cal().add(utc(2026, 11, 20, 17), 4 * H) == utc(2026, 11, 23, 12)


def test_clock_running_out_at_closing_time_is_due_at_closing_time() -> None:
    assert cal().add(utc(2026, 11, 20, 17), 1 * H) == utc(2026, 11, 20, 18)


def test_remainder_carries_over_the_weekend() -> None:
    assert cal().add(utc(2026, 11, 20, 17, 45), 30 * M) == utc(2026, 11, 23, 9, 15)


def test_start_on_saturday_counts_from_monday_opening() -> None:
    c = cal()
    assert c.add(utc(2026, 11, 21, 10), 1 * H) == utc(2026, 11, 23, 10)
    assert c.add(utc(2026, 11, 21, 10), timedelta(0)) == utc(2026, 11, 23, 9)


def test_zero_duration_is_start_when_open_else_next_opening() -> None:
    c = cal()
    assert c.add(utc(2026, 11, 23, 10, 30), timedelta(0)) == utc(2026, 11, 23, 10, 30)
    assert c.add(utc(2026, 11, 23, 7), timedelta(0)) == utc(2026, 11, 23, 9)
    assert c.add(utc(2026, 11, 23, 18), timedelta(0)) == utc(2026, 11, 24, 9)  # closed at 18:00


def test_result_is_utc_whatever_zone_the_start_is_in() -> None:
    start = datetime(2026, 11, 20, 18, tzinfo=PRAGUE)  # 17:00 UTC
    due = cal().add(start, 4 * H)
    assert due == utc(2026, 11, 23, 12)
    assert due.utcoffset() == timedelta(0)


def test_is_open_uses_half_open_ranges() -> None:
    c = cal()
    assert c.is_open(utc(2026, 11, 23, 9))
    assert c.is_open(utc(2026, 11, 23, 17, 59))
    assert not c.is_open(utc(2026, 11, 23, 18))
    assert not c.is_open(utc(2026, 11, 23, 8, 59))
    assert not c.is_open(utc(2026, 11, 21, 12))  # Saturday


def test_elapsed_counts_only_open_time() -> None:
    c = cal()
    assert c.elapsed(utc(2026, 11, 20, 17), utc(2026, 11, 23, 12)) == 4 * H
    assert c.elapsed(utc(2026, 11, 21), utc(2026, 11, 22, 23)) == timedelta(0)  # weekend
    assert c.elapsed(utc(2026, 11, 23, 12), utc(2026, 11, 23, 10)) == timedelta(0)  # end before start
    assert c.elapsed(utc(2026, 11, 23), utc(2026, 11, 30)) == 45 * H  # one working week


def test_holidays_close_the_whole_local_day() -> None:
    c = cal(holidays=["2026-12-24", "2026-12-25"])
    assert utc(2026, 12, 24).weekday() == 3  # Christmas Eve is a Thursday
    assert not c.is_open(utc(2026, 12, 24, 10))
    assert not c.is_open(utc(2026, 12, 25, 10))
    assert c.add(utc(2026, 12, 23, 17), 2 * H) == utc(2026, 12, 28, 10)
    assert c.add(utc(2026, 12, 24, 10), timedelta(0)) == utc(2026, 12, 28, 9)
    assert c.elapsed(utc(2026, 12, 21), utc(2026, 12, 28)) == 27 * H


def test_holidays_are_local_dates() -> None:
    # 2026-12-24 00:30 in Prague is 2026-12-23 23:30 UTC: already the holiday there.
    c = cal({"wed": "00:00-24:00", "thu": "00:00-24:00"}, timezone="Europe/Prague", holidays=["2026-12-24"])
    assert c.is_open(utc(2026, 12, 23, 22, 30))
    assert not c.is_open(utc(2026, 12, 23, 23, 30))


def test_split_ranges_skip_the_lunch_break() -> None:
    c = cal(dict.fromkeys(WORKDAYS, "09:00-12:00,13:00-17:00"))
    monday = (2026, 11, 23)
    assert c.add(utc(*monday, 11), 2 * H) == utc(*monday, 14)
    assert c.add(utc(*monday, 11), 1 * H) == utc(*monday, 12)
    assert not c.is_open(utc(*monday, 12, 30))
    assert c.add(utc(*monday, 12, 30), timedelta(0)) == utc(*monday, 13)
    assert c.add(utc(*monday, 16), 2 * H) == utc(2026, 11, 24, 10)
    assert c.elapsed(utc(*monday), utc(2026, 11, 24)) == 7 * H


def test_ranges_are_sorted_whatever_the_config_order() -> None:
    c = cal({"mon": "13:00-17:00, 09:00-12:00"})
    assert c.hours[0] == ((time(9), time(12)), (time(13), time(17)))


# --- time zones and DST ---------------------------------------------------------------------

PRAGUE_WITH_SUNDAY = {**dict.fromkeys(WORKDAYS, "09:00-18:00"), "sun": "00:00-24:00"}


def test_prague_hours_are_local_wall_clock_in_winter_and_summer() -> None:
    c = cal(dict.fromkeys(WORKDAYS, "09:00-18:00"), timezone="Europe/Prague")
    assert c.add(utc(2026, 1, 5, 6), timedelta(0)) == utc(2026, 1, 5, 8)  # CET: 09:00 = 08:00 UTC
    assert c.add(utc(2026, 7, 6, 6), timedelta(0)) == utc(2026, 7, 6, 7)  # CEST: 09:00 = 07:00 UTC


def test_prague_spring_forward_sunday_has_23_hours() -> None:
    c = cal(PRAGUE_WITH_SUNDAY, timezone="Europe/Prague")
    saturday = utc(2026, 3, 28, 12)
    # Sunday 2026-03-29 local: 2026-03-28 23:00 UTC .. 2026-03-29 22:00 UTC.
    assert c.elapsed(saturday, utc(2026, 3, 30, 6)) == 23 * H
    assert c.add(saturday, 23 * H) == utc(2026, 3, 29, 22)
    assert c.add(saturday, 24 * H) == utc(2026, 3, 30, 8)  # Monday 10:00 CEST
    assert not c.is_open(utc(2026, 3, 28, 22, 59))
    assert c.is_open(utc(2026, 3, 28, 23))


def test_prague_fall_back_sunday_has_25_hours() -> None:
    c = cal(PRAGUE_WITH_SUNDAY, timezone="Europe/Prague")
    saturday = utc(2026, 10, 24, 12)
    # Sunday 2026-10-25 local: 2026-10-24 22:00 UTC .. 2026-10-25 23:00 UTC.
    assert c.elapsed(saturday, utc(2026, 10, 26, 6)) == 25 * H
    assert c.add(saturday, 25 * H) == utc(2026, 10, 25, 23)
    assert c.add(saturday, 26 * H) == utc(2026, 10, 26, 9)  # Monday 10:00 CET


def test_range_spanning_the_dst_change_is_shorter_in_spring_and_longer_in_autumn() -> None:
    c = cal({"sun": "01:00-04:00"}, timezone="Europe/Prague")
    assert c.elapsed(utc(2026, 3, 28), utc(2026, 3, 30)) == 2 * H
    assert c.elapsed(utc(2026, 10, 24), utc(2026, 10, 26)) == 4 * H
    assert c.elapsed(utc(2026, 5, 2), utc(2026, 5, 4)) == 3 * H  # an ordinary Sunday


def test_range_starting_in_the_spring_gap_opens_when_the_gap_ends() -> None:
    c = cal({"sun": "02:30-05:00"}, timezone="Europe/Prague")
    # 02:30 does not exist on 2026-03-29; the desk opens at 03:00 CEST (01:00 UTC) until 05:00 CEST.
    assert c.add(utc(2026, 3, 28, 12), timedelta(0)) == utc(2026, 3, 29, 1)
    assert c.elapsed(utc(2026, 3, 28), utc(2026, 3, 30)) == 2 * H


def test_new_york_across_the_spring_change() -> None:
    c = cal(dict.fromkeys(WORKDAYS, "09:00-17:00"), timezone="America/New_York")
    friday = datetime(2026, 3, 6, 16, tzinfo=NEW_YORK)  # EST
    due = c.add(friday, 2 * H)
    assert due == datetime(2026, 3, 9, 10, tzinfo=NEW_YORK)  # EDT after 2026-03-08
    assert due == utc(2026, 3, 9, 14)
    assert c.add(utc(2026, 11, 2, 12), timedelta(0)) == utc(2026, 11, 2, 14)  # EST again: 09:00 = 14:00 UTC


# --- 24x7 and consistency -------------------------------------------------------------------

def test_24x7_equals_plain_arithmetic() -> None:
    c = BusinessCalendar.always()
    assert c.name == "24x7"
    start = utc(2026, 3, 28, 23, 17, 5)
    for d in (timedelta(0), 30 * M, 4 * H, timedelta(days=3), timedelta(weeks=2, seconds=1)):
        assert c.add(start, d) == start + d
        assert c.elapsed(start, start + d) == d
    assert c.is_open(utc(2026, 12, 25, 3))


def test_full_week_calendar_in_a_dst_zone_is_plain_time_too() -> None:
    # A holiday long ago keeps this off the 24x7 shortcut, so the stepping code is what's checked.
    c = cal(dict.fromkeys(WEEKDAYS, "00:00-24:00"), timezone="Europe/Prague", holidays=["2000-01-01"])
    for start in (utc(2026, 3, 27, 13, 7), utc(2026, 10, 23, 22, 59)):
        for d in (H, 26 * H, timedelta(days=5, minutes=3)):
            assert c.add(start, d) == start + d
            assert c.elapsed(start, start + d) == d


@pytest.mark.parametrize("hours,timezone", [
    (dict.fromkeys(WORKDAYS, "09:00-18:00"), "UTC"),
    (dict.fromkeys(WORKDAYS, "09:00-12:00,13:00-17:30"), "America/New_York"),
    (PRAGUE_WITH_SUNDAY, "Europe/Prague"),
    ({"sun": "01:00-04:00", "wed": "02:30-05:00,22:00-24:00"}, "Europe/Prague"),
])
def test_elapsed_is_the_inverse_of_add(hours: dict[str, str], timezone: str) -> None:
    c = cal(hours, timezone=timezone, holidays=["2026-03-30", "2026-10-28"])
    durations = [timedelta(0), timedelta(seconds=1), 7 * M, H, 4 * H + 30 * M, 9 * H, 3 * 24 * H, 61 * H]
    for spring_or_autumn in (utc(2026, 3, 25), utc(2026, 10, 21)):
        for step in range(0, 9 * 24 * 60, 53):  # every 53 minutes across both DST weekends
            start = spring_or_autumn + step * M
            for d in durations:
                end = c.add(start, d)
                assert end >= start
                assert c.elapsed(start, end) == d, (start, d, end)
                if d:
                    assert c.is_open(end - timedelta(microseconds=1)), (start, d, end)


def test_adding_1000_business_hours_takes_milliseconds() -> None:
    c = cal(dict.fromkeys(WORKDAYS, "09:00-12:00,13:00-17:00"), timezone="Europe/Prague",
            holidays=["2026-12-24", "2026-12-25"])
    began = clock.perf_counter()
    due = c.add(utc(2026, 11, 20, 17), 1000 * H)
    took = clock.perf_counter() - began
    assert c.elapsed(utc(2026, 11, 20, 17), due) == 1000 * H
    assert took < 0.05


def test_naive_datetimes_and_negative_durations_are_refused() -> None:
    c = cal()
    with pytest.raises(ValueError, match="aware"):
        c.add(datetime(2026, 11, 20, 17), H)
    with pytest.raises(ValueError, match="aware"):
        c.elapsed(utc(2026, 11, 20), datetime(2026, 11, 21))
    with pytest.raises(ValueError, match="aware"):
        c.is_open(datetime(2026, 11, 20))
    with pytest.raises(ValueError, match="negative"):
        c.add(utc(2026, 11, 20), -H)


# --- configuration errors -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"timezone": "Mars/Olympus"}, "calendar 'office': timezone: unknown time zone 'Mars/Olympus'"),
    ({"timezone": ""}, "calendar 'office': timezone: unknown time zone ''"),
    ({"hours": {"monday": "09:00-18:00"}}, "calendar 'office': hours.monday: not a weekday"),
    ({"hours": {"mon": "9-18"}}, "calendar 'office': hours.mon: bad range '9-18' (expected HH:MM-HH:MM"),
    ({"hours": {"mon": ""}}, "calendar 'office': hours.mon: bad range ''"),
    ({"hours": {"mon": "09:00-25:00"}}, "calendar 'office': hours.mon: bad range '09:00-25:00'"),
    ({"hours": {"mon": "24:00-24:00"}}, "calendar 'office': hours.mon: bad range '24:00-24:00'"),
    ({"hours": {"mon": "09:60-18:00"}}, "calendar 'office': hours.mon: bad range '09:60-18:00'"),
    ({"hours": {"mon": "18:00-09:00"}}, "calendar 'office': hours.mon: bad range '18:00-09:00': does not end after"),
    ({"hours": {"mon": "09:00-09:00"}}, "calendar 'office': hours.mon: bad range '09:00-09:00': does not end after"),
    ({"hours": {"mon": "22:00-00:00"}}, "calendar 'office': hours.mon: bad range '22:00-00:00': ends at 00:00 "
                                        "(write 24:00"),
    ({"hours": {"tue": "09:00-13:00,12:00-17:00"}},
     "calendar 'office': hours.tue: ranges 09:00-13:00 and 12:00-17:00 overlap"),
    ({"hours": {"mon": 9}}, "calendar 'office': hours.mon: expected a string"),
    ({"hours": {"mon": "09:00-18:00", "Mon": "10:00-11:00"}}, "calendar 'office': hours.Mon: weekday given twice"),
    ({"hours": {}}, "calendar 'office': hours: has no business hours"),
    ({"holidays": ["2026-13-01"]}, "calendar 'office': holidays[0]: '2026-13-01' is not a date (expected YYYY-MM-DD"),
    ({"holidays": ["2026-12-24", "24.12.2026"]}, "calendar 'office': holidays[1]: '24.12.2026' is not a date"),
    ({"holidays": ["20261224"]}, "calendar 'office': holidays[0]: '20261224' is not a date"),
    ({"name": ""}, "calendar '': name: must not be empty"),
])
def test_calendar_errors_name_the_calendar_the_key_and_why(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "office", "hours": {"mon": "09:00-18:00"}, **kwargs}
    with pytest.raises(CalendarError) as info:
        BusinessCalendar.from_config(CalendarConfig(**fields))  # type: ignore[arg-type]
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_problems_of_a_calendar_are_reported_together() -> None:
    with pytest.raises(CalendarError) as info:
        BusinessCalendar.from_config(CalendarConfig(name="office", timezone="Nowhere/Land",
                                                    hours={"mon": "9-18", "xyz": "09:00-10:00"},
                                                    holidays=["soon"]))
    text = str(info.value)
    for key in ("timezone:", "hours.mon:", "hours.xyz:", "holidays[0]:"):
        assert f"calendar 'office': {key}" in text


def test_lenient_spellings_are_accepted() -> None:
    c = cal({"Mon": " 9:00 - 12:00 , 13:00-24:00"}, holidays=[" 2026-12-24 "])
    assert c.hours == {0: ((time(9), time(12)), (time(13), time(0)))}
    assert c.holidays == frozenset({date(2026, 12, 24)})
    toml_date = BusinessCalendar.from_config(CalendarConfig(name="x", hours={"mon": "09:00-10:00"},
                                                            holidays=[date(2026, 12, 24)]))  # type: ignore[list-item]
    assert toml_date.holidays == frozenset({date(2026, 12, 24)})


def test_direct_construction_checks_the_invariants() -> None:
    with pytest.raises(CalendarError, match="calendar 'x': hours: has no business hours"):
        BusinessCalendar(name="x", tz=ZoneInfo("UTC"), hours={0: ()}, holidays=frozenset())
    with pytest.raises(CalendarError, match=r"calendar 'x': hours\.mon: range 18:00-09:00 does not end after"):
        BusinessCalendar(name="x", tz=ZoneInfo("UTC"), hours={0: ((time(18), time(9)),)}, holidays=frozenset())
    with pytest.raises(CalendarError, match=r"calendar 'x': hours\.tue: range 11:00-12:00 overlaps"):
        BusinessCalendar(name="x", tz=ZoneInfo("UTC"), hours={1: ((time(9), time(13)), (time(11), time(12)))},
                         holidays=frozenset())
    with pytest.raises(CalendarError, match="weekday 7"):
        BusinessCalendar(name="x", tz=ZoneInfo("UTC"), hours={7: ((time(9), time(13)),)}, holidays=frozenset())


def test_calendars_by_name_includes_24x7() -> None:
    found = calendars_by_name([CalendarConfig(name="office", timezone="Europe/Prague",
                                              hours=dict.fromkeys(WORKDAYS, "09:00-18:00"))])
    assert set(found) == {"24x7", "office"}
    assert found["office"].tz == PRAGUE
    assert found["24x7"] == BusinessCalendar.always()
    assert set(calendars_by_name([])) == {"24x7"}


def test_calendars_by_name_refuses_duplicates_the_builtin_name_and_bad_calendars() -> None:
    ok = CalendarConfig(name="office", hours={"mon": "09:00-18:00"})
    with pytest.raises(CalendarError, match="calendar 'office': name: defined twice"):
        calendars_by_name([ok, ok])
    with pytest.raises(CalendarError, match="calendar '24x7': name: 24x7 is built in"):
        calendars_by_name([CalendarConfig(name="24x7", hours={"mon": "09:00-18:00"})])
    with pytest.raises(CalendarError) as info:
        calendars_by_name([CalendarConfig(name="a", hours={"mon": "9-18"}),
                           CalendarConfig(name="b", timezone="Bad/Zone", hours={"mon": "09:00-18:00"})])
    assert "calendar 'a': hours.mon" in str(info.value)
    assert "calendar 'b': timezone" in str(info.value)


# --- durations ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("30m", timedelta(minutes=30)),
    ("1h", timedelta(hours=1)),
    ("4h", timedelta(hours=4)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("3d", timedelta(hours=72)),
    ("2w", timedelta(days=14)),
    ("90s", timedelta(seconds=90)),
    ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
    (" 1H 30M ", timedelta(hours=1, minutes=30)),
    ("0m", timedelta(0)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "h", "30", "1.5h", "30m1h", "1h1h", "-1h", "1 hour", "abc", "1y",
                                  "99999999999w"])
def test_parse_duration_refuses_bad_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_durations_in_days_are_business_time_not_working_days() -> None:
    # "1d" on a 9-hour office day is 24 office hours: Monday 09:00 + 24h -> Wednesday 15:00.
    assert cal().add(utc(2026, 11, 23, 9), parse_duration("1d")) == utc(2026, 11, 25, 15)

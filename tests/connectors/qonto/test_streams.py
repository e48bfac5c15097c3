"""Value readers of the Qonto streams."""

from __future__ import annotations

from connectors.qonto.streams import capped_high_water


def test_the_high_water_mark_is_the_latest_timestamp_capped_at_the_start():
    records = [
        {"updated_at": "2026-01-02T03:04:05.120Z"},
        {"updated_at": "2026-01-02T03:04:05.990Z"},
        {"updated_at": None},
        {"updated_at": "2026-01-01T23:59:59.999Z"},
    ]
    start = "2026-02-01T00:00:00.000Z"
    assert capped_high_water(records, "updated_at", start) == "2026-01-02T03:04:05.990Z"
    # Never past the moment the stream started (a clock ahead must not skip later changes).
    assert capped_high_water(records, "updated_at", "2026-01-02T00:00:00.000Z") == "2026-01-02T00:00:00.000Z"
    # Timestamps written differently are compared as instants, and text that is no timestamp is skipped.
    mixed = [{"updated_at": "2026-01-02T04:00:00+02:00"}, {"updated_at": "2026-01-02T03:00:00Z"},
             {"updated_at": "not a date"}]
    assert capped_high_water(mixed, "updated_at", start) == "2026-01-02T03:00:00Z"
    alike_but_broken = [{"updated_at": "2026-01-02T03:04:05.120Z"}, {"updated_at": "9999-99-99T99:99:99.999Z"}]
    assert capped_high_water(alike_but_broken, "updated_at", start) == "2026-01-02T03:04:05.120Z"
    assert capped_high_water([{"updated_at": ""}], "updated_at", start) is None

"""Time stamps in the forms skyscore writes: one place, so every manifest, log line, history
event and job name agrees on the format (UTC, ``Z`` suffix)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(seconds: float | None = None) -> datetime:
    """Now (or ``seconds`` since the epoch) as an aware UTC datetime."""
    return datetime.now(UTC) if seconds is None else datetime.fromtimestamp(seconds, UTC)


def iso(moment: datetime | float | None = None, timespec: str = "auto") -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (``2026-12-06T22:41:05.123Z`` for milliseconds)."""
    when = moment if isinstance(moment, datetime) else utc(moment)
    return when.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_ms(moment: datetime | float | None = None) -> str:
    """:func:`iso` to the millisecond: the manifests' and log lines' form."""
    return iso(moment, "milliseconds")


def stamp(moment: datetime | float | None = None, *, separator: str = "T") -> str:
    """A compact, sortable stamp for names (``20261206T224105123456``; job ids, staging keys)."""
    when = moment if isinstance(moment, datetime) else utc(moment)
    return when.astimezone(UTC).strftime(f"%Y%m%d{separator}%H%M%S%f")


def parse_iso(text: str) -> datetime:
    """Parse what :func:`iso` writes (and any ISO 8601 with an offset) into an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

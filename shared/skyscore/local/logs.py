"""JSON log lines for the local runtime (one line per request and per file)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import msgspec

from skyscore.clock import iso_ms

if TYPE_CHECKING:
    pass


_log_encoder = msgspec.json.Encoder(enc_hook=str)  # log fields may hold paths or numpy scalars


# ------------------------------------------------------------------------------ logging
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _log_encoder.encode(entry).decode("utf-8", "replace")


_LOGGING_LOCK = threading.Lock()


def configure_logging(level: int = logging.INFO) -> bool:
    """Send ``skyscore`` logs to stderr as JSON lines, unless the application set up logging.

    Returns whether a handler was added (idempotent: a second call adds nothing).
    """
    with _LOGGING_LOCK:
        package = logging.getLogger("skyscore")
        if package.handlers or logging.getLogger().handlers:
            return False
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        package.addHandler(handler)
        package.setLevel(level)
        return True

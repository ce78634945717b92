"""One table that says which alarms are retraining triggers, and of which kind.

Classification is by explicit configuration only: an alarm listed in ``SKYSCORE_RETRAIN_ALARMS``
(``name=kind,...``) or whose description says ``alarm=<kind>``. Every other alarm (failed events,
dead letters, throttles) is ``operational``: it pages people and never starts a training job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skyscore.errors import ConfigError
from skyscore.runtime.events import RETRAIN_KINDS, AlarmKind, AlarmSignal

_TOKENS = re.compile(r"\b(model|alarm)=([A-Za-z0-9_.-]+)")


@dataclass(frozen=True, slots=True)
class AlarmTable:
    """Alarm name → kind, from configuration."""

    kinds: dict[str, AlarmKind] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, variable: str = "SKYSCORE_RETRAIN_ALARMS") -> AlarmTable:
        """``name=kind`` pairs separated by commas; a malformed entry names the variable."""
        kinds: dict[str, AlarmKind] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            name, sep, kind = (piece.strip() for piece in item.rpartition("="))
            if not sep or not name or kind not in RETRAIN_KINDS:
                raise ConfigError(
                    f"{variable}: {item!r} is not name=kind with kind one of "
                    + ", ".join(RETRAIN_KINDS)
                )
            kinds[name] = kind  # checked against RETRAIN_KINDS above
        return cls(kinds)

    def classify(self, signal: AlarmSignal) -> AlarmKind:
        """The configured kind, else the description's ``alarm=`` token, else operational."""
        if signal.name in self.kinds:
            return self.kinds[signal.name]
        named = dict(_TOKENS.findall(signal.description)).get("alarm", "")
        for kind in RETRAIN_KINDS:
            if named == kind:
                return kind
        return "operational"

    @staticmethod
    def model_of(signal: AlarmSignal, default: str) -> str | None:
        """The model an alarm is about: the signal's, its description's token, or the default."""
        token = dict(_TOKENS.findall(signal.description)).get("model")
        return signal.model or token or default or None

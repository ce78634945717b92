"""Settings read from the environment once per process, with errors that name the variable.

The cloud-neutral ones are typed fields; each backend reads its own (bucket, queue, job runner)
through :meth:`Settings.require` and :meth:`Settings.get`. Cloud defaults (the body limit of the
platform's HTTP front, the longest function run as the claim lease, the metrics line format)
come from the backend's :class:`CloudDefaults`, so none of them is hard-wired in the core.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from skyscore.coordination.claims import HEARTBEAT_SECONDS
from skyscore.errors import ConfigError
from skyscore.lifecycle.retrain import RetrainPolicy
from skyscore.runtime.alarms import AlarmTable

MetricsFormat = Literal["emf", "json"]


@dataclass(frozen=True, slots=True)
class CloudDefaults:
    """What differs by platform and is not the user's to configure first."""

    max_body_bytes: int
    lease_seconds: float
    metrics_format: MetricsFormat = "json"


@dataclass(frozen=True)
class Settings:
    """A snapshot of the ``SKYSCORE_*`` environment, parsed and checked once."""

    environ: Mapping[str, str]
    defaults: CloudDefaults
    model: str = ""
    prefix: str = ""
    max_body_bytes: int = 0
    lease_seconds: float = 0.0
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    fanout_bytes: int | None = None
    part_bytes: int | None = None
    retrain: RetrainPolicy = field(default_factory=RetrainPolicy)
    alarms: AlarmTable = field(default_factory=AlarmTable)
    retrain_models: tuple[str, ...] = ()

    @classmethod
    def from_env(
        cls, defaults: CloudDefaults, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read and check every cloud-neutral setting (a bad one raises :class:`ConfigError`)."""
        env = dict(os.environ if environ is None else environ)
        probe = cls(env, defaults)
        policy = RetrainPolicy()
        return cls(
            env,
            defaults,
            model=probe.get("SKYSCORE_MODEL"),
            prefix=probe.get("SKYSCORE_PREFIX"),
            max_body_bytes=probe.get_int("SKYSCORE_MAX_BODY_BYTES", defaults.max_body_bytes),
            lease_seconds=probe.get_float("SKYSCORE_LEASE_SECONDS", defaults.lease_seconds),
            heartbeat_seconds=probe.get_positive("SKYSCORE_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS),
            fanout_bytes=probe.get_int("SKYSCORE_FANOUT_BYTES", 0) or None,
            part_bytes=probe.get_int("SKYSCORE_PART_BYTES", 0) or None,
            retrain=RetrainPolicy(
                cooldown_seconds=probe.get_float(
                    "SKYSCORE_RETRAIN_COOLDOWN_SECONDS", policy.cooldown_seconds
                ),
                daily_cap=probe.get_int("SKYSCORE_RETRAIN_DAILY_CAP", policy.daily_cap),
                min_new_rows=probe.get_int("SKYSCORE_RETRAIN_MIN_ROWS", policy.min_new_rows),
                rollback_window_seconds=probe.get_float(
                    "SKYSCORE_ROLLBACK_WINDOW_SECONDS", policy.rollback_window_seconds
                ),
            ),
            alarms=AlarmTable.parse(probe.get("SKYSCORE_RETRAIN_ALARMS")),
            retrain_models=tuple(
                name.strip()
                for name in probe.get("SKYSCORE_RETRAIN_MODELS").split(",")
                if name.strip()
            ),
        )

    def get(self, name: str, default: str = "") -> str:
        """An optional setting (blank counts as unset)."""
        value = self.environ.get(name, "").strip()
        return value or default

    def require(self, name: str) -> str:
        """A required setting; missing, it raises :class:`ConfigError` naming the variable."""
        value = self.get(name)
        if not value:
            raise ConfigError(f"the function is not configured: set {name}", field=name)
        return value

    def get_int(self, name: str, default: int) -> int:
        """An integer setting."""
        text = self.get(name)
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {text!r}", field=name) from None

    def get_positive(self, name: str, default: float) -> float:
        """A number setting that must be above zero (an interval)."""
        value = self.get_float(name, default)
        if not value > 0:
            raise ConfigError(f"{name} must be above zero, not {self.get(name)!r}", field=name)
        return value

    def get_float(self, name: str, default: float) -> float:
        """A number setting."""
        text = self.get(name)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {text!r}", field=name) from None

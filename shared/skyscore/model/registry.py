"""Model registry: immutable numbered versions, movable aliases and an append-only decision log.

It lives in any :class:`~skyscore.ports.BlobStore` (a directory, S3, Azure Blob, GCS), so the
same registry works on every backend with no database. Layout::

    models/<name>/<version>/model.onnx       immutable artifact
    models/<name>/<version>/card.sha256      sha256 of card.json's bytes
    models/<name>/<version>/card.json        immutable card; written last: it *is* the version
    models/<name>/aliases/<alias>.json       {"version", "updated_at", "history": [...]}
    models/<name>/history/<UTC>-<action>-<version>.json   one immutable event per decision

Every load checks the card's sha256 against ``card.sha256`` and the artifact's against its
card, and every predictor checks the card against the ONNX graph (inputs, widths, classes), so
a tampered ``model.onnx`` or ``card.json`` is refused, never served. Serving processes pick up promotions through :meth:`get_predictor`,
which re-reads alias targets every ``refresh_seconds``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from skyscore.clock import iso
from skyscore.errors import (
    BadRequest,
    ConflictError,
    IntegrityError,
    ModelNotFound,
    NotFound,
    SkyscoreError,
)
from skyscore.model.card import (
    ModelCard,
    card_from_json,
    card_to_json,
    sha256_hex,
    verify_artifact,
    verify_card,
)
from skyscore.model.predictor import Predictor
from skyscore.ports import BlobStore

PREFIX = "models/"
DEFAULT_ALIAS = "production"
DEFAULT_REFRESH_SECONDS = 5.0
REFRESH_ENV = "SKYSCORE_REFRESH_SECONDS"
MAX_REGISTER_ATTEMPTS = 1000

_log = logging.getLogger(__name__)

# at most 255 characters: one file name on every file system the local store runs on
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
# Aliases start with a letter, so a reference is unambiguously a version or an alias.
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_ACTION = re.compile(r"^[a-z][a-z_]{0,63}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AliasConflict(ConflictError):
    """An alias move lost a race with another writer (any process, any host)."""

    slug = "alias-conflict"
    title = "Alias moved concurrently"


class AliasRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An alias object: its target and the targets it had before (newest last)."""

    version: str
    updated_at: str
    history: list[str] = []


_alias_decoder = msgspec.json.Decoder(AliasRecord)


def _encode_extra(obj: Any) -> Any:
    """Event details often carry numpy scalars or arrays (gate metrics): store them as JSON."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a registry event")


_json_encoder = msgspec.json.Encoder(order="deterministic", enc_hook=_encode_extra)


def is_version(ref: str) -> bool:
    """Whether a reference names a version (``"3"``) rather than an alias (``"production"``)."""
    return bool(_VERSION.match(ref))


def _parse_card(name: str, version: str, data: bytes, action: str) -> ModelCard:
    """The card stored for (name, version): valid JSON, and about that very version."""
    try:
        card = card_from_json(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise IntegrityError(
            f"model {name!r} version {version!r}: card.json is invalid: {exc}"
        ) from None
    if card.name != name or card.version != version:
        raise IntegrityError(
            f"models/{name}/{version}/card.json describes model {card.name!r} version "
            f"{card.version!r}; refusing to {action} it"
        )
    return card


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 255 characters)",
            field="name",
        )
    return name


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise BadRequest(
            f"invalid alias {alias!r}: use letters, digits, '_', '.', '-', starting with a letter",
            field="alias",
        )
    return alias


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BadRequest(
            f"invalid version {version!r}: versions are positive integers", field="version"
        )
    return version


def default_refresh_seconds() -> float:
    """``SKYSCORE_REFRESH_SECONDS`` if set, else 5 seconds."""
    raw = os.environ.get(REFRESH_ENV, "").strip()
    if not raw:
        return DEFAULT_REFRESH_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{REFRESH_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0:  # negative or NaN
        raise ValueError(f"{REFRESH_ENV}={raw!r} must be zero or more seconds")
    return value


@dataclass(slots=True)
class _AliasEntry:
    predictor: Predictor
    checked_at: float


class ModelRegistry:
    """Versions, aliases and decisions for every model in one blob store.

    Thread-safe. Versions are immutable once registered; an alias is a small object that
    promotions overwrite (concurrent promotions of one alias from different processes are
    last-writer-wins, and every one of them is in the history log).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        refresh_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.refresh_seconds = (
            default_refresh_seconds() if refresh_seconds is None else float(refresh_seconds)
        )
        self._clock = clock
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], Predictor] = {}
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._aliases: dict[tuple[str, str], _AliasEntry] = {}
        self._refused: set[tuple[str, str, str]] = set()  # refusals already logged
        self._last_event_us = 0

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store!r})"

    # -- keys ----------------------------------------------------------------------------------

    @staticmethod
    def _model_key(name: str, version: str) -> str:
        return f"{PREFIX}{name}/{version}/model.onnx"

    @staticmethod
    def _card_key(name: str, version: str) -> str:
        return f"{PREFIX}{name}/{version}/card.json"

    @staticmethod
    def _card_sha_key(name: str, version: str) -> str:
        return f"{PREFIX}{name}/{version}/card.sha256"

    @staticmethod
    def _alias_key(name: str, alias: str) -> str:
        return f"{PREFIX}{name}/aliases/{alias}.json"

    def _now(self) -> datetime:
        return self._wall_clock().astimezone(UTC)

    def _iso_now(self) -> str:
        return iso(self._now())

    # -- reading -------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Names with at least one registered version, sorted."""
        names: set[str] = set()
        for info in self.store.list(PREFIX):
            parts = info.key[len(PREFIX) :].split("/")
            if len(parts) == 3 and parts[2] == "card.json" and is_version(parts[1]):
                names.add(parts[0])
        return sorted(names)

    def _version_numbers(self, name: str, *, claimed: bool = False) -> list[int]:
        """Registered versions (those with a card); with ``claimed``, also half-written ones."""
        prefix = f"{PREFIX}{name}/"
        numbers: set[int] = set()
        for info in self.store.list(prefix):
            parts = info.key[len(prefix) :].split("/")
            if len(parts) != 2 or not is_version(parts[0]):
                continue
            if parts[1] == "card.json" or (claimed and parts[1] == "model.onnx"):
                numbers.add(int(parts[0]))
        return sorted(numbers)

    def list_versions(self, name: str) -> list[str]:
        """Registered versions, oldest first (numeric order); empty for an unknown model."""
        return [str(n) for n in self._version_numbers(_check_name(name))]

    def _require_model(self, name: str) -> list[str]:
        versions = self.list_versions(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r} in the registry at {self.store.uri}")
        return versions

    def alias_history(self, name: str, alias: str = DEFAULT_ALIAS) -> list[str]:
        """Earlier targets of ``alias``, oldest first (what rollback would return to)."""
        record = self._read_alias(name, alias)
        return [] if record is None else list(record.history)

    def _read_alias(self, name: str, alias: str) -> AliasRecord | None:
        return self._read_alias_versioned(name, alias)[0]

    def _read_alias_versioned(self, name: str, alias: str) -> tuple[AliasRecord | None, str | None]:
        """The alias record and the store's version token of it (``None, None``: no alias)."""
        try:
            data, token = self.store.read_versioned(self._alias_key(name, alias))
        except NotFound:
            return None, None
        try:
            return _alias_decoder.decode(data), token
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"model {name!r}: alias {alias!r} is corrupt: {exc}") from None

    def alias_target(self, name: str, alias: str = DEFAULT_ALIAS) -> str | None:
        """The version an alias points at, or ``None`` when there is no such alias."""
        record = self._read_alias(_check_name(name), _check_alias(alias))
        return None if record is None else record.version

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of a model and its target version."""
        _check_name(name)
        prefix = f"{PREFIX}{name}/aliases/"
        out: dict[str, str] = {}
        for info in self.store.list(prefix):
            alias = info.key[len(prefix) :]
            if not alias.endswith(".json") or "/" in alias:
                continue
            alias = alias[: -len(".json")]
            if not _ALIAS.match(alias):
                continue
            record = self._read_alias(name, alias)
            if record is not None:
                out[alias] = record.version
        return out

    def history(self, name: str) -> list[dict[str, Any]]:
        """The model's decision log (registered, promoted, rolled_back), oldest first."""
        self._require_model(name)
        prefix = f"{PREFIX}{name}/history/"
        events: list[dict[str, Any]] = []
        for info in self.store.list(prefix):
            if not info.key.endswith(".json"):
                continue
            try:
                event = msgspec.json.decode(self.store.read_bytes(info.key))
            except NotFound:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def resolve(self, name: str, ref: str = DEFAULT_ALIAS) -> str:
        """The version a reference names: a version as is (checked), an alias's target."""
        _check_name(name)
        if is_version(ref):
            if not self.store.exists(self._card_key(name, ref)):
                versions = self._require_model(name)
                raise ModelNotFound(
                    f"model {name!r} has no version {ref!r} (versions: {', '.join(versions)})"
                )
            return ref
        if not isinstance(ref, str) or not _ALIAS.match(ref):
            raise ModelNotFound(
                f"model {name!r}: {ref!r} is neither a version (1, 2, ...) nor an alias name"
            )
        record = self._read_alias(name, ref)
        if record is None:
            self._require_model(name)
            known = sorted(self.aliases(name))
            raise ModelNotFound(
                f"model {name!r} has no alias {ref!r} "
                f"(aliases: {', '.join(known) if known else 'none; promote a version first'})"
            )
        return record.version

    def card(self, name: str, ref: str = DEFAULT_ALIAS) -> ModelCard:
        """A version's card without reading its artifact (listing, documentation)."""
        version = self.resolve(name, ref)
        return self._read_card(name, version)

    def _read_card(self, name: str, version: str) -> ModelCard:
        try:
            data = self.store.read_bytes(self._card_key(name, version))
        except NotFound:
            raise ModelNotFound(f"model {name!r} has no version {version!r}") from None
        card = _parse_card(name, version, data, "load")
        verify_card(name, version, data, self._recorded_card_sha(name, version))
        return card

    def _recorded_card_sha(self, name: str, version: str) -> str | None:
        try:
            raw = self.store.read_bytes(self._card_sha_key(name, version))
        except NotFound:
            return None
        return raw.decode("ascii", "replace").strip()

    def seal_card(self, name: str, version: str) -> str:
        """Record the checksum of a card registered before cards had one, and return it.

        The card is checked against its graph first (a card that does not match is refused,
        and stays unsealed); a card that already has a checksum is verified, not resealed.
        Only for a card you have looked at: sealing is what makes a card trusted.
        """
        _check_name(name)
        _check_version(version)
        key = self._card_sha_key(name, version)
        if self.store.exists(key):
            self._read_card(name, version)
            return self._recorded_card_sha(name, version) or ""
        try:
            data = self.store.read_bytes(self._card_key(name, version))
            onnx_bytes = self.store.read_bytes(self._model_key(name, version))
        except NotFound:
            raise ModelNotFound(f"model {name!r} has no version {version!r}") from None
        card = _parse_card(name, version, data, "seal")
        Predictor(card, onnx_bytes)  # checksum of the artifact, and the card against its graph
        digest = sha256_hex(data)
        try:
            self.store.write_bytes(key, digest.encode(), if_absent=True)
        except ConflictError:  # sealed concurrently: verify what the other writer recorded
            self._read_card(name, version)
        return digest

    def load(self, name: str, ref: str = DEFAULT_ALIAS) -> tuple[ModelCard, bytes]:
        """Card and artifact of a version or alias, checksum verified on every call."""
        version = self.resolve(name, ref)
        card = self._read_card(name, version)
        try:
            onnx_bytes = self.store.read_bytes(self._model_key(name, version))
        except NotFound:
            raise IntegrityError(
                f"model {name!r} version {version!r}: card.json exists but model.onnx is missing"
            ) from None
        verify_artifact(card, onnx_bytes)
        return card, onnx_bytes

    # -- writing -------------------------------------------------------------------------------

    def register(
        self, card: ModelCard, onnx_bytes: bytes, *, reason: str = "", name: str | None = None
    ) -> ModelCard:
        """Store a new version (``name`` defaults to the card's) and return its final card.

        The artifact is claimed first with an ``if_absent`` write on ``model.onnx``: exactly
        one concurrent registrant wins each number, the others move on to the next. The card
        is written after its artifact, so a reader never sees a version without its model.
        A registrant that dies in between leaves an unused number behind (a gap, not a version).
        """
        name = _check_name(name if name is not None else card.name)
        verify_artifact(msgspec.structs.replace(card, name=name), onnx_bytes, action="register")
        # a card that does not describe its graph is refused now, not at its first request
        Predictor(msgspec.structs.replace(card, name=name), onnx_bytes, verify=False)
        candidate = 0
        for _ in range(MAX_REGISTER_ATTEMPTS):
            numbers = self._version_numbers(name, claimed=True)
            candidate = max(candidate, numbers[-1] if numbers else 0) + 1
            version = str(candidate)
            try:
                self.store.write_bytes(self._model_key(name, version), onnx_bytes, if_absent=True)
            except ConflictError:
                continue
            break
        else:
            raise ConflictError(
                f"model {name!r}: could not claim a version number after "
                f"{MAX_REGISTER_ATTEMPTS} attempts"
            )
        final = msgspec.structs.replace(card, name=name, version=version)
        card_bytes = card_to_json(final)
        # the checksum first: once card.json exists the version does, and it must verify
        self.store.write_bytes(
            self._card_sha_key(name, version), sha256_hex(card_bytes).encode(), if_absent=True
        )
        self.store.write_bytes(self._card_key(name, version), card_bytes, if_absent=True)
        self.record(name, "registered", version, reason=reason, metrics=dict(final.metrics))
        return final

    def promote(
        self,
        name: str,
        version: str,
        alias: str = DEFAULT_ALIAS,
        reason: str = "",
        details: dict[str, Any] | None = None,
        *,
        expect: str | None = None,
    ) -> ModelCard:
        """Point ``alias`` at ``version`` (verified first); the old target goes on its history.

        The move is a conditional write on the alias object as it was read: a concurrent move
        by any process makes this one fail with :class:`AliasConflict` instead of silently
        overwriting it. ``expect`` (the version a quality gate compared against) also fails
        it when the alias no longer points there. Promoting the current target again changes
        nothing and records nothing.
        """
        _check_name(name)
        _check_alias(alias)
        _check_version(version)
        card, _ = self.load(name, version)  # refuse to promote a missing or tampered artifact
        current, token = self._read_alias_versioned(name, alias)
        if current is not None and current.version == version:
            return card
        if expect is not None and (current is None or current.version != expect):
            found = None if current is None else current.version
            raise AliasConflict(
                f"model {name!r}: alias {alias!r} points at {found!r}, not {expect!r}: "
                "it was moved since the candidate was judged"
            )
        history = [] if current is None else [*current.history, current.version]
        self._write_alias(
            name, alias, AliasRecord(version=version, updated_at="", history=history), token
        )
        self.record(
            name,
            "promoted",
            version,
            alias=alias,
            previous=None if current is None else current.version,
            reason=reason,
            metrics=dict(card.metrics),
            details=details,
        )
        return card

    def rollback(
        self,
        name: str,
        alias: str = DEFAULT_ALIAS,
        reason: str = "",
        details: dict[str, Any] | None = None,
    ) -> str:
        """Point ``alias`` back at its previous target; returns that version."""
        _check_name(name)
        _check_alias(alias)
        current, token = self._read_alias_versioned(name, alias)
        if current is None:
            self._require_model(name)
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}: nothing to roll back")
        if not current.history:
            raise ConflictError(
                f"model {name!r}: alias {alias!r} has pointed only at version "
                f"{current.version!r}; there is no previous version to roll back to"
            )
        target = current.history[-1]
        card, _ = self.load(name, target)  # refuse to roll back onto a broken artifact
        self._write_alias(
            name,
            alias,
            AliasRecord(version=target, updated_at="", history=current.history[:-1]),
            token,
        )
        self.record(
            name,
            "rolled_back",
            target,
            alias=alias,
            previous=current.version,
            reason=reason,
            metrics=dict(card.metrics),
            details=details,
        )
        return target

    def _write_alias(self, name: str, alias: str, record: AliasRecord, token: str | None) -> None:
        """Compare-and-swap on the alias object: create-only when there was none, else only
        if it is still at ``token``; a lost race raises :class:`AliasConflict`."""
        record = msgspec.structs.replace(record, updated_at=self._iso_now())
        key = self._alias_key(name, alias)
        try:
            if token is None:
                self.store.write_bytes(key, _json_encoder.encode(record), if_absent=True)
            else:
                self.store.write_bytes(key, _json_encoder.encode(record), if_version=token)
        except ConflictError:
            raise AliasConflict(
                f"model {name!r}: alias {alias!r} was moved by someone else at the same time; "
                "nothing was changed: read it again and retry"
            ) from None

    def record(
        self,
        name: str,
        action: str,
        version: str,
        *,
        alias: str | None = None,
        previous: str | None = None,
        reason: str = "",
        metrics: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one immutable event to the decision log (e.g. a rejected candidate).

        The event's key sorts by time, strictly increasing within this registry object; an
        event written by another process in the same microsecond moves this one on by one.
        """
        _check_name(name)
        if not _ACTION.match(action):
            raise BadRequest(f"invalid action {action!r}: lowercase letters and '_'")
        if not _VERSION.match(version):
            raise BadRequest(f"invalid version {version!r}: versions are positive integers")
        now = self._now()
        now_us = (now - _EPOCH) // timedelta(microseconds=1)
        while True:
            with self._lock:
                stamp_us = max(now_us, self._last_event_us + 1)
                self._last_event_us = stamp_us
            stamp = _EPOCH + timedelta(microseconds=stamp_us)
            event: dict[str, Any] = {
                "at": iso(stamp),
                "action": action,
                "model": name,
                "version": version,
                "alias": alias,
                "previous": previous,
                "reason": reason,
                "metrics": metrics or {},
                "details": details or {},
            }
            key = f"{PREFIX}{name}/history/{stamp:%Y%m%dT%H%M%S%fZ}-{action}-{version}.json"
            try:
                self.store.write_bytes(key, _json_encoder.encode(event), if_absent=True)
            except ConflictError:  # another process wrote an event in the same microsecond
                continue
            return event

    # -- serving -------------------------------------------------------------------------------

    def get_predictor(self, name: str, ref: str = DEFAULT_ALIAS) -> Predictor:
        """A ready predictor; alias targets are re-read at most every ``refresh_seconds``.

        A serving process therefore follows promotions and rollbacks without a restart; if
        re-reading fails on a storage error it keeps serving the version it has. A version
        reference is immutable and cached for the life of the registry object.
        """
        key = (name, ref)
        now = self._clock()
        # The hot path (every HTTP request): a fresh entry exists only for a name and alias
        # that passed the checks below, and reading one dict entry needs no lock.
        entry = self._aliases.get(key)
        if entry is not None and now - entry.checked_at < self.refresh_seconds:
            return entry.predictor
        _check_name(name)
        if is_version(ref):
            return self._version_predictor(name, ref)
        try:
            version = self.resolve(name, ref)
            predictor = self._version_predictor(name, version)
        except IntegrityError as error:
            # The alias moved to a version that is refused (tampered or mismatched card or
            # artifact): a running server goes on serving the verified version it has, and
            # says why once per refused version.
            if entry is None:
                raise
            refused = (name, ref, error.detail)
            if refused not in self._refused:
                self._refused.add(refused)
                _log.error(
                    "%s@%s: %s; still serving version %s",
                    name,
                    ref,
                    error.detail,
                    entry.predictor.version,
                )
            predictor = entry.predictor
        except SkyscoreError:
            raise
        except Exception:
            # A storage hiccup (network, throttling) must not take down a serving process that
            # already has a verified model: keep serving it and try again after the interval.
            if entry is None:
                raise
            _log.warning(
                "re-reading alias %s@%s failed; serving the cached version %s",
                name,
                ref,
                entry.predictor.version,
                exc_info=True,
            )
            predictor = entry.predictor
        with self._lock:
            latest = self._aliases.get(key)
            if latest is None or latest.checked_at <= now:
                self._aliases[key] = _AliasEntry(predictor, now)
        return predictor

    def _version_predictor(self, name: str, version: str) -> Predictor:
        """One predictor per version, loaded (and verified) once even under concurrent calls."""
        key = (name, version)
        with self._lock:
            predictor = self._versions.get(key)
            if predictor is not None:
                return predictor
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                predictor = self._versions.get(key)
            if predictor is not None:
                return predictor
            card, onnx_bytes = self.load(name, version)
            predictor = Predictor(card, onnx_bytes, verify=False)  # load() just verified it
            with self._lock:
                self._versions[key] = predictor
                self._load_locks.pop(key, None)
            return predictor

    def clear_cache(self) -> None:
        """Forget cached predictors and alias targets (the next call reloads from the store)."""
        with self._lock:
            self._versions.clear()
            self._aliases.clear()

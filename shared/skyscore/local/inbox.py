"""The local inbox: files dropped into ``<home>/inbox/`` are scored by the clouds' pipeline.

* ``inbox/file.csv`` uses the default model (``--model``, or the only model there is);
  ``inbox/<model>/file.csv`` picks the model. Dotfiles and ``.tmp``/``.part`` names are ignored,
  symlinks are never followed (a link is moved to ``failed/`` with its reason), and a file
  is taken only once its size and mtime are unchanged across two polls. Writers should write
  elsewhere (or under a ``.part`` name) and rename the complete file into the inbox: a file
  still being written in place after it was taken is detected (its size or mtime changed) and
  fails instead of being reported scored.
* A taken file moves to ``processed/<model>/<name>`` (``name-1``, ``name-2``... when an earlier
  input had that name), and is scored there: ``predictions/<model>/<stem>.predictions.<ext>``,
  ``.errors.jsonl``, ``.report.html`` and ``.manifest.json``, exactly as on the clouds.
* The same bytes again under the same name are the same input: not scored twice by one model
  version. A new production version scores it again.
* A file-level error (wrong content for its extension, unknown model, missing columns) moves
  the input to ``failed/`` beside a ``<name>.error.json`` reason: a bad file never loops.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from skyscore.documents import pretty_json
from skyscore.errors import BadRequest, Busy, SkyscoreError
from skyscore.local.home import LocalHome
from skyscore.serving.dataplane import (
    ModelProvider,
)

if TYPE_CHECKING:
    from skyscore.batch.scorer import BatchResult
    from skyscore.model.predictor import Predictor
    from skyscore.monitoring.metrics import Metrics

from skyscore.clock import iso_ms

DEFAULT_POLL_SECONDS = 1.0
PROCESSED = "processed"
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
EMPTY_FILE_GRACE_SECONDS = 2.0  # a 0-byte file may be a writer that has not started yet
_BLOCK = 1 << 20

_log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------------------ inbox
@dataclass(slots=True)
class FileOutcome:
    """What the watcher did with one file (also logged as one JSON line)."""

    input: str
    model: str | None
    status: str  # scored, duplicate, in_progress, failed, vanished, or stuck (could not be moved)
    moved_to: str | None = None
    output: str | None = None
    rows_scored: int = 0
    rows_failed: int = 0
    detail: str | None = None
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """Log fields (no ``None`` values)."""
        out = {
            "input": self.input,
            "model": self.model,
            "status": self.status,
            "moved_to": self.moved_to,
            "output": self.output,
            "rows_scored": self.rows_scored,
            "rows_failed": self.rows_failed,
            "detail": self.detail,
            "duration_ms": self.duration_ms,
            **self.extra,
        }
        return {k: v for k, v in out.items() if v is not None}


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _unique(directory: Path, name: str) -> Path:
    """``directory/name``, or ``stem-1.ext``, ``stem-2.ext``... when that is taken."""
    target = directory / name
    if not target.exists():
        return target
    base = Path(name)
    stem, suffix = base.stem, base.suffix
    for counter in range(1, 1_000_000):
        candidate = directory / f"{stem}-{counter}{suffix}"
        if (
            not candidate.exists()
            and not candidate.with_name(candidate.name + ".error.json").exists()
        ):
            return candidate
    raise FileExistsError(f"no free name for {name} in {directory}")


class _ProviderPredictors:
    """A model provider seen as the scorer's source of predictors (the current version)."""

    def __init__(self, provider: ModelProvider) -> None:
        self.provider = provider

    def get_predictor(self, name: str, ref: str = "production", /) -> Predictor:
        return self.provider.get(name)


class InboxWatcher:
    """Scores files dropped into ``inbox`` once they are stable; see the module docstring.

    A stable file is first moved (renamed, atomically) to ``processed/<model>/<name>`` under a
    name no other input has, so a later file of the same name, or a writer that replaces the
    inbox file, never touches it; then the same :class:`~skyscore.batch.scorer.BatchScorer` as
    the clouds' scores that key: same output names, manifest, idempotency, failure handling,
    HTML report and drift hook.
    """

    def __init__(
        self,
        home: LocalHome,
        provider: ModelProvider,
        *,
        default_model: str | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        metrics: Metrics | None = None,
        on_alarm: Callable[[str, str, dict[str, Any]], object] | None = None,
        after_poll: Callable[[], object] | None = None,
    ) -> None:
        from skyscore.adapters.local import LocalBlobStore
        from skyscore.batch.scorer import BatchScorer, Layout

        self.metrics = metrics
        self.on_alarm = on_alarm
        self.after_poll = after_poll
        self.root = home.root
        self.inbox = home.inbox
        self.predictions = home.predictions
        self.processed = home.root / PROCESSED
        self.failed = home.root / "failed"
        self.provider = provider
        self.default_model = default_model
        self.poll_seconds = poll_seconds
        self.store = LocalBlobStore(home.root)
        self.scorer = BatchScorer(
            self.store,
            _ProviderPredictors(provider),
            layout=Layout(incoming=f"{PROCESSED}/"),
            metrics=metrics,
            on_drift=on_alarm,
        )
        self._seen: dict[Path, tuple[int, int, float]] = {}  # size, mtime_ns, first seen
        self._stuck: dict[Path, tuple[int, int]] = {}  # files that could not even be moved
        for directory in (self.inbox, self.predictions, self.processed, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    # -- scanning ------------------------------------------------------------------------------

    def _candidates(self) -> Iterator[tuple[Path, str | None]]:
        """(file, model from its folder or None) for every file that may be an input; symlinks
        are never followed (one pointing outside the inbox is not an input)."""
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            self.inbox.mkdir(parents=True, exist_ok=True)
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if _ignored(entry.name):
                continue
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), None
            elif entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                        if not _ignored(inner.name) and inner.is_file(follow_symlinks=False):
                            yield Path(inner.path), entry.name

    def _links(self) -> Iterator[tuple[Path, str | None]]:
        """Symlinks in the inbox or a model folder of it (never followed: one may point
        anywhere, and a link into the inbox would score a file twice)."""
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(self.inbox), key=lambda e: e.name):
                if _ignored(entry.name):
                    continue
                if entry.is_symlink():
                    yield Path(entry.path), None
                elif entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                            if not _ignored(inner.name) and inner.is_symlink():
                                yield Path(inner.path), entry.name

    def _refuse_link(self, path: Path, model: str | None) -> FileOutcome:
        """Move a symlink itself (not what it points to) to ``failed/`` beside a reason."""
        outcome = FileOutcome(input=str(path.relative_to(self.inbox)), model=model, status="failed")
        error = BadRequest(
            f"{outcome.input} is a symbolic link; the inbox does not follow links (one may "
            "point outside it): copy or move the file itself into the inbox"
        )
        self._fail(path, outcome, error.to_problem())
        _log.warning("inbox file", extra={"fields": outcome.fields()})
        return outcome

    def poll(self) -> list[FileOutcome]:
        """One pass: note new or changing files, process those unchanged since the last pass."""
        outcomes: list[FileOutcome] = []
        present: set[Path] = set()
        now = time.monotonic()
        for path, model in self._candidates():
            present.add(path)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if self._stuck.get(path) == signature:
                continue
            previous = self._seen.get(path)
            if previous is None or previous[:2] != signature:
                self._seen[path] = (*signature, now)
                continue
            if st.st_size == 0 and now - previous[2] < max(
                EMPTY_FILE_GRACE_SECONDS, 2 * self.poll_seconds
            ):
                continue
            del self._seen[path]
            outcome = self.process(path, model)
            if outcome.status == "stuck":
                self._stuck[path] = signature
            outcomes.append(outcome)
        for link, model in self._links():
            outcomes.append(self._refuse_link(link, model))
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._stuck) - present:
            del self._stuck[gone]
        return outcomes

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; never raises (a failing pass is logged and retried)."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:
                _log.exception("inbox poll failed; retrying in %.1fs", self.poll_seconds)
            if self.after_poll is not None:
                try:
                    self.after_poll()
                except Exception:
                    _log.exception("retraining tick failed; retrying")
            stop.wait(self.poll_seconds)

    # -- one file ------------------------------------------------------------------------------

    def _model_for(self, model: str | None) -> str:
        if model is not None:
            return model
        if self.default_model:
            return self.default_model
        names = self.provider.names()
        if len(names) == 1:
            return names[0]
        raise BadRequest(
            "no model for a file dropped straight into the inbox: put it in inbox/<model>/ "
            "or start the runtime with a default model (skyscore serve --model NAME)"
            + (f"; models: {', '.join(names)}" if names else "; there are no models yet")
        )

    def process(self, path: Path, folder_model: str | None) -> FileOutcome:
        """Take one stable file into ``processed/``, score it, and report (never raises)."""
        started = time.perf_counter()
        outcome = FileOutcome(
            input=str(path.relative_to(self.inbox)), model=folder_model, status=""
        )
        taken: Path | None = None
        try:
            model = self._model_for(folder_model)
            outcome.model = model
            self.provider.get(model)  # an unknown model fails before the file moves
            from skyscore.formats import detect_format

            detect_format(path.name)  # so does an unsupported extension
            taken, key = self._take(path, model)
            outcome.moved_to = str(taken)
            result = self.scorer.score_upload(key, owner=f"inbox:{key}")
            self._report(result, outcome)
            if result.status == "failed":
                self._fail(taken, outcome, result.problem or {"detail": result.detail})
        except FileNotFoundError as exc:
            if path.exists() or taken is not None:  # something else is missing: a failure
                self._fail(taken or path, outcome, _problem_for(exc))
            else:
                outcome.status = "vanished"
                outcome.detail = "the file disappeared before it was scored"
        except Busy as busy:  # the same bytes, dropped twice at once: the other one scores
            outcome.status = "in_progress"
            outcome.detail = busy.detail
        except SkyscoreError as error:
            self._fail(taken or path, outcome, error.to_problem())
        except Exception as exc:
            _log.exception("scoring %s failed unexpectedly", path)
            self._fail(taken or path, outcome, _problem_for(exc))
        outcome.duration_ms = round((time.perf_counter() - started) * 1e3, 3)
        level = logging.WARNING if outcome.status in ("failed", "stuck") else logging.INFO
        _log.log(level, "inbox file", extra={"fields": outcome.fields()})
        return outcome

    def _take(self, path: Path, model: str) -> tuple[Path, str]:
        """Move the file to a name of its own under ``processed/<model>/``: the snapshot that
        is scored. A file whose bytes equal an earlier input of that name is the same input
        again: the earlier key is scored (a duplicate when its model version is unchanged)."""
        directory = self.processed / model
        directory.mkdir(parents=True, exist_ok=True)
        original = directory / path.name
        same = original.exists() and _sha256(original) == _sha256(path)
        target = _unique(directory, path.name)
        os.replace(path, target)
        scored = original if same else target
        return target, scored.relative_to(self.root).as_posix()

    def _report(self, result: BatchResult, outcome: FileOutcome) -> None:
        from skyscore.monitoring.drift import summary

        outcome.status = result.status
        outcome.detail = result.detail or None
        outcome.output = None if result.output is None else str(self.root / result.output)
        manifest = result.manifest or {}
        outcome.rows_scored = int(manifest.get("rows_scored") or 0)
        outcome.rows_failed = int(manifest.get("rows_failed") or 0)
        if result.status == "scored":
            model = manifest.get("model") or {}
            outcome.extra = {
                "drift": summary(manifest.get("drift") or {}),
                "version": model.get("version"),
                "input_sha256": manifest.get("input_sha256"),
            }

    def _move(self, path: Path, directory: Path) -> Path:
        target = _unique(directory, path.name)
        os.replace(path, target)
        return target

    def _fail(self, path: Path, outcome: FileOutcome, problem: dict[str, Any]) -> None:
        outcome.status = "failed"
        outcome.detail = str(problem.get("detail", ""))
        try:
            target = self._move(path, self.failed)
        except FileNotFoundError:
            outcome.status = "vanished"
            return
        except OSError as exc:
            outcome.status = "stuck"
            outcome.detail = f"{outcome.detail}; and it could not be moved to failed/: {exc}"
            return
        outcome.moved_to = str(target)
        reason = {
            "input": outcome.input,
            "model": outcome.model,
            "failed_at": iso_ms(),
            "reason": outcome.detail,
            "problem": problem,
        }
        report = target.with_name(target.name + ".error.json")
        with contextlib.suppress(OSError):
            report.write_bytes(pretty_json(reason))


def _problem_for(exc: BaseException) -> dict[str, Any]:
    """A problem for an untyped failure: its type and message, never a traceback."""
    return SkyscoreError(f"{type(exc).__name__}: {exc}").to_problem()

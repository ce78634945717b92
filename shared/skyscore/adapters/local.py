"""Local adapters: the embedded runtime's blob store, queue and job runner, on a plain directory.

They are the default backend (``skyscore serve`` on a laptop, tests, CI) and the reference for
the cloud adapters' semantics: atomic writes, race-safe ``if_absent``, an at-least-once queue
with visibility timeouts that works across processes, and training jobs as subprocesses.
Only the standard library and msgspec: nothing here slows a cold start.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlparse

import msgspec

from skyscore import clock
from skyscore.errors import ConflictError, InvalidKey, NotFound
from skyscore.ports import (
    BlobStore,
    JobRunner,
    JobSpec,
    JobState,
    JobStatus,
    Message,
    ObjectInfo,
    QueuePort,
)

TMP_SUFFIX = ".skyscore-tmp"


def path_from_uri(uri: str | os.PathLike[str]) -> Path:
    """A local path from a plain path or a ``file://`` URI; other schemes are not local."""
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{text!r}: file URIs on another host are not local")
        return Path(unquote(parsed.path))
    # One-letter "schemes" are Windows drive letters, not URIs.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"{text!r} is not a local path or file:// URI")
    return Path(text)


def _etag(st: os.stat_result) -> str:
    """Changes whenever a file is replaced: every write makes a new inode and mtime."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Blob store
# --------------------------------------------------------------------------------------------


class _Window(io.RawIOBase):
    """At most ``limit`` bytes of ``raw`` from where it stands."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def read(self, size: int | None = -1, /) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        return data


class LocalBlobStore(BlobStore):
    """Objects as files under ``root``; a key's ``/`` separators become directories.

    Writes go to a temporary file in the destination directory and are renamed into place, so
    readers never see a torn object. ``if_absent`` writes publish with ``os.link``, which fails
    atomically when the key exists, so two racing writers cannot both succeed.

    The version is ``<inode>-<size>-<mtime_ns>`` (hex), not a content hash: hashing would read
    every byte of large inputs on each ``stat``. Each write creates a new file (new inode and
    mtime), so the version changes whenever the object is replaced.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = path_from_uri(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- keys ----------------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        """The file behind ``key``; keys that could escape the root are refused."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise InvalidKey(f"invalid blob key {key!r}: must be a relative '/'-separated path")
        parts = key.split("/")
        for part in parts:
            if part in ("", ".", ".."):
                raise InvalidKey(f"invalid blob key {key!r}: empty, '.' or '..' segment")
        if parts[-1].endswith(TMP_SUFFIX):
            raise InvalidKey(f"invalid blob key {key!r}: {TMP_SUFFIX!r} marks temporary files")
        path = self.root.joinpath(*parts)
        # A symlink inside the root must not lead outside it either.
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidKey(f"invalid blob key {key!r}: resolves outside {self.root}")
        return path

    def _temp_path(self, path: Path) -> Path:
        return path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")

    # -- reads ---------------------------------------------------------------------------------

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object, versioned by the identity of the file it was read from."""
        path = self.path(key)
        try:
            with path.open("rb") as handle:
                st = os.fstat(handle.fileno())
                if not S_ISREG(st.st_mode):
                    raise IsADirectoryError(str(path))
                return handle.read(), _etag(st)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in {self.uri}") from None

    def read_bytes(self, key: str) -> bytes:
        """The whole object."""
        path = self.path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in {self.uri}") from None

    def uri_for(self, key: str) -> str:
        """``file://`` URI of the object's file (or of a prefix ending in ``/``)."""
        if not key:
            return self.uri + "/"
        uri = self.path(key.rstrip("/")).as_uri()
        return uri + "/" if key.endswith("/") else uri

    def key_for_object(self, container: str, name: str) -> str | None:
        """A local event names the root directory as its container."""
        if Path(container).expanduser().resolve() != self.root:
            return None
        try:
            self.path(name)
        except ValueError:
            return None
        return name

    def key_for_uri(self, uri: str) -> str | None:
        """The key of a ``file://`` URI or path under the root, else ``None``."""
        try:
            path = path_from_uri(uri).expanduser().resolve()
        except ValueError:
            return None
        if path == self.root or self.root not in path.parents:
            return None
        key = path.relative_to(self.root).as_posix()
        return key + "/" if uri.endswith("/") else key

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A buffered binary file: streams any size."""
        path = self.path(key)
        try:
            if path.is_dir():
                raise IsADirectoryError(str(path))
            return cast(BinaryIO, path.open("rb"))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in {self.uri}") from None

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, end: int) -> Iterator[BinaryIO]:
        """Bytes ``[start, end)``: a seek, then at most ``end - start`` bytes."""
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        with self.open_read(key) as handle:
            handle.seek(start)
            yield cast(BinaryIO, _Window(handle, end - start))

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and version (see the class docstring), or ``None``."""
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, _etag(st))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order; unfinished writes' temporary files are hidden."""
        directory, _, _ = prefix.rpartition("/")
        base = self.path(directory) if directory else self.root
        if not base.is_dir():
            return
        found: list[tuple[str, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            head = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for filename in filenames:
                key = head + filename
                if filename.endswith(TMP_SUFFIX) or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:  # deleted while we walked
                    continue
                found.append((key, st))
        found.sort(key=lambda item: item[0])
        for key, st in found:
            yield ObjectInfo(key, st.st_size, _etag(st))

    # -- writes --------------------------------------------------------------------------------

    def write_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """Atomic write, returning the new version. ``if_absent`` publishes with ``os.link``
        (fails atomically when ``key`` exists); ``if_version`` compares and renames under an
        exclusive ``flock`` on the key's lock file, so writers in any process are serialised."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = self._temp_path(path)
        try:
            with temp.open("xb") as handle:
                handle.write(data)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            if if_version is None:
                self._publish(temp, path, key, if_absent=if_absent)
            else:
                with self._locked(path):
                    found = self.stat(key)
                    if found is None or found.version != if_version:
                        raise ConflictError(
                            f"object {key!r} in {self.uri} changed since version {if_version}"
                        )
                    self._publish(temp, path, key, if_absent=False)
            return _etag(path.stat())
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """An exclusive lock for one key (its hidden lock file lives beside it)."""
        import fcntl

        lock = path.with_name(f".{path.name}.lock{TMP_SUFFIX}")
        with lock.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Stream into a temporary file; it replaces ``key`` only if the block exits cleanly."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = self._temp_path(path)
        try:
            with temp.open("xb") as handle:
                yield cast(BinaryIO, handle)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            self._publish(temp, path, key, if_absent=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _publish(self, temp: Path, path: Path, key: str, *, if_absent: bool) -> None:
        """Move a complete temporary file into place (link for ``if_absent``, else rename)."""
        if if_absent:
            if path.is_dir():
                raise ConflictError(f"object {key!r} already exists in {self.uri}")
            try:
                os.link(temp, path)
            except FileExistsError:
                raise ConflictError(f"object {key!r} already exists in {self.uri}") from None
            except OSError:
                # No hard links on this file system: exclusive create is still race-safe,
                # though a reader may briefly see a partial object.
                self._exclusive_copy(temp, path, key)
        else:
            os.replace(temp, path)
        if self.fsync:
            _fsync_dir(path.parent)

    def _exclusive_copy(self, temp: Path, path: Path, key: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ConflictError(f"object {key!r} already exists in {self.uri}") from None
        with os.fdopen(fd, "wb") as out, temp.open("rb") as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is fine (directories are left for concurrent writers)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self.path(key).unlink()


# --------------------------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------------------------


class _Envelope(msgspec.Struct, frozen=True):
    """A message file's content; delivery state lives in its file name, so it never changes."""

    body: bytes
    attributes: dict[str, str] = {}


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# ready:    <seq>.<receive_count>.<id>
# inflight: <deadline_ns>.<seq>.<receive_count>.<id>.<token>   (the receipt)
_READY = re.compile(r"^(\d{20})\.(\d+)\.([0-9a-f]{32})$")
_INFLIGHT = re.compile(r"^(\d{20})\.(\d{20})\.(\d+)\.([0-9a-f]{32})\.([0-9a-f]{32})$")
_envelope_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


class LocalQueue(QueuePort):
    """A directory-backed at-least-once queue, safe across threads and processes.

    Each message is one file that moves between ``ready/`` and ``inflight/`` by atomic rename;
    its delivery state (sequence, receive count, visibility deadline, receipt) is encoded in the
    file name, so claiming a message is a single rename that exactly one consumer wins. An
    in-flight message whose deadline passes is renamed back to ``ready/`` by the next receiver:
    a crashed consumer's messages come back on their own.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        *,
        max_receives: int = 5,
        dead_letter: QueuePort | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(max_receives=max_receives, dead_letter=dead_letter)
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"invalid queue name {name!r}: letters, digits, '_', '.', '-'")
        self.name = name
        self.directory = path_from_uri(root).expanduser().resolve() / name
        self._ready = self.directory / "ready"
        self._inflight = self.directory / "inflight"
        self._tmp = self.directory / "tmp"
        for directory in (self._ready, self._inflight, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self.uri = self.directory.as_uri()

    def __repr__(self) -> str:
        return f"LocalQueue({str(self.directory)!r})"

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def _next_seq(self) -> int:
        """Enqueue order: wall-clock nanoseconds, strictly increasing within this process."""
        with self._seq_lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns())
            return self._last_seq

    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Write under ``tmp/``, then rename into ``ready/``: never seen half-written."""
        message_id = uuid.uuid4().hex
        temp = self._tmp / f"{message_id}{TMP_SUFFIX}"
        temp.write_bytes(_envelope_encoder.encode(_Envelope(bytes(body), dict(attributes or {}))))
        os.replace(temp, self._ready / f"{self._next_seq():020d}.0.{message_id}")
        return message_id

    def _requeue_expired(self, now_ns: int) -> None:
        """Make in-flight messages whose visibility deadline passed visible again."""
        for entry in sorted(os.listdir(self._inflight)):
            match = _INFLIGHT.match(entry)
            if match is None:
                continue
            if int(match.group(1)) > now_ns:
                break  # names sort by deadline: the rest are still hidden
            _, seq, count, message_id, _ = match.groups()
            with contextlib.suppress(FileNotFoundError):  # acked or requeued by someone else
                os.rename(self._inflight / entry, self._ready / f"{seq}.{count}.{message_id}")

    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        """Claim up to ``max_messages`` ready messages by renaming them into ``inflight/``."""
        now_ns = self._now_ns()
        self._requeue_expired(now_ns)
        deadline = now_ns + max(0, int(visibility_timeout * 1e9))
        out: list[Message] = []
        if max_messages <= 0:
            return out
        for entry in sorted(os.listdir(self._ready)):
            match = _READY.match(entry)
            if match is None:
                continue
            seq, count, message_id = match.groups()
            receive_count = int(count) + 1
            receipt = f"{deadline:020d}.{seq}.{receive_count}.{message_id}.{uuid.uuid4().hex}"
            target = self._inflight / receipt
            try:
                os.rename(self._ready / entry, target)
            except FileNotFoundError:  # another consumer claimed it first
                continue
            try:
                envelope = _envelope_decoder.decode(target.read_bytes())
            except FileNotFoundError:  # zero visibility timeout: already requeued elsewhere
                continue
            out.append(
                Message(
                    id=message_id,
                    body=envelope.body,
                    receipt=receipt,
                    receive_count=receive_count,
                    attributes=dict(envelope.attributes),
                )
            )
            if len(out) >= max_messages:
                break
        return out

    def _inflight_path(self, message: Message) -> tuple[Path, re.Match[str]]:
        match = _INFLIGHT.match(message.receipt)
        if match is None:
            raise ValueError(f"not a receipt of {self!r}: {message.receipt!r}")
        return self._inflight / message.receipt, match

    def ack(self, message: Message) -> None:
        """Delete this delivery; a stale receipt (the message came back meanwhile) is a no-op."""
        path, _ = self._inflight_path(message)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def release(self, message: Message) -> None:
        """Visible again now, keeping its place in line and its receive count."""
        path, match = self._inflight_path(message)
        _, seq, count, message_id, _ = match.groups()
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, self._ready / f"{seq}.{count}.{message_id}")

    def counts(self) -> dict[str, int]:
        """Approximate ``visible`` and ``in_flight`` message counts (for status and tests)."""
        ready = sum(1 for e in os.listdir(self._ready) if _READY.match(e))
        inflight = sum(1 for e in os.listdir(self._inflight) if _INFLIGHT.match(e))
        return {"visible": ready, "in_flight": inflight}

    def purge(self) -> None:
        """Drop every message, visible or in flight."""
        for directory in (self._ready, self._inflight):
            for entry in os.listdir(directory):
                with contextlib.suppress(FileNotFoundError):
                    (directory / entry).unlink()


# --------------------------------------------------------------------------------------------
# Job runner
# --------------------------------------------------------------------------------------------

# Runs the job's command and records its exit code, so that any process (a new runner, the
# CLI) can tell a finished job from a crashed one after the process that started it is gone.
_SUPERVISOR = """
import json, os, subprocess, sys, time
job_dir, command = sys.argv[1], sys.argv[2:]
try:
    code = subprocess.call(command)
except OSError as exc:
    print(f"skyscore: cannot run {command[0]!r}: {exc}", flush=True)
    code = 127
record = {"returncode": code, "finished_at": time.time()}
temp = os.path.join(job_dir, "exit.json.tmp")
with open(temp, "w") as handle:
    json.dump(record, handle)
os.replace(temp, os.path.join(job_dir, "exit.json"))
sys.exit(code)
"""

_FINAL: frozenset[str] = frozenset({"completed", "failed", "stopped"})


def train_command(spec: JobSpec, output_dir: Path, python: str = sys.executable) -> list[str]:
    """The training entrypoint's command line for ``spec``."""
    return [
        python,
        "-m",
        "skyscore.training.train",
        spec.data_uri,
        "--target",
        spec.target,
        "--name",
        spec.model_name,
        "--estimator",
        spec.estimator,
        "--output-dir",
        str(output_dir),
        *(["--id-column", spec.id_column] if spec.id_column else []),
        *spec.extra_args,
    ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _log_tail(path: Path, limit: int = 800) -> str:
    """The end of a job log, for failure messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class LocalJobRunner(JobRunner):
    """Training jobs as local subprocesses, with state on disk under ``<home>/jobs/<job_id>/``.

    ``job.json`` is the status record, ``log.txt`` the job's stdout and stderr, ``exit.json``
    the exit code written by a small supervisor process when the command ends. Any runner
    object (or process) can describe any job: a job whose process is gone without an exit
    record is reported failed.

    ``command`` builds the argv for a spec and its output directory (default:
    :func:`train_command`, ``python -m skyscore.training.train ...``); tests substitute trivial commands.
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        python: str = sys.executable,
        *,
        command: Callable[[JobSpec, Path], Sequence[str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = path_from_uri(home).expanduser().resolve()
        self.jobs_dir = self.home / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self._command = command
        self._env = env
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalJobRunner({str(self.home)!r})"

    # -- records -------------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", job_id):
            raise NotFound(f"no job {job_id!r}: not a job id")
        return self.jobs_dir / job_id

    def _read_record(self, job_id: str) -> dict[str, Any]:
        path = self._job_dir(job_id) / "job.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no job {job_id!r} in {self.jobs_dir}") from None
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        directory = self.jobs_dir / str(record["job_id"])
        temp = directory / f"job.json.{uuid.uuid4().hex}{TMP_SUFFIX}"
        temp.write_text(json.dumps(record, indent=2), "utf-8")
        os.replace(temp, directory / "job.json")

    @staticmethod
    def _status(record: dict[str, Any]) -> JobStatus:
        return JobStatus(
            job_id=str(record["job_id"]),
            model_name=str(record["model_name"]),
            state=cast(JobState, record["state"]),
            output_uri=str(record["output_uri"]),
            message=str(record.get("message", "")),
        )

    def _new_job_dir(self, model_name: str) -> tuple[str, Path]:
        """A fresh, time-sortable id (``train-<name>-<UTC timestamp>``) and its directory."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-.") or "model"
        while True:
            stamp = clock.stamp()
            job_id = f"train-{safe}-{stamp}"
            directory = self.jobs_dir / job_id
            try:
                directory.mkdir()
            except FileExistsError:
                time.sleep(1e-5)
                continue
            return job_id, directory

    # -- JobRunner -----------------------------------------------------------------------------

    def log_path(self, job_id: str) -> Path:
        """Where the job's stdout and stderr go."""
        return self._job_dir(job_id) / "log.txt"

    def start(self, spec: JobSpec) -> JobStatus:
        """Launch the job in its own process group and return at once (state ``running``)."""
        output_dir = path_from_uri(spec.output_uri).expanduser().resolve()
        if self._command is not None:
            argv = list(self._command(spec, output_dir))
        else:
            argv = train_command(spec, output_dir, self.python)
        job_id, directory = self._new_job_dir(spec.model_name)
        record: dict[str, Any] = {
            "job_id": job_id,
            "model_name": spec.model_name,
            "state": "pending",
            "output_uri": spec.output_uri,
            "output_dir": str(output_dir),
            "message": "",
            "command": argv,
            "spec": {
                "data_uri": spec.data_uri,
                "target": spec.target,
                "estimator": spec.estimator,
                "id_column": spec.id_column,
                "instance_type": spec.instance_type,
                "extra_args": list(spec.extra_args),
            },
            "created_at": time.time(),
            "pid": None,
        }
        self._write_record(record)
        log_path = directory / "log.txt"
        env = None if self._env is None else {**os.environ, **self._env}
        try:
            with log_path.open("ab") as log:
                log.write(("$ " + " ".join(argv) + "\n").encode())
                log.flush()
                process = subprocess.Popen(
                    [self.python, "-c", _SUPERVISOR, str(directory), *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            record.update(
                state="failed", message=f"could not start: {exc}", finished_at=time.time()
            )
            self._write_record(record)
            return self._status(record)
        with self._lock:
            self._procs[job_id] = process
        record.update(state="running", pid=process.pid, started_at=time.time())
        self._write_record(record)
        return self._status(record)

    def describe(self, job_id: str) -> JobStatus:
        """The job's state, settling the record once its process has ended."""
        record = self._read_record(job_id)
        if record["state"] in _FINAL:
            return self._status(record)
        directory = self._job_dir(job_id)
        with self._lock:
            process = self._procs.get(job_id)
        ended = False
        if process is not None:
            ended = process.poll() is not None  # also reaps the child
        elif record.get("pid") is not None:
            ended = not _pid_alive(int(record["pid"]))
        elif record["state"] == "pending":
            return self._status(record)  # being started right now by another runner
        exit_path = directory / "exit.json"
        exit_record: dict[str, Any] | None = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            exit_record = json.loads(exit_path.read_text("utf-8"))
        if exit_record is None and not ended:
            return self._status(record)
        log_path = directory / "log.txt"
        if exit_record is None:
            state: JobState = "failed"
            message = f"process {record.get('pid')} ended without an exit record; log: {log_path}"
        elif exit_record.get("returncode") == 0:
            state = "completed"
            message = f"output in {record.get('output_dir', record['output_uri'])}"
        else:
            state = "failed"
            tail = _log_tail(log_path)
            message = f"exited with code {exit_record.get('returncode')}; log: {log_path}"
            if tail:
                message += f"\n{tail}"
        record.update(state=state, message=message)
        if exit_record is not None:
            record["returncode"] = exit_record.get("returncode")
            record["finished_at"] = exit_record.get("finished_at")
        self._settle(record)
        return self._status(self._read_record(job_id))

    def _settle(self, record: dict[str, Any]) -> None:
        """Write a final record unless another runner already did (first final state wins)."""
        with self._lock:
            current = self._read_record(str(record["job_id"]))
            if current["state"] not in _FINAL:
                self._write_record(record)
            self._procs.pop(str(record["job_id"]), None)

    def list_jobs(self, model_name: str) -> list[JobStatus]:
        """Every job recorded for ``model_name``, newest first."""
        records: list[dict[str, Any]] = []
        for entry in os.listdir(self.jobs_dir):
            with contextlib.suppress(NotFound, ValueError, KeyError):
                record = self._read_record(entry)
                if record["model_name"] == model_name:
                    records.append(record)
        records.sort(
            key=lambda r: (float(r.get("created_at", 0.0)), str(r["job_id"])), reverse=True
        )
        return [self.describe(str(r["job_id"])) for r in records]

    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """Nothing to do: the training entrypoint writes ``model.onnx`` and ``card.json`` into
        the output directory itself."""

    def stop(self, job_id: str, *, timeout: float = 10.0) -> JobStatus:
        """Terminate a running job's process group (SIGTERM, then SIGKILL after ``timeout``)."""
        status = self.describe(job_id)
        if status.done:
            return status
        record = self._read_record(job_id)
        pid = record.get("pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + timeout
            with self._lock:
                process = self._procs.get(job_id)
            while time.monotonic() < deadline:
                alive = process.poll() is None if process is not None else _pid_alive(int(pid))
                if not alive:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid), signal.SIGKILL)
                if process is not None:
                    process.wait()
        record.update(state="stopped", message="stopped on request", finished_at=time.time())
        self._settle(record)
        return self._status(self._read_record(job_id))

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.1) -> JobStatus:
        """Block until the job is done (or ``timeout`` seconds pass); returns its last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.describe(job_id)
            if status.done or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(poll)

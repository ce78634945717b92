"""Local adapters: atomic blob store, cross-process queue, subprocess job runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.adapters.local import (
    TMP_SUFFIX,
    LocalBlobStore,
    LocalJobRunner,
    LocalQueue,
    path_from_uri,
    train_command,
)
from skyscore.errors import ConflictError, NotFound
from skyscore.ports import JobSpec

# -- blob store ------------------------------------------------------------------------------------


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_write_read_stat_delete_round_trip(blobs: LocalBlobStore) -> None:
    assert blobs.uri.startswith("file:///")
    assert blobs.stat("a/b.txt") is None
    assert not blobs.exists("a/b.txt")
    blobs.write_bytes("a/b.txt", b"hello")
    assert blobs.read_bytes("a/b.txt") == b"hello"
    info = blobs.stat("a/b.txt")
    assert info is not None
    assert (info.key, info.size) == ("a/b.txt", 5)
    blobs.write_bytes("a/b.txt", b"hello")  # same bytes, new object: new version
    again = blobs.stat("a/b.txt")
    assert again is not None and again.version != info.version
    blobs.delete("a/b.txt")
    blobs.delete("a/b.txt")  # idempotent
    blobs.delete("never/was")
    assert blobs.stat("a/b.txt") is None
    with pytest.raises(NotFound, match=r"a/b\.txt"):
        blobs.read_bytes("a/b.txt")
    with pytest.raises(NotFound):
        blobs.open_read("a/b.txt")
    # A "directory" is not an object.
    blobs.write_bytes("dir/x", b"")
    assert blobs.stat("dir") is None
    with pytest.raises(NotFound):
        blobs.read_bytes("dir")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "a/../../outside",
        "a/./b",
        "a//b",
        "a/",
        "a\\..\\b",
        "nul\x00byte",
        f"x{TMP_SUFFIX}",
    ],
)
def test_keys_that_could_escape_the_root_are_refused(blobs: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.write_bytes(key, b"x")
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.read_bytes(key)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(alphabet=st.sampled_from("ab./\\\x00~:"), max_size=12))
def test_any_accepted_key_stays_inside_the_root(blobs: LocalBlobStore, key: str) -> None:
    try:
        path = blobs.path(key)
    except ValueError:
        return
    assert blobs.root in path.resolve().parents


def test_a_symlink_cannot_lead_outside_the_root(blobs: LocalBlobStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (blobs.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        blobs.write_bytes("link/secret", b"x")
    assert not (outside / "secret").exists()


def test_if_absent_refuses_to_overwrite(blobs: LocalBlobStore) -> None:
    blobs.write_bytes("k", b"first", if_absent=True)
    with pytest.raises(ConflictError, match="already exists"):
        blobs.write_bytes("k", b"second", if_absent=True)
    assert blobs.read_bytes("k") == b"first"
    blobs.write_bytes("k", b"third")  # a plain write still replaces
    assert blobs.read_bytes("k") == b"third"
    assert [i.key for i in blobs.list()] == ["k"]  # no temporary files left behind
    assert sorted(p.name for p in blobs.root.iterdir()) == ["k"]


def test_if_absent_has_exactly_one_winner_under_a_race(blobs: LocalBlobStore) -> None:
    barrier = threading.Barrier(16)

    def claim(i: int) -> bool:
        barrier.wait(timeout=30)
        try:
            blobs.write_bytes("claim", str(i).encode() * 10_000, if_absent=True)
        except ConflictError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        wins = list(pool.map(claim, range(16)))
    assert wins.count(True) == 1
    winner = wins.index(True)
    assert blobs.read_bytes("claim") == str(winner).encode() * 10_000


def test_if_absent_has_exactly_one_winner_across_processes(blobs: LocalBlobStore) -> None:
    script = (
        "import sys\n"
        "from skyscore.adapters.local import LocalBlobStore\n"
        "from skyscore.errors import ConflictError\n"
        "store = LocalBlobStore(sys.argv[1])\n"
        "won = 0\n"
        "for i in range(200):\n"
        "    try:\n"
        "        store.write_bytes(f'k/{i}', sys.argv[2].encode(), if_absent=True)\n"
        "        won += 1\n"
        "    except ConflictError:\n"
        "        pass\n"
        "print(won)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(blobs.root), str(n)], stdout=subprocess.PIPE
        )
        for n in range(4)
    ]
    wins = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(wins) == 200
    assert len(list(blobs.list("k/"))) == 200


def test_readers_never_see_a_torn_object(blobs: LocalBlobStore) -> None:
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    blobs.write_bytes("big", big_a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = blobs.read_bytes("big")
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            blobs.write_bytes("big", big_a if i % 2 else big_b)
    finally:
        stop.set()
        thread.join()
    assert seen <= {b"aa2000000", b"bb2000000"}


def test_open_write_publishes_only_on_a_clean_exit(blobs: LocalBlobStore) -> None:
    with blobs.open_write("out/result.jsonl") as handle:
        handle.write(b'{"a": 1}\n')
        assert blobs.stat("out/result.jsonl") is None  # invisible until the block exits
        assert list(blobs.list("out/")) == []  # the temporary file is not listed
        handle.write(b'{"a": 2}\n')
    assert blobs.read_bytes("out/result.jsonl") == b'{"a": 1}\n{"a": 2}\n'

    with pytest.raises(RuntimeError), blobs.open_write("out/result.jsonl") as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert blobs.read_bytes("out/result.jsonl") == b'{"a": 1}\n{"a": 2}\n'  # old object kept
    assert sorted(p.name for p in (blobs.root / "out").iterdir()) == ["result.jsonl"]


def test_open_read_streams(blobs: LocalBlobStore) -> None:
    data = os.urandom(3 * 65536 + 7)
    blobs.write_bytes("in.bin", data)
    chunks: list[bytes] = []
    with blobs.open_read("in.bin") as handle:
        while chunk := handle.read(65536):
            chunks.append(chunk)
    assert len(chunks) == 4
    assert b"".join(chunks) == data


def test_open_range_reads_only_the_range(blobs: LocalBlobStore) -> None:
    blobs.write_bytes("f", b"0123456789")
    with blobs.open_range("f", 3, 7) as handle:
        assert handle.read(1) == b"3" and handle.read() == b"456" and handle.read() == b""
    with blobs.open_range("f", 8, 20) as handle:
        assert handle.read() == b"89"  # past the end: short
    with blobs.open_range("f", 12, 20) as handle:
        assert handle.read() == b""
    with blobs.open_range("f", 2, 2) as handle:
        assert handle.read() == b""
    with pytest.raises(NotFound), blobs.open_range("missing", 0, 1):
        pass
    with pytest.raises(ValueError):
        blobs.open_range("f", 5, 4).__enter__()


def test_list_is_in_key_order_and_filters_by_prefix(blobs: LocalBlobStore) -> None:
    keys = ["a/b", "a-c", "a/a/z", "b", "models/x/1/card.json", "models/xy/1/card.json", "a0"]
    for key in keys:
        blobs.write_bytes(key, key.encode())
    (blobs.root / "a" / f".b.123{TMP_SUFFIX}").write_bytes(b"in progress")
    assert [i.key for i in blobs.list()] == sorted(keys)
    assert [i.key for i in blobs.list("a/")] == ["a/a/z", "a/b"]
    assert [i.key for i in blobs.list("a")] == ["a-c", "a/a/z", "a/b", "a0"]
    assert [i.key for i in blobs.list("models/x/")] == ["models/x/1/card.json"]
    assert [i.key for i in blobs.list("models/x")] == [
        "models/x/1/card.json",
        "models/xy/1/card.json",
    ]
    assert list(blobs.list("nothing/here/")) == []
    sizes = {i.key: i.size for i in blobs.list()}
    assert sizes["a-c"] == 3


def test_root_may_be_a_file_uri(tmp_path: Path) -> None:
    store = LocalBlobStore((tmp_path / "r").as_uri())
    store.write_bytes("k", b"v")
    assert (tmp_path / "r" / "k").read_bytes() == b"v"
    assert path_from_uri("file:///tmp/x%20y") == Path("/tmp/x y")
    assert path_from_uri("relative/dir") == Path("relative/dir")
    with pytest.raises(ValueError, match="not a local path"):
        path_from_uri("s3://bucket/key")


# -- queue -----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> LocalQueue:
    return LocalQueue(tmp_path / "queues", "jobs", clock=clock)


def test_send_receive_ack(queue: LocalQueue) -> None:
    message_id = queue.send(b"payload", {"content-type": "application/json"})
    assert queue.counts() == {"visible": 1, "in_flight": 0}
    [message] = queue.receive(visibility_timeout=30)
    assert message.id == message_id
    assert message.body == b"payload"
    assert message.attributes == {"content-type": "application/json"}
    assert message.receive_count == 1
    assert queue.counts() == {"visible": 0, "in_flight": 1}
    assert queue.receive() == []  # hidden while in flight
    queue.ack(message)
    queue.ack(message)  # acking twice is harmless
    assert queue.counts() == {"visible": 0, "in_flight": 0}


def test_messages_come_out_in_send_order_up_to_max(queue: LocalQueue) -> None:
    for i in range(5):
        queue.send(str(i).encode())
    first = queue.receive(max_messages=3)
    assert [m.body for m in first] == [b"0", b"1", b"2"]
    assert [m.body for m in queue.receive(max_messages=10)] == [b"3", b"4"]
    assert queue.receive(max_messages=0) == []


def test_unacked_messages_come_back_after_the_visibility_timeout(
    queue: LocalQueue, clock: FakeClock
) -> None:
    queue.send(b"work")
    [first] = queue.receive(visibility_timeout=10)
    clock.now += 9.9
    assert queue.receive(visibility_timeout=10) == []
    clock.now += 0.2
    [second] = queue.receive(visibility_timeout=10)
    assert second.id == first.id
    assert second.receive_count == 2
    assert second.receipt != first.receipt
    queue.ack(first)  # a stale receipt does not delete the new delivery
    assert queue.counts() == {"visible": 0, "in_flight": 1}
    queue.ack(second)
    assert queue.counts() == {"visible": 0, "in_flight": 0}


def test_release_makes_a_message_visible_now(queue: LocalQueue) -> None:
    queue.send(b"a")
    queue.send(b"b")
    [a] = queue.receive(max_messages=1, visibility_timeout=300)
    queue.release(a)
    again = queue.receive(visibility_timeout=300)
    assert [m.body for m in again] == [b"a", b"b"]  # released message keeps its place
    assert [m.receive_count for m in again] == [2, 1]


def test_poison_messages_go_to_the_dead_letter_queue(tmp_path: Path, clock: FakeClock) -> None:
    dead = LocalQueue(tmp_path / "q", "jobs-dlq", clock=clock)
    queue = LocalQueue(tmp_path / "q", "jobs", max_receives=2, dead_letter=dead, clock=clock)
    queue.send(b"poison", {"source": "test"})
    for expected_count in (1, 2):
        [poison] = queue.receive()
        assert poison.receive_count == expected_count
        queue.release(poison)
    queue.send(b"fine")
    messages = queue.receive()
    assert [m.body for m in messages] == [b"fine"]  # the third delivery went to the DLQ
    assert queue.counts() == {"visible": 0, "in_flight": 1}
    [dead_message] = dead.receive()
    assert dead_message.body == b"poison"
    assert dead_message.attributes == {"source": "test"}
    assert dead_message.receive_count == 1


def test_without_a_dead_letter_queue_messages_keep_coming_back(queue: LocalQueue) -> None:
    queue.max_receives = 1
    queue.send(b"x")
    for count in (1, 2, 3):
        [message] = queue.receive()
        assert message.receive_count == count
        queue.release(message)


def test_queue_state_is_shared_between_objects(tmp_path: Path) -> None:
    LocalQueue(tmp_path, "shared").send(b"hello")
    [message] = LocalQueue(tmp_path, "shared").receive()
    assert message.body == b"hello"
    LocalQueue(tmp_path, "shared").ack(message)
    assert LocalQueue(tmp_path, "shared").counts()["in_flight"] == 0


def test_bad_names_and_receipts_are_refused(queue: LocalQueue, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid queue name"):
        LocalQueue(tmp_path, "../escape")
    queue.send(b"x")
    [message] = queue.receive()
    forged = type(message)(id=message.id, body=b"", receipt="../../etc/passwd")
    with pytest.raises(ValueError, match="not a receipt"):
        queue.ack(forged)


def test_concurrent_consumers_in_threads_see_each_message_once(tmp_path: Path) -> None:
    queue = LocalQueue(tmp_path, "work")
    sent = {queue.send(str(i).encode()) for i in range(300)}
    received: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        while batch := queue.receive(max_messages=7, visibility_timeout=300):
            for message in batch:
                with lock:
                    received.append(message.id)
                queue.ack(message)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(received) == len(sent)
    assert set(received) == sent


def test_concurrent_consumers_in_processes_see_each_message_once(tmp_path: Path) -> None:
    queue = LocalQueue(tmp_path, "work")
    sent = {queue.send(str(i).encode()) for i in range(300)}
    script = (
        "import sys\n"
        "from skyscore.adapters.local import LocalQueue\n"
        "q = LocalQueue(sys.argv[1], 'work')\n"
        "while batch := q.receive(max_messages=5, visibility_timeout=300):\n"
        "    for m in batch:\n"
        "        print(m.id, flush=True)\n"
        "        q.ack(m)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    received = [
        line for p in procs for line in p.communicate(timeout=120)[0].decode().split() if line
    ]
    assert len(received) == len(sent)
    assert set(received) == sent
    assert queue.counts() == {"visible": 0, "in_flight": 0}


# -- job runner ------------------------------------------------------------------------------------


def python_job(code: str) -> Callable[[JobSpec, Path], list[str]]:
    """A ``command`` for the runner: run ``code`` with the output directory as ``sys.argv[1]``."""

    def command(spec: JobSpec, output_dir: Path) -> list[str]:
        return [sys.executable, "-c", code, str(output_dir)]

    return command


def spec(tmp_path: Path, name: str = "fraud") -> JobSpec:
    return JobSpec(
        model_name=name,
        data_uri=str(tmp_path / "data.csv"),
        output_uri=(tmp_path / "out" / name).as_uri(),
        target="label",
    )


WRITE_OUTPUT = (
    "import pathlib, sys\n"
    "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'model.onnx').write_bytes(b'onnx')\n"
    "print('trained', flush=True)\n"
    "print('a warning', file=sys.stderr)\n"
)


def test_job_runs_to_completion_with_a_log(tmp_path: Path) -> None:
    runner = LocalJobRunner(tmp_path / "home", command=python_job(WRITE_OUTPUT))
    started = runner.start(spec(tmp_path))
    assert started.state == "running"
    assert started.job_id.startswith("train-fraud-")
    assert started.output_uri == (tmp_path / "out" / "fraud").as_uri()
    final = runner.wait(started.job_id, timeout=60)
    assert final.state == "completed", final.message
    assert final.done
    assert (tmp_path / "out" / "fraud" / "model.onnx").read_bytes() == b"onnx"
    log = runner.log_path(started.job_id).read_text()
    assert "trained" in log and "a warning" in log
    record = json.loads((tmp_path / "home" / "jobs" / started.job_id / "job.json").read_text())
    assert record["state"] == "completed"
    assert record["returncode"] == 0
    assert runner.active_jobs("fraud") == []


def test_a_failing_job_reports_its_exit_code_and_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('skyscore train: no target column', file=sys.stderr); sys.exit(3)"
    runner = LocalJobRunner(tmp_path / "home", command=python_job(code))
    job = runner.start(spec(tmp_path))
    final = runner.wait(job.job_id, timeout=60)
    assert final.state == "failed"
    assert "exited with code 3" in final.message
    assert "no target column" in final.message


def test_a_missing_executable_fails_the_job(tmp_path: Path) -> None:
    def command(spec: JobSpec, output_dir: Path) -> list[str]:
        return ["/nonexistent/trainer"]

    runner = LocalJobRunner(tmp_path / "home", command=command)
    final = runner.wait(runner.start(spec(tmp_path)).job_id, timeout=60)
    assert final.state == "failed"
    assert "cannot run" in runner.log_path(final.job_id).read_text()


def test_list_jobs_is_newest_first_and_per_model(tmp_path: Path) -> None:
    runner = LocalJobRunner(tmp_path / "home", command=python_job("pass"))
    ids = [runner.start(spec(tmp_path, "fraud")).job_id for _ in range(3)]
    other = runner.start(spec(tmp_path, "churn")).job_id
    assert ids == sorted(ids)  # ids sort by start time
    for job_id in [*ids, other]:
        runner.wait(job_id, timeout=60)
    jobs = runner.list_jobs("fraud")
    assert [j.job_id for j in jobs] == ids[::-1]
    assert all(j.state == "completed" for j in jobs)
    assert [j.job_id for j in runner.list_jobs("churn")] == [other]
    assert runner.list_jobs("nobody") == []


def test_a_new_runner_object_sees_finished_and_running_jobs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = LocalJobRunner(home, command=python_job("import time; time.sleep(1.5)"))
    job = first.start(spec(tmp_path))
    fresh = LocalJobRunner(home)
    assert fresh.describe(job.job_id).state == "running"
    assert fresh.active_jobs("fraud")[0].job_id == job.job_id
    deadline = time.monotonic() + 60
    while not fresh.describe(job.job_id).done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh.describe(job.job_id).state == "completed"
    first.describe(job.job_id)  # reap the child


def test_a_job_whose_process_vanished_without_an_exit_record_is_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = LocalJobRunner(home, command=python_job("pass"))
    job = runner.wait(runner.start(spec(tmp_path)).job_id, timeout=60)
    job_dir = home / "jobs" / job.job_id
    # Rewrite the record as a crashed runner would leave it: running, no exit record.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.loads((job_dir / "job.json").read_text())
    record.update(state="running", pid=dead.pid, message="")
    (job_dir / "job.json").write_text(json.dumps(record))
    (job_dir / "exit.json").unlink()
    status = LocalJobRunner(home).describe(job.job_id)
    assert status.state == "failed"
    assert "without an exit record" in status.message


def test_stop_terminates_a_running_job(tmp_path: Path) -> None:
    runner = LocalJobRunner(tmp_path / "home", command=python_job("import time; time.sleep(60)"))
    job = runner.start(spec(tmp_path))
    stopped = runner.stop(job.job_id, timeout=10)
    assert stopped.state == "stopped"
    assert runner.describe(job.job_id).state == "stopped"


def test_unknown_jobs_are_not_found(tmp_path: Path) -> None:
    runner = LocalJobRunner(tmp_path / "home")
    with pytest.raises(NotFound, match="no job"):
        runner.describe("train-x-20250101T000000000000")
    with pytest.raises(NotFound):
        runner.describe("../../etc")


def test_default_command_runs_the_training_entrypoint(tmp_path: Path) -> None:
    job = JobSpec(
        model_name="cancer",
        data_uri="/data/train.csv",
        output_uri="file:///models/out",
        target="diagnosis",
        estimator="logreg",
        id_column="patient_id",
        extra_args=("--seed", "7"),
    )
    assert train_command(job, Path("/models/out"), "py") == [
        "py",
        "-m",
        "skyscore.training.train",
        "/data/train.csv",
        "--target",
        "diagnosis",
        "--name",
        "cancer",
        "--estimator",
        "logreg",
        "--output-dir",
        "/models/out",
        "--id-column",
        "patient_id",
        "--seed",
        "7",
    ]
    no_id = JobSpec(model_name="m", data_uri="d", output_uri="o", target="t")
    assert "--id-column" not in train_command(no_id, Path("o"))
    runner = LocalJobRunner(tmp_path / "home")
    with pytest.raises(ValueError, match="not a local path"):
        runner.start(JobSpec(model_name="m", data_uri="d", output_uri="s3://b/o", target="t"))


@pytest.mark.slow
def test_the_real_training_entrypoint_runs_as_a_local_job(tmp_path: Path, data_dir: Path) -> None:
    runner = LocalJobRunner(tmp_path / "home")
    job = runner.start(
        JobSpec(
            model_name="cancer",
            data_uri=str(data_dir / "breast_cancer.csv"),
            output_uri=str(tmp_path / "out"),
            target="diagnosis",
            estimator="logreg",
            id_column="patient_id",
        )
    )
    final = runner.wait(job.job_id, timeout=240)
    assert final.state == "completed", runner.log_path(job.job_id).read_text()
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert (tmp_path / "out" / "card.json").is_file()

import asyncio
import json
import multiprocessing
import os
import stat

import pytest

from dataplane.audit import AuditSpool, is_secret_key, read_events, redact

WRITERS = 4
EVENTS_PER_WRITER = 300


def _write_many(path: str, writer: int) -> None:
    spool = AuditSpool(path)
    padding = "x" * (500 + writer * 700)  # lines of different sizes, some beyond a pipe buffer's atomic size
    for index in range(EVENTS_PER_WRITER):
        spool.append({"id": f"w{writer}-{index}", "writer": writer, "index": index, "padding": padding})
    spool.close()


def test_concurrent_processes_append_only_whole_lines(tmp_path):
    path = tmp_path / "audit.log"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_many, args=(str(path), w)) for w in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    events = read_events(path)
    assert len(events) == WRITERS * EVENTS_PER_WRITER
    for writer in range(WRITERS):
        indexes = [e["index"] for e in events if e["writer"] == writer]
        assert indexes == list(range(EVENTS_PER_WRITER))  # each writer's order is kept
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_event_is_one_compact_line_with_the_callers_id(tmp_path):
    spool = AuditSpool(tmp_path / "audit.log")
    spool.append({"id": "req-1", "user": "bob", "decision": {"allowed": True}})
    spool.close()
    assert (tmp_path / "audit.log").read_bytes() == b'{"id":"req-1","user":"bob","decision":{"allowed":true}}\n'


def test_event_without_id_is_refused(tmp_path):
    spool = AuditSpool(tmp_path / "audit.log")
    with pytest.raises(ValueError, match="request id"):
        spool.append({"user": "bob"})
    spool.close()


def test_secret_named_keys_are_dropped_at_any_depth(tmp_path):
    spool = AuditSpool(tmp_path / "audit.log")
    spool.append({"id": "r", "request": {"headers": {"Authorization": "Bearer s3cr3t", "accept": "json"},
                                         "items": [{"password": "p", "ok": 1}]},
                  "token": "t", "private_key": "k", "clientSecret": "c", "token_id": "t1", "key_id": "k1"})
    spool.close()
    text = (tmp_path / "audit.log").read_text()
    assert "s3cr3t" not in text and '"p"' not in text
    assert read_events(tmp_path / "audit.log") == [
        {"id": "r", "request": {"headers": {"accept": "json"}, "items": [{"ok": 1}]},
         "token_id": "t1", "key_id": "k1"}]


@pytest.mark.parametrize("name, secret", [
    ("authorization", True), ("Token", True), ("bearer_token", True), ("api-key", True),
    ("clientSecret", True), ("password", True), ("token_id", False), ("key_id", False), ("monkey", False),
    ("user", False),
])
def test_secret_key_names(name, secret):
    assert is_secret_key(name) is secret


def test_redact_leaves_the_input_untouched():
    event = {"id": "r", "token": "t"}
    assert redact(event) == {"id": "r"} and event == {"id": "r", "token": "t"}


def test_non_json_values_are_refused_not_stringified(tmp_path):
    spool = AuditSpool(tmp_path / "audit.log")
    with pytest.raises(TypeError):
        spool.append({"id": "r", "object": object()})
    spool.close()


def test_periodic_fsync_runs_and_close_stops_it(tmp_path):
    async def scenario():
        spool = AuditSpool(tmp_path / "audit.log")
        fsynced = asyncio.Event()
        original = spool.fsync

        def fsync():
            original()
            fsynced.set()
        spool.fsync = fsync
        task = spool.start_periodic_fsync(asyncio.get_running_loop(), interval=0.001)
        spool.append({"id": "r"})
        await asyncio.wait_for(fsynced.wait(), 10)
        assert spool._dirty is False
        spool.close()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()

    asyncio.run(scenario())


def test_read_events_rejects_a_torn_line(tmp_path):
    (tmp_path / "audit.log").write_text('{"id":"a"}\n{"id":"b"')
    with pytest.raises(ValueError, match="incomplete"):
        read_events(tmp_path / "audit.log")
    (tmp_path / "audit.log").write_text('{"id":"a"}\n' + json.dumps([1]) + "\n")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_events(tmp_path / "audit.log")


def test_values_orjson_refuses_but_json_accepts_are_still_written(tmp_path):
    spool = AuditSpool(tmp_path / "audit.log")
    spool.append({"id": "r", "counts": {7: "seven"}, "big": 2 ** 70, "text": "grüße ✓"})
    spool.close()
    assert read_events(tmp_path / "audit.log") == [
        {"id": "r", "counts": {"7": "seven"}, "big": 2 ** 70, "text": "grüße ✓"}]

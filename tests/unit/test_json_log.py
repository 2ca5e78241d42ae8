"""Log lines are JSON: the formatter, the writer of the service's lines, and what native code
prints on stderr."""

import io
import json
import logging
import os
import select
import threading

from service.observability import json_log
from service.observability.json_log import JsonFormatter, LineWriter, StderrRelay, line_writer

NATIVE_OUTPUT = (b"I0000 00:00:1795845535.637150    1341 port.cc:153] oneDNN custom ops are on.\n"
                 b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                 b"E0000 00:00:1795845535.7  1341 cuda.cc:1] no GPU\n"
                 b"\n"
                 b"Traceback (most recent call last): a line without a level\n")


def test_a_record_is_one_json_object_with_its_extra_fields():
    record = logging.makeLogRecord({"name": "service.test", "levelno": logging.INFO,
                                    "levelname": "INFO", "msg": "loaded %s", "args": ("v1",),
                                    "model_version": 1})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["logger"] == "service.test" and entry["message"] == "loaded v1"
    assert entry["level"] == "INFO" and entry["model_version"] == 1 and entry["time"]


def test_what_native_code_prints_on_stderr_comes_out_as_json_lines(capfd):
    relay = StderrRelay().start()
    try:
        os.write(2, NATIVE_OUTPUT)
        # drain() returns once everything written before it is out.
        relay.drain()
        relayed = capfd.readouterr().err
    finally:
        relay.stop()
    entries = [json.loads(line) for line in relayed.splitlines()]
    assert [(entry["logger"], entry["level"]) for entry in entries] == [
        ("stderr", "INFO"), ("stderr", "INFO"), ("stderr", "ERROR"), ("stderr", "WARNING")]
    assert entries[1]["message"] == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def test_stopping_the_relay_gives_stderr_back(capfd):
    relay = StderrRelay().start()
    relay.stop()
    os.write(2, b"plain again\n")
    assert capfd.readouterr().err == "plain again\n"


def test_lines_written_at_once_by_many_threads_come_out_whole():
    # Lines up to the pipe's PIPE_BUF go out with no lock: eight threads at once.
    sizes = [10, 200, 2000, select.PIPE_BUF - 300] * 5
    entries = _logged_through_a_pipe(threads=8, sizes=sizes)
    assert sorted((entry["thread_number"], entry["index"]) for entry in entries) == [
        (thread, index) for thread in range(8) for index in range(len(sizes))]
    assert all(len(entry["message"]) == sizes[entry["index"]] for entry in entries)


def test_a_line_longer_than_the_pipe_takes_at_once_comes_out_whole():
    (entry,) = _logged_through_a_pipe(threads=1, sizes=[20 * select.PIPE_BUF])
    assert entry["message"] == "x" * 20 * select.PIPE_BUF


def _logged_through_a_pipe(threads, sizes):
    """The entries that `threads` threads logging a line of each of `sizes` (its message's
    length) wrote through a LineWriter into a pipe that another thread reads."""
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end)
    writer.setFormatter(JsonFormatter())
    received = []
    reader = threading.Thread(target=lambda: received.append(_read_all(read_end)))
    reader.start()

    def log(thread):
        for index, size in enumerate(sizes):
            writer.handle(logging.makeLogRecord({"name": "service.access", "msg": "x" * size,
                                                 "thread_number": thread, "index": index}))

    loggers = [threading.Thread(target=log, args=(number,)) for number in range(threads)]
    for thread in loggers:
        thread.start()
    for thread in loggers:
        thread.join()
    os.close(write_end)
    reader.join()
    return [json.loads(line) for line in received[0].decode().splitlines()]


def _read_all(fd):
    with open(fd, "rb") as pipe:
        return pipe.read()


def test_a_write_cut_short_is_finished(monkeypatch):
    written, real_write = [], os.write
    monkeypatch.setattr(json_log.os, "write", lambda fd, data: written.append(bytes(data[:3]))
                        or 3)
    writer = LineWriter(1)
    writer.setFormatter(JsonFormatter())
    writer.handle(logging.makeLogRecord({"name": "service.test", "msg": "a short line"}))
    monkeypatch.setattr(json_log.os, "write", real_write)
    assert json.loads(b"".join(written))["message"] == "a short line"


def test_the_writer_falls_back_to_a_stream_handler_on_a_stream_with_no_descriptor(tmp_path):
    assert type(line_writer(io.StringIO())) is logging.StreamHandler
    with open(tmp_path / "log", "w") as file:
        file.write("before\n")  # still in the file object's buffer
        writer = line_writer(file)
        assert isinstance(writer, LineWriter)
        writer.setFormatter(JsonFormatter())
        writer.handle(logging.makeLogRecord({"name": "service.test", "msg": "after"}))
    first, second = (tmp_path / "log").read_text().splitlines()
    assert first == "before" and json.loads(second)["message"] == "after"

"""Log lines are JSON: the formatter, and what native code prints on stderr."""

import json
import logging
import os

from service.observability.json_log import JsonFormatter, StderrRelay

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

"""JSON log lines: one formatter for the app's records, gunicorn's, and what is printed on stderr.

This module imports nothing of the app, so gunicorn's master can load it before any worker.
"""

import contextlib
import json
import logging
import os
import re
import select
import sys
import threading
import uuid

from service.process.pipes import write_all

STANDARD_FIELDS = set(vars(logging.makeLogRecord({})))

# Native libraries print straight to stderr, as "I0000 00:00:…" (absl) or "INFO: …" (LiteRT).
NATIVE_LEVEL = re.compile(r"^(?:([IWEF])\d{4} |(INFO|WARNING|ERROR|FATAL): )")
NATIVE_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL,
                 "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
                 "FATAL": logging.CRITICAL}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object, with any `extra=` fields beside the message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update({key: value for key, value in vars(record).items()
                      if key not in STANDARD_FIELDS and not key.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LineWriter(logging.Handler):
    """Write each record to a file descriptor as one line, in one write(2), with no lock.

    Every request logs a line. logging's StreamHandler holds its lock while it formats the
    line, writes it and flushes, and the flush's system call hands the GIL on, so the request
    threads queued at that lock: at 32 clients this writer lowered the p99 in 8 of 8 pairs,
    to 0.76–0.94× (docs/performance.md). A pipe writes up to PIPE_BUF bytes in one piece,
    whoever else writes to it, so a line that short needs no lock, as nginx writes its log
    lines. A longer one (with a traceback) is written under the lock, whole among the long
    ones; a short line may still land inside it when the pipe is full, as lines of other
    writers to standard output can.
    """

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def handle(self, record: logging.LogRecord) -> bool:
        """Handler.handle without taking the lock (emit takes it for a long line)."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and write it with its newline."""
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if len(line) <= select.PIPE_BUF:  # one write to a pipe; a file may take more
                write_all(self._fd, line)
            else:
                with self.lock:
                    write_all(self._fd, line)
        except Exception:  # as logging's own handlers: a line lost never fails the request
            self.handleError(record)


def line_writer(stream) -> logging.Handler:
    """A LineWriter on `stream`'s file descriptor; a StreamHandler if it has none (as under
    a test's captured output)."""
    try:
        stream.flush()  # what it holds goes out before the lines written past it
        return LineWriter(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return logging.StreamHandler(stream)


def configure_logging(level: str) -> None:
    """Send the service's logs to standard output as JSON lines."""
    handler = line_writer(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def gunicorn_logging(level: str) -> dict:
    """gunicorn's logconfig_dict: its lines, and other libraries', as JSON on standard output."""
    stdout = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": stdout},
        # Other libraries' records (TensorFlow's Python side, say) below WARNING stay out.
        "root": {"level": "WARNING", "handlers": ["stdout"]},
        # gunicorn.access is left out: the app logs each request itself (service.access).
        "loggers": {"gunicorn.error": {"level": level.upper(), "handlers": ["stdout"],
                                       "propagate": False}},
    }


def native_level(line: str) -> str:
    """The level a native library's stderr line states, else WARNING."""
    match = NATIVE_LEVEL.match(line)
    return NATIVE_LEVELS[match.group(1) or match.group(2)] if match else logging.WARNING


class StderrRelay:
    """Turn every line written to file descriptor 2, by Python or native code, into a JSON line.

    A pipe takes the place of stderr; a thread reads it and writes each line, as a record
    of the logger "stderr", to the real stderr.
    """

    def __init__(self):
        self._original = None
        self._thread = None
        # A line only drain() writes: once the thread reads it, every earlier line is out.
        self._mark = f"stderr-relay-drained-{uuid.uuid4().hex}"
        self._drained = threading.Event()

    def start(self) -> "StderrRelay":
        """Put the pipe in place of stderr and start relaying."""
        read_end, write_end = os.pipe()
        sys.stderr.flush()
        self._original = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        output = open(os.dup(self._original), "w", encoding="utf-8")
        self._thread = threading.Thread(target=self._relay, args=(read_end, output),
                                        name="stderr-relay", daemon=True)
        self._thread.start()
        return self

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until every line written so far has been relayed; stderr stays relayed."""
        if self._original is None:
            return
        self._drained.clear()
        sys.stderr.flush()
        os.write(2, f"{self._mark}\n".encode())
        self._drained.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Give stderr back, once the lines still in the pipe are written."""
        if self._original is None:
            return
        sys.stderr.flush()
        # Closing the pipe's only write end lets the thread read to the end and stop.
        os.dup2(self._original, 2)
        os.close(self._original)
        self._original = None
        self._thread.join(timeout)

    def _relay(self, read_end, output):
        """Read the pipe until every write end is closed; write each line out as JSON."""
        formatter = JsonFormatter()
        with open(read_end, encoding="utf-8", errors="replace") as lines, output:
            for line in lines:
                line = line.rstrip()
                if line == self._mark:
                    self._drained.set()
                elif line:
                    level = native_level(line)
                    record = logging.makeLogRecord({"name": "stderr", "msg": line, "levelno": level,
                                                    "levelname": logging.getLevelName(level)})
                    # Should the real stderr be gone, drop the line but keep reading: a full
                    # pipe would block whoever writes next.
                    with contextlib.suppress(OSError, ValueError):
                        output.write(formatter.format(record) + "\n")
                        output.flush()

"""API keys: which keys a client may send, from API_KEY or from a key file re-read as it changes.

No Flask here: the HTTP edge (service/serving.py) and any other server ask an ApiKeys
whether an offered key is valid. A key file holds one key per line; blank lines and
`#` comments are ignored. Several keys are valid at once, so a key is rotated by adding
the new one, moving the clients, then removing the old one (docs/security.md).
"""

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable

# Keys in a file must be long enough not to be guessed (`openssl rand -hex 24` gives 48).
MIN_KEY_LENGTH = 16
# A key file is a few lines; anything larger is a wrong path, not a list of keys.
MAX_FILE_BYTES = 64 * 1024
# How often, at most, the file's identity (inode, size, times) is looked at again.
RELOAD_SECONDS = 1.0
# Visible ASCII only: what an HTTP header carries unchanged.
KEY_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")

log = logging.getLogger("service.api_keys")


class ApiKeyError(Exception):
    """A key file the service cannot use: missing, unreadable, empty or malformed."""


def parse_key_file(text: str) -> list[str]:
    """The keys in a key file's text, in order, each once.

    The messages name line numbers, never a line's content: that could be a key.
    """
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key, rest = words[0], words[1:]
        if rest and not rest[0].startswith("#"):
            raise ApiKeyError(f"line {number} holds more than one word: a key has no spaces, "
                              "and a comment after it starts with #")
        if not KEY_CHARACTERS.match(key):
            raise ApiKeyError(f"line {number}: a key may hold only visible ASCII characters")
        if len(key) < MIN_KEY_LENGTH:
            raise ApiKeyError(f"line {number}: a key must be at least {MIN_KEY_LENGTH} "
                              "characters long (make one with `openssl rand -hex 24`)")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise ApiKeyError("it holds no key (one key per line; # starts a comment)")
    return keys


def file_identity(status: os.stat_result) -> tuple:
    """What changes when a file is replaced or written: device, inode, size and times."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def read_key_file(path: str) -> tuple[list[str], tuple]:
    """The keys in the file at `path`, and the identity of the file they were read from."""
    try:
        with open(path, "rb") as file:
            identity = file_identity(os.fstat(file.fileno()))
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ApiKeyError(f"cannot read it: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ApiKeyError(f"it is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiKeyError("it is not UTF-8 text") from None
    return parse_key_file(text), identity


def _digest(key: str) -> bytes:
    """A fixed-length stand-in for a key, so comparing two reveals nothing of either's length."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    """The valid keys: none required, the one API_KEY, or the keys of API_KEY_FILE.

    A key file is read at creation (an unusable one raises ApiKeyError: the service must
    not start) and again, from a request's thread, at most every `reload_seconds` once
    its identity has changed. A file that cannot be used at a reload is logged and the
    keys read before stay valid. `on_reload(ok, key_count)` hears of every reload.
    """

    def __init__(self, key: str = "", path: str = "", reload_seconds: float = RELOAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 on_reload: Callable[[bool, int], None] | None = None):
        if key and path:
            raise ValueError("an API key and a key file: pass one or the other")
        self.path = path
        self.required = bool(key or path)
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._on_reload = on_reload or (lambda ok, count: None)
        self._lock = threading.Lock()
        self._digests = (_digest(key),) if key else ()
        self._identity = self._failed_identity = None
        self._next_check = 0.0
        if path:
            try:
                keys, self._identity = read_key_file(path)
            except ApiKeyError as error:
                raise ApiKeyError(f"API_KEY_FILE {path}: {error}") from None
            self._digests = tuple(_digest(key) for key in keys)
            self._next_check = clock() + reload_seconds
            self._on_reload(True, len(self._digests))

    @property
    def count(self) -> int:
        """How many keys are valid now."""
        return len(self._digests)

    def accepts(self, offered: Iterable[str]) -> bool:
        """True when no key is required or any of `offered` is valid.

        Every offered key is compared with every valid one, in constant time, so the time
        taken says nothing of which key, or how much of one, matched.
        """
        if not self.required:
            return True
        if self.path:
            self.reload_if_changed()
        valid = self._digests
        matched = False
        for key in offered:
            if not key:
                continue
            candidate = _digest(key)
            for digest in valid:
                matched |= hmac.compare_digest(candidate, digest)
        return matched

    def reload_if_changed(self) -> None:
        """Read the key file again if it changed since it was last read (at most every
        `reload_seconds`; a thread that finds another already looking goes on with the
        keys in force)."""
        if self._clock() < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            if self._clock() < self._next_check:
                return
            self._next_check = self._clock() + self._reload_seconds
            try:
                identity = file_identity(os.stat(self.path))
            except OSError as error:
                identity = ("unreadable", error.errno)
            if identity in (self._identity, self._failed_identity):
                return
            try:
                keys, identity = read_key_file(self.path)
            except ApiKeyError as error:
                # Logged once per version of the file, not at every look.
                self._failed_identity = identity
                log.warning("API key file %s not reloaded, the %d keys read before stay "
                            "valid: %s", self.path, self.count, error,
                            extra={"event": "api_keys_reload_failed"})
                self._on_reload(False, self.count)
                return
            self._digests = tuple(_digest(key) for key in keys)
            self._identity, self._failed_identity = identity, None
            log.info("API key file %s reloaded: %d keys valid", self.path, self.count,
                     extra={"event": "api_keys_reloaded", "keys": self.count})
            self._on_reload(True, self.count)
        finally:
            self._lock.release()

"""API keys from API_KEY or a key file: parsing, rotation, bad files, constant-time checks."""

import logging
import os
import time

import pytest

from service.api_keys import ApiKeyError, ApiKeys, parse_key_file

OLD = "old-key-0123456789abcdef"
NEW = "new-key-fedcba9876543210"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def write(path, text):
    """Rewrite `path` in place (same inode), as an edit of a Docker secret's file must be."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(f"# the keys\n{OLD}\n")
    return path


@pytest.fixture
def clock():
    return Clock()


def test_a_key_file_holds_one_key_a_line_with_comments_and_blank_lines():
    text = f"# production\n\n  {OLD}  # the web shop\n\t{NEW}\r\n{OLD}\n"
    assert parse_key_file(text) == [OLD, NEW]


@pytest.mark.parametrize("text, words", [
    ("", "holds no key"),
    ("# only a comment\n\n", "holds no key"),
    (f"{OLD} {NEW}\n", "line 1 holds more than one word"),
    (f"{OLD}\nshort\n", "line 2: a key must be at least 16 characters"),
    ("# keys\nclé-de-voûte-0123456789\n", "line 2: a key may hold only visible ASCII"),
])
def test_malformed_key_files_are_refused_with_the_line_but_never_its_content(text, words):
    with pytest.raises(ApiKeyError, match=words) as refused:
        parse_key_file(text)
    assert OLD not in str(refused.value) and NEW not in str(refused.value)


def test_no_key_configured_requires_none():
    keys = ApiKeys()
    assert not keys.required and keys.accepts([]) and keys.count == 0


def test_the_environment_key_is_the_one_valid_key():
    keys = ApiKeys(key="open-sesame")
    assert keys.required and keys.count == 1
    assert keys.accepts(["", "open-sesame"])
    assert not keys.accepts(["open-sesam", "open-sesame "[:-1] + "!", ""])


def test_a_key_and_a_file_together_are_refused(key_file):
    with pytest.raises(ValueError):
        ApiKeys(key="open-sesame", path=str(key_file))


def test_every_key_in_the_file_is_valid(key_file):
    write(key_file, f"{OLD}\n{NEW}\n")
    keys = ApiKeys(path=str(key_file))
    assert keys.accepts([OLD]) and keys.accepts([NEW]) and keys.accepts(["", NEW])
    assert not keys.accepts([OLD[:-1]]) and not keys.accepts([OLD + "x"]) and not keys.accepts([])


@pytest.mark.parametrize("content", [None, "", "# nothing yet\n", "short\n", b"\xff\xfe key"])
def test_an_unusable_file_at_start_is_an_error_naming_the_setting(tmp_path, content):
    path = tmp_path / "api-keys"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ApiKeyError, match=f"API_KEY_FILE {path}: "):
        ApiKeys(path=str(path))


def test_an_unreadable_file_at_start_is_an_error(tmp_path):
    # A folder where the file should be (a secret mounted one level off, say): even root
    # cannot read it as a file.
    with pytest.raises(ApiKeyError, match="cannot read it: Is a directory"):
        ApiKeys(path=str(tmp_path))


def test_a_rotation_adds_the_new_key_then_removes_the_old_one(key_file, clock):
    keys = ApiKeys(path=str(key_file), clock=clock)
    write(key_file, f"{OLD}\n{NEW}\n")
    # Not looked at again before the interval has passed.
    assert not keys.accepts([NEW])
    clock.now += 1.0
    assert keys.accepts([NEW]) and keys.accepts([OLD])
    write(key_file, f"{NEW}\n")
    clock.now += 1.0
    assert keys.accepts([NEW]) and not keys.accepts([OLD])


def test_a_file_replaced_by_a_rename_is_read_again(key_file, clock):
    # As Kubernetes updates a mounted Secret: a new file takes the old one's name.
    keys = ApiKeys(path=str(key_file), clock=clock)
    replacement = key_file.with_name("new")
    replacement.write_text(f"{NEW}\n")
    os.replace(replacement, key_file)
    clock.now += 1.0
    assert keys.accepts([NEW]) and not keys.accepts([OLD])


def test_a_file_that_does_not_change_is_not_read_again(key_file, clock, monkeypatch):
    keys = ApiKeys(path=str(key_file), clock=clock)
    reads = []
    monkeypatch.setattr("service.api_keys.read_key_file",
                        lambda path: reads.append(path) or ([NEW], None))
    clock.now += 5
    assert keys.accepts([OLD]) and reads == []


@pytest.mark.parametrize("breakage", ["empty", "malformed", "removed"])
def test_a_bad_file_at_a_reload_keeps_the_last_good_keys_and_logs_why(key_file, clock, caplog,
                                                                        breakage):
    reloads = []
    keys = ApiKeys(path=str(key_file), clock=clock,
                   on_reload=lambda ok, count: reloads.append((ok, count)))
    if breakage == "removed":
        key_file.unlink()
    else:
        write(key_file, "" if breakage == "empty" else f"{NEW} and a comment without a hash\n")
    clock.now += 1.0
    with caplog.at_level(logging.WARNING, logger="service.api_keys"):
        assert keys.accepts([OLD]) and not keys.accepts([NEW])
    (record,) = caplog.records
    assert "not reloaded, the 1 keys read before stay valid" in record.getMessage()
    assert record.event == "api_keys_reload_failed"
    assert NEW not in record.getMessage() and OLD not in record.getMessage()
    assert reloads == [(True, 1), (False, 1)]
    # The same bad file is not logged again at every look; a good one is read at once.
    clock.now += 1.0
    assert keys.accepts([OLD])
    assert len(caplog.records) == 1
    write(key_file, f"{NEW}\n")
    clock.now += 1.0
    assert keys.accepts([NEW]) and not keys.accepts([OLD])
    assert reloads[-1] == (True, 1)


def test_a_removed_key_is_refused_after_one_reload_interval(key_file):
    # The real clock: once reload_seconds have passed after the change, the old key is refused.
    keys = ApiKeys(path=str(key_file), reload_seconds=0.05)
    write(key_file, f"{NEW}\n")
    time.sleep(0.06)
    assert not keys.accepts([OLD]) and keys.accepts([NEW])

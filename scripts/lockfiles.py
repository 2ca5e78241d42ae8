"""The hashed lock files: which inputs each is made from, and whether it is still up to date.

scripts/lock-requirements.sh runs `python3 scripts/lockfiles.py lock UV` to write them;
tests/unit/test_lock_files.py imports this module to check them. Standard library only.
"""

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_COMMAND = "scripts/lock-requirements.sh"
# Each lock, the inputs it is compiled from, and the lock whose versions it must keep (so
# that a package has the same version in every lock). The first is the widest: everything
# ./run-tests installs; the trainer image's is within it, the api image's within that.
LOCKS = {
    "requirements-test.lock": (("requirements.txt", "requirements-test.txt"), None),
    "requirements.lock": (("requirements.txt",), "requirements-test.lock"),
    "requirements-serving.lock": (("requirements-serving.txt",), "requirements.lock"),
}
# The Python the images and ./run-tests use; markers cover every platform (uv --universal).
PYTHON_VERSION = "3.11"
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)
INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)\s+(\S+)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of `path` and the files it includes, without comments or blanks.

    Comments and blank lines do not change what is installed, so they do not make a lock
    out of date.
    """
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include = INCLUDE.match(line)
        if include:
            lines.append(f"{include[1]} {include[2]}")
            lines += requirement_lines(path.parent / include[2])
        else:
            lines.append(line)
    return lines


def input_digest(inputs, root: Path = ROOT) -> str:
    """A SHA-256 of the requirement lines of `inputs`, in order."""
    digest = hashlib.sha256()
    for name in inputs:
        digest.update(f"== {name}\n".encode())
        for line in requirement_lines(root / name):
            digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The inputs' digest written into `lock` when it was made, if any."""
    match = DIGEST_LINE.search(lock.read_text(encoding="utf-8"))
    return match[1] if match else None


def pins(lines) -> dict[str, str]:
    """{normalized name: version} of the `name==version` requirements among `lines`."""
    found = {}
    for line in lines:
        match = PIN.match(line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return found


def locked_requirements(lock: Path) -> list[tuple[str, list[str]]]:
    """(requirement, its hashes) for every requirement of a lock file, continuations joined."""
    entries = []
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hashes = re.findall(r"--hash=(\S+)", line)
        entries.append((re.sub(r"\s*--hash=\S+", "", line).strip(), hashes))
    return entries


def problems(root: Path = ROOT) -> list[str]:
    """Why each lock is out of date with its inputs or lacks hashes; empty when all is well."""
    found = []
    for lock_name, (inputs, _) in LOCKS.items():
        lock = root / lock_name
        if not lock.is_file():
            found.append(f"{lock_name} is missing")
            continue
        if recorded_digest(lock) != input_digest(inputs, root):
            found.append(f"{lock_name} is out of date with {', '.join(inputs)}")
        entries = locked_requirements(lock)
        locked = pins(requirement for requirement, _ in entries)
        wanted = pins(line for name in inputs for line in requirement_lines(root / name))
        for name, version in sorted(wanted.items()):
            if locked.get(name) != version:
                found.append(f"{lock_name} has {name} {locked.get(name)}, "
                             f"its input pins {version}")
        found += [f"{lock_name}: {requirement} has no hash" for requirement, hashes in entries
                  if not hashes]
    return found


def lock(uv: str, extra_args=()) -> None:
    """Compile every lock file with `uv`, widest first, and record its inputs' digest."""
    for lock_name, (inputs, within) in LOCKS.items():
        command = [uv, "pip", "compile", "--quiet", "--universal", "--python-version",
                   PYTHON_VERSION, "--generate-hashes", "--custom-compile-command", LOCK_COMMAND,
                   "--output-file", lock_name, *inputs, *extra_args]
        if within:
            command += ["--constraints", within]
        subprocess.run(command, cwd=ROOT, check=True)
        path = ROOT / lock_name
        text = DIGEST_LINE.sub("", path.read_text(encoding="utf-8")).lstrip("\n")
        header = (f"# inputs-sha256: {input_digest(inputs)}\n"
                  f"# Made from {', '.join(inputs)} by {LOCK_COMMAND}; do not edit by hand.\n")
        text = re.sub(r"^# Made from .*\n", "", text, flags=re.MULTILINE)
        path.write_text(header + text, encoding="utf-8")
        print(f"wrote {lock_name}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "lock":
        lock(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:] == ["check"]:
        issues = problems()
        for issue in issues:
            print(issue)
        if issues:
            print(f"Run {LOCK_COMMAND} to bring the lock files up to date.")
        sys.exit(1 if issues else 0)
    else:
        sys.exit(f"usage: {sys.argv[0]} lock UV [uv pip compile options] | check")

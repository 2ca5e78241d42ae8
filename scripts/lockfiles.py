"""The hashed lock files: which inputs each is made from, and whether it is still up to date.

scripts/lock-requirements.sh runs `python3 scripts/lockfiles.py lock UV` to write them;
tests/unit/test_lock_files.py imports this module to check them. Standard library only.
"""

import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_COMMAND = "scripts/lock-requirements.sh"
# Each lock, the inputs it is compiled from, and the lock whose versions it must keep, so
# that a package has one version everywhere. The api image's comes first; the trainer
# image's keeps its versions, and everything ./run-tests installs keeps the trainer's.
LOCKS = {
    "requirements-serving.lock": (("requirements-serving.txt",), None),
    "requirements.lock": (("requirements.txt",), "requirements-serving.lock"),
    "requirements-test.lock": (("requirements.txt", "requirements-test.txt"), "requirements.lock"),
    # grpcio-tools, for the Dockerfile's stage that compiles the gRPC interface.
    "requirements-codegen.lock": (("requirements-codegen.txt",), "requirements-serving.lock"),
}
# Packages whose version in requirements-test.lock may differ from the images', because a
# test tool cannot use theirs. Each needs its reason; add one only when uv says the test
# lock has no solution otherwise.
TEST_ONLY_VERSIONS = {
    "ml-dtypes": "tritonclient 2.73.0 (the /v2 tests' client) requires ml-dtypes 0.5.4 or "
                 "older; the images take 0.7.0, a tenth of its size",
}
# Packages that another locked package requires with an extra, written into the locks with
# it. pip's --require-hashes takes `name[extra]>=x` as a requirement of its own: while the
# lock names the package without the extra, pip looks for the newest release that matches,
# and refuses the install once that is not the locked one (cachecontrol 0.15.0, 2026-12).
EXTRAS_PINNED = {
    "cachecontrol": "filecache",  # pip-audit requires CacheControl[filecache]
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
    for lock_name, (inputs, within) in LOCKS.items():
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
        if within and (root / within).is_file():
            found += [f"{lock_name} has {name} {versions}, {within} has {theirs}"
                      for name, versions, theirs in differences(lock, root / within)
                      if not (lock_name == "requirements-test.lock"
                              and name in TEST_ONLY_VERSIONS)]
    return found


def differences(lock: Path, other: Path):
    """(name, versions in `lock`, versions in `other`) of the packages both hold differently."""
    def versions(path):
        found = {}
        for requirement, _ in locked_requirements(path):
            for name, version in pins([requirement]).items():
                found.setdefault(name, set()).add(version)
        return found

    mine, theirs = versions(lock), versions(other)
    return [(name, sorted(mine[name]), sorted(theirs[name]))
            for name in sorted(mine.keys() & theirs.keys()) if mine[name] != theirs[name]]


def with_extras(text: str) -> str:
    """A lock file's text with each package of EXTRAS_PINNED pinned with its extra."""
    for name, extra in EXTRAS_PINNED.items():
        text = re.sub(rf"^{re.escape(name)}==", f"{name}[{extra}]==", text, flags=re.MULTILINE)
    return text


def constraints(within: str, leave_out, folder: Path) -> Path:
    """A constraints file of the versions in lock `within`, less the packages `leave_out`."""
    lines = [requirement for requirement, _ in locked_requirements(ROOT / within)
             if not set(pins([requirement])) & set(leave_out)]
    path = folder / f"{within}.constraints.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lock(uv: str, extra_args=()) -> None:
    """Compile every lock file with `uv` in LOCKS' order and record its inputs' digest."""
    with tempfile.TemporaryDirectory() as folder:
        for lock_name, (inputs, within) in LOCKS.items():
            command = [uv, "pip", "compile", "--quiet", "--universal", "--python-version",
                       PYTHON_VERSION, "--generate-hashes", "--custom-compile-command",
                       LOCK_COMMAND, "--output-file", lock_name, *inputs, *extra_args]
            if within:
                leave_out = TEST_ONLY_VERSIONS if lock_name == "requirements-test.lock" else ()
                command += ["--constraints", str(constraints(within, leave_out, Path(folder)))]
            subprocess.run(command, cwd=ROOT, check=True)
            path = ROOT / lock_name
            text = DIGEST_LINE.sub("", path.read_text(encoding="utf-8")).lstrip("\n")
            text = re.sub(r"^# Made from .*\n", "", text, flags=re.MULTILINE)
            text = with_extras(text)
            header = (f"# inputs-sha256: {input_digest(inputs)}\n"
                      f"# Made from {', '.join(inputs)} by {LOCK_COMMAND}; do not edit by hand.\n")
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

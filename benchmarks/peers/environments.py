"""The peers' own virtualenvs, made and filled from their pinned requirements files on demand."""

import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = "requirements.sha256"


class PeerUnavailableError(Exception):
    """A peer could not be installed or started here; the reason says why."""


def cache_dir():
    """Where the peers' virtualenvs live: $XDG_CACHE_HOME (or ~/.cache)/image-classifier-peers."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "image-classifier-peers")


def requirements_path(peer):
    """The peer's pinned requirements file, beside this module."""
    return os.path.join(HERE, f"requirements-{peer}.txt")


def ensure_environment(peer, log=print):
    """The bin folder of the peer's virtualenv, installing what its requirements file lacks."""
    requirements = requirements_path(peer)
    with open(requirements, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    venv = os.path.join(cache_dir(), peer)
    bin_dir = os.path.join(venv, "bin")
    stamp = os.path.join(venv, STAMP)
    if os.path.exists(stamp):
        with open(stamp, encoding="ascii") as file:
            if file.read().strip() == digest:
                return bin_dir
    log(f"{peer}: installing {os.path.relpath(requirements)} into {venv} (once)")
    if not os.path.exists(os.path.join(bin_dir, "pip")):
        run([sys.executable, "-m", "venv", "--clear", venv], peer)
    run([os.path.join(bin_dir, "pip"), "install", "--quiet", "--disable-pip-version-check",
         "-r", requirements], peer)
    with open(stamp, "w", encoding="ascii") as file:
        file.write(digest + "\n")
    return bin_dir


def run(command, peer):
    """Run an install step; raise PeerUnavailableError with the end of its output if it fails."""
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        output = (finished.stderr or finished.stdout).strip().splitlines()
        raise PeerUnavailableError(f"{peer}: `{' '.join(command[:3])} …` failed "
                              f"({finished.returncode}): " + " / ".join(output[-3:]))

"""CI's short fuzz run: every target for FUZZ_SECONDS (30) with a fixed seed; a finding fails."""

import os
import subprocess
import sys

import pytest

from tests.fuzz.runner import REGRESSIONS_DIR, target_names
from tests.support import ROOT

pytest.importorskip("atheris", reason="atheris has no wheel for this platform")

SECONDS = int(os.environ.get("FUZZ_SECONDS", "30"))
# Where libFuzzer starts to say what went wrong; Pillow and libtiff print much before it.
FAILURE_MARKERS = ("Uncaught Python exception", "ERROR: libFuzzer")


def report(target, status, findings, log):
    """What a failing run found, where its input is saved, and how to keep it as a regression."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((index for index, line in enumerate(lines)
                  if any(marker in line for marker in FAILURE_MARKERS)), max(len(lines) - 40, 0))
    shown = "\n".join(line for line in lines[start:start + 60] if not line.startswith("0x"))
    saved = "\n".join(f"  {path} ({path.stat().st_size} bytes): {path.read_bytes()[:160]!r}"
                      for path in findings)
    return (f"fuzz target {target} exited with {status}; the input(s) that failed it:\n{saved}\n"
            f"{shown}\nFix the cause, then keep the input: "
            f"cp <input> {REGRESSIONS_DIR / target}/<what-it-is>  (full log: {log})")


@pytest.mark.fuzz
@pytest.mark.parametrize("target", target_names())
def test_a_short_fuzz_run_finds_nothing(target, tmp_path):
    findings, log = tmp_path / "findings", tmp_path / "fuzz.log"
    findings.mkdir()
    command = [sys.executable, "-m", "tests.fuzz", target, "-seed=1",
               f"-max_total_time={SECONDS}", "-timeout=20", "-rss_limit_mb=2048",
               f"-artifact_prefix={findings}/", str(tmp_path / "corpus")]
    # libFuzzer exits without Python's clean-up: the target's temporary files stay in tmp_path.
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    with open(log, "wb") as output:
        status = subprocess.run(command, cwd=ROOT, env=environment, stdout=output,
                                stderr=subprocess.STDOUT, timeout=SECONDS + 120).returncode
    found = sorted(findings.iterdir())
    assert status == 0 and not found, report(target, status, found, log)

"""The tree passes ruff with the rules in pyproject.toml (.ci/run runs this before the tests)."""

import subprocess
import sys

from tests.support import ROOT


def test_the_code_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                             "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

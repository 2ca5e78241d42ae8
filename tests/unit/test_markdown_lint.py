"""Every Markdown file passes pymarkdown, with the rules in .pymarkdown.json.

Line length (MD013) is off: tables of measurements and commands are long lines by nature,
and GitHub wraps prose itself. Every other default rule applies.
"""

import subprocess
import sys

from tests.markdown import markdown_files
from tests.support import ROOT


def test_the_markdown_passes_pymarkdown():
    files = [str(path.relative_to(ROOT)) for path in markdown_files()]
    result = subprocess.run([sys.executable, "-m", "pymarkdown", "--config", ".pymarkdown.json",
                             "--strict-config", "scan", *files],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

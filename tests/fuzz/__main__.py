"""python -m tests.fuzz TARGET [libFuzzer options] [corpus folder]: see runner.py."""

import sys

from tests.fuzz.runner import main

sys.exit(main(sys.argv[1:]))

"""Run one fuzz target under atheris (libFuzzer): python -m tests.fuzz TARGET [options] [corpus].

A target is a module in tests/fuzz/targets/ with `test_one_input(data)`, which hands the bytes
to one parser of untrusted input; optionally `DICTIONARY`, a file of tokens in dictionaries/,
and `replay(base_url, data)`, which sends an input to a running service (test_regressions.py).
The judgement is the same for all of them: the only exceptions allowed out are the service's
own client errors (a 4xx answer); anything else is a finding, and libFuzzer saves the input
that caused it. Seeds are read from
tests/fuzz/corpus/TARGET/ (made by make_corpus.py) and are never written to: the inputs
the fuzzer finds interesting go to the corpus folder given, or to a temporary one.
"""

import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
DICTIONARIES_DIR = FUZZ_DIR / "dictionaries"
REGRESSIONS_DIR = FUZZ_DIR / "regressions"

# Packages whose Python code is instrumented, so their branches guide the mutations.
INSTRUMENTED = ["service", "PIL", "multipart", "werkzeug", "flask", "json", "base64"]


def target_names():
    """The name of every fuzz target module, sorted."""
    from tests.fuzz import targets

    return sorted(module.name for module in pkgutil.iter_modules(targets.__path__))


def is_client_error(error):
    """True for the errors the service answers with a 4xx status: the only ones allowed out."""
    from werkzeug.exceptions import HTTPException

    from service.http.errors import DOMAIN_ERRORS, ApiError, as_api_error

    if type(error) in DOMAIN_ERRORS:
        error = as_api_error(error)
    if isinstance(error, ApiError):
        return 400 <= error.status < 500
    return isinstance(error, HTTPException) and 400 <= error.code < 500


def judged(test_one_input):
    """Wrap a target so that a client error passes and any other exception propagates."""

    def one_input(data):
        try:
            test_one_input(data)
        except Exception as error:
            if not is_client_error(error):
                raise

    return one_input


def libfuzzer_args(name, args, dictionary=None):
    """libFuzzer's arguments: the given ones, a writable corpus folder, then the seeds."""
    if dictionary:
        args = [f"-dict={DICTIONARIES_DIR / dictionary}", *args]
    folders = [arg for arg in args if not arg.startswith("-")]
    if not folders:
        folders = [tempfile.mkdtemp(prefix=f"fuzz-{name}-")]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    options = [arg for arg in args if arg.startswith("-")]
    return [f"fuzz-{name}", *options, *folders, str(CORPUS_DIR / name)]


def main(argv):
    """Fuzz the target named in argv[0] until libFuzzer stops (a finding, or -max_total_time)."""
    if not argv or argv[0] not in target_names():
        print(f"usage: python -m tests.fuzz TARGET [libFuzzer options] [corpus folder]\n"
              f"targets: {', '.join(target_names())}", file=sys.stderr)
        return 2
    import atheris

    name, args = argv[0], argv[1:]
    # Without its C accelerator, json parses in Python that is instrumented below, so the
    # fuzzer learns the JSON grammar from coverage instead of guessing it blind.
    sys.modules["_json"] = None
    with atheris.instrument_imports(include=INSTRUMENTED):
        target = importlib.import_module(f"tests.fuzz.targets.{name}")
    arguments = libfuzzer_args(name, args, getattr(target, "DICTIONARY", None))
    atheris.Setup(arguments, judged(target.test_one_input))
    atheris.Fuzz()
    return 0

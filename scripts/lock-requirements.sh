#!/usr/bin/env bash
# Write the hashed lock files from the top-level requirements, for every platform at once:
#   requirements-test.lock     requirements.txt + requirements-test.txt  (./run-tests)
#   requirements.lock          requirements.txt                          (the trainer image)
#   requirements-serving.lock  requirements-serving.txt                  (the api image)
#   requirements-codegen.lock  requirements-codegen.txt                  (the image build's
#                                                                         gRPC code stage)
# Run it after any change to those three files. Versions already in a lock are kept where
# the inputs allow; extra options go to `uv pip compile`, for example
#   scripts/lock-requirements.sh --upgrade-package urllib3    # a newer release of one package
#   scripts/lock-requirements.sh --upgrade                    # the newest of every unpinned one
# The tool is uv, pinned with hashes in scripts/lock-tool.txt, in a virtual environment of
# its own (build/lock-tool/). Needs Python 3.11 or later and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tool=build/lock-tool
if ! "$tool/bin/uv" --version 2>/dev/null | grep -qF "$(sed -n 's/^uv==\([^ ]*\).*/uv \1/p' scripts/lock-tool.txt)"; then
  rm -rf "$tool"
  "$python" -m venv "$tool"
  "$tool/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
      --only-binary=:all: -r scripts/lock-tool.txt
fi
"$python" scripts/lockfiles.py lock "$tool/bin/uv" "$@"

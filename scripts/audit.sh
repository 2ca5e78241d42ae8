#!/usr/bin/env bash
# Known vulnerabilities in every locked package (the images' and the tests'):
#     scripts/audit.sh [pip-audit options, e.g. --ignore-vuln GHSA-xxxx-xxxx-xxxx]
# pip-audit (pinned in requirements-test.lock, run from .venv) checks each lock file,
# exactly as locked, against the vulnerability data PyPI serves for each release (the
# Python Packaging Advisory Database, through OSV), or against OSV itself when only that
# answers. Exits 1 when any locked release has a known vulnerability (fix: raise its
# version in the inputs, or run scripts/lock-requirements.sh --upgrade-package NAME, then
# run this again). Where neither database can be reached, it prints SKIPPED and the
# reason, and exits 0: not knowing is not a finding, but it is said out loud.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
if ! "$python" -c "import pip_audit" 2>/dev/null; then
  echo "scripts/audit.sh: $python has no pip-audit: run ./run-tests once (it installs requirements-test.lock)" >&2
  exit 2
fi
locks=(requirements-serving.lock requirements.lock requirements-test.lock)
# Which database answers: pip-audit's own services, asked for one release that exists
# (each knows its own address; this script names none): PyPI's, else OSV's.
service=$("$python" - <<'PY'
from packaging.version import Version
from pip_audit._service import OsvService, PyPIService, ResolvedDependency

def answers(service):
    try:
        found, _ = service.query(ResolvedDependency("flask", Version("3.1.3")))
    except Exception:  # unreachable, refused, or an answer it cannot read
        return False
    return isinstance(found, ResolvedDependency)

for name, service in (("pypi", PyPIService), ("osv", OsvService)):
    if answers(service(timeout=15)):
        print(name)
        break
PY
)
if [ -z "$service" ]; then
  echo "SKIPPED scripts/audit.sh: no vulnerability database answers from this machine" \
       "(pip-audit's PyPI and OSV services both unreachable or without the release asked" \
       "for); the locked packages were NOT checked for known vulnerabilities."
  exit 0
fi
status=0
for lock in "${locks[@]}"; do
  echo "== $lock (vulnerability service: $service)"
  # The lock is complete and hashed: pip-audit reads it as it is, without pip resolving it.
  "$python" -m pip_audit --disable-pip --require-hashes --vulnerability-service "$service" \
      --progress-spinner off --strict --requirement "$lock" "$@" || status=1
done
exit "$status"

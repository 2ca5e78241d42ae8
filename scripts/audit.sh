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
# Which database answers: a per-release page of PyPI's JSON API (what pip-audit's default
# service asks for), else OSV's query API.
service=$("$python" - <<'PY'
import json, urllib.error, urllib.request

def answers(request):
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False

if answers("https://pypi.org/pypi/flask/3.1.3/json"):
    print("pypi")
elif answers(urllib.request.Request(
        "https://api.osv.dev/v1/query", method="POST",
        data=json.dumps({"package": {"name": "flask", "ecosystem": "PyPI"},
                         "version": "3.1.3"}).encode(),
        headers={"Content-Type": "application/json"})):
    print("osv")
PY
)
if [ -z "$service" ]; then
  echo "SKIPPED scripts/audit.sh: no vulnerability database answers from this machine" \
       "(https://pypi.org/pypi/<name>/<version>/json and https://api.osv.dev both unreachable" \
       "or refused); the locked packages were NOT checked for known vulnerabilities."
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

#!/usr/bin/env bash
# CycloneDX SBOMs (JSON, spec 1.6) of the Python environments in the built images:
#     scripts/sbom.sh [IMAGE...]
# IMAGE defaults to image-classifier-api:latest and image-classifier-trainer:latest, as
# `docker compose --profile train build` tags them. Each SBOM goes to
# $SBOM_DIR/<image>-<tag>.cdx.json (SBOM_DIR: build/sbom), and lists every distribution in
# the image's /opt/venv with its version, licences and package URL; the image's id and
# tag are in metadata.component. The C libraries a wheel bundles (its <name>.libs/ folder,
# e.g. pi-heif's libheif and libde265) are listed inside that wheel's component, with their
# licence where LICENSED below knows it (docs/security.md). They are build outputs, not committed.
# The generator is cyclonedx-bom (cyclonedx-py), pinned in requirements-test.lock; it runs
# in .venv (./run-tests makes it) on the images' package metadata, copied out of each
# image with tar, so nothing is installed into an image or run from one but tar.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${SBOM_DIR:-build/sbom}
if ! "$python" -c "import cyclonedx_py" 2>/dev/null; then
  echo "scripts/sbom.sh: $python has no cyclonedx-bom: run ./run-tests once (it installs requirements-test.lock)" >&2
  exit 2
fi
[ $# -gt 0 ] || set -- image-classifier-api:latest image-classifier-trainer:latest
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for image in "$@"; do
  id=$(docker image inspect --format '{{.Id}}' "$image")
  repository=${image%:*}; tag=${image##*:}
  [ "$repository" != "$image" ] || tag=latest
  name=${repository##*/}
  # A virtual environment of the same Python holding only the image's package metadata:
  # cyclonedx-py reads the distributions on that interpreter's path.
  rm -rf "$work/env" && "$python" -m venv --without-pip "$work/env"
  site=$("$work/env/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  docker run --rm --network none --entrypoint sh "$id" -c \
      'cd /opt/venv/lib/python3*/site-packages && tar -c *.dist-info' | tar -x -C "$site"
  file="$out/$name-$tag.cdx.json"
  "$python" -m cyclonedx_py environment --spec-version 1.6 --output-format JSON \
      --output-file "$file" "$work/env"
  # The image itself as the SBOM's subject.
  "$python" - "$file" "$name" "$tag" "$id" "$site" <<'PY'
import json, pathlib, re, sys
path, name, tag, image_id, site = sys.argv[1:]
with open(path) as file:
    bom = json.load(file)
# Licences of the bundled libraries that the licence decision in docs/security.md is about.
LICENSED = {"libheif": "LGPL-3.0-or-later", "libde265": "LGPL-3.0-or-later",
            "libx265": "GPL-2.0-or-later", "libavif": "BSD-2-Clause"}
for component in bom["components"]:
    stem = re.sub(r"[-_.]+", "_", component["name"]).lower()
    records = [info / "RECORD" for info in pathlib.Path(site).glob("*.dist-info")
               if info.name.lower() == f"{stem}-{component['version']}.dist-info"]
    lines = records[0].read_text().splitlines() if records and records[0].exists() else []
    for line in lines:
        bundled = re.match(r"[^/,]+\.libs/(lib[\w+.]*?)(?:-[0-9a-f]{8})+\.so[^/,]*", line)
        if bundled:
            library = {"type": "library", "bom-ref": f"{component['bom-ref']}|{bundled[0]}",
                       "name": bundled[1], "description": f"bundled in the wheel: {bundled[0]}"}
            if bundled[1] in LICENSED:
                library["licenses"] = [{"license": {"id": LICENSED[bundled[1]]}}]
            component.setdefault("components", []).append(library)
bom["metadata"]["component"] = {
    "type": "container", "bom-ref": f"{name}:{tag}", "name": name, "version": tag,
    "description": "Python environment (/opt/venv) of the image",
    "properties": [{"name": "image-classifier:image-id", "value": image_id}]}
with open(path, "w") as file:
    json.dump(bom, file, indent=2)
print(f"{path}: {len(bom['components'])} packages in {name}:{tag} ({image_id[:19]})")
PY
done

#!/usr/bin/env bash
# A self-signed certificate and its key, to try HTTPS at the proxy on this machine:
#     deploy/tls/make-self-signed.sh [FOLDER] [NAME...]
# FOLDER is deploy/tls/local by default (git ignores it); the names the certificate is
# valid for are localhost and 127.0.0.1 unless given. It is valid for 30 days. Clients
# trust it by being given it (curl --cacert FOLDER/cert.pem); browsers will warn.
# Not for production: there, use a certificate from your CA (TLS_CERT, TLS_KEY).
set -euo pipefail
cd "$(dirname "$0")/../.."
folder=${1:-deploy/tls/local}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1)
san=""
for name in "${names[@]}"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
mkdir -p "$folder"
umask 077
# ECDSA P-256: small, fast, and accepted by every current client.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes -days 30 \
    -subj "/CN=${names[0]}" -addext "subjectAltName=${san%,}" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$folder/key.pem" -out "$folder/cert.pem" 2>/dev/null
chmod 644 "$folder/cert.pem"
# nginx in the proxy container runs as uid:gid 101:101 and must read the key. Root can give
# it to that group alone; anyone else gets a key every local user can read, which is
# acceptable for a throwaway key on your own machine and for nothing else.
if chgrp 101 "$folder/key.pem" 2>/dev/null; then
  chmod 640 "$folder/key.pem"
else
  chmod 644 "$folder/key.pem"
  echo "note: $folder/key.pem is readable by every local user (the proxy's uid 101 must read it)" >&2
fi
echo "wrote $folder/cert.pem and $folder/key.pem for ${names[*]}"

#!/bin/sh
# The proxy's health check: healthy when nginx answers GET /health/live from an api replica.
# With TLS on, plain HTTP on 8000 only redirects; a loopback-only server on 8081 answers.
port=8000
if [ "${PROXY_TLS:-off}" = on ]; then port=8081; fi
# The alpine images have BusyBox wget; the Debian-based ones have no HTTP client but bash,
# which speaks HTTP well enough over /dev/tcp.
if command -v wget >/dev/null 2>&1; then
  exec wget -q -O /dev/null -T 4 http://127.0.0.1:$port/health/live
fi
exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$port"' \
  && printf "GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 \
  && head -n 1 <&3 | grep -q " 200 "'

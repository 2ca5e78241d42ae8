#!/bin/sh
# The proxy's health check: healthy when nginx answers GET /health/live from an api replica.
# The alpine images have BusyBox wget; the Debian-based ones have no HTTP client but bash,
# which speaks HTTP well enough over /dev/tcp.
if command -v wget >/dev/null 2>&1; then
  exec wget -q -O /dev/null -T 4 http://127.0.0.1:8000/health/live
fi
exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/8000 \
  && printf "GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 \
  && head -n 1 <&3 | grep -q " 200 "'

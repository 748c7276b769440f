#!/bin/sh
# The one script that builds, installs, starts and health-checks agentledger, used both by the
# container image (Dockerfile) and by CI (.ci/run), so that what the image does is what CI tests.
#
#   entrypoint.sh build [DIR]     build the wheel from this checkout into DIR (default dist/)
#   entrypoint.sh install [DIR]   install DIR's wheel and its declared dependencies, without -e
#   entrypoint.sh serve [ARGS]    start the server on $AGENTLEDGER_CONFIG (default
#                                 /etc/agentledger/agentledger.yaml, else the embedded default)
#   entrypoint.sh health [URL]    exit 0 when /health answers 200 (default http://127.0.0.1:4318)
set -eu
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || python=python
cmd="${1:-serve}"
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "${1:-dist}" .
    ls "${1:-dist}"/agentledger-*.whl
    ;;
  install)
    # A wheel, not -e: the installed package must carry its own data and dependencies.
    "$python" -m pip install --quiet --no-cache-dir "$(ls "${1:-dist}"/agentledger-*.whl | tail -n 1)"
    ;;
  serve)
    config="${AGENTLEDGER_CONFIG:-/etc/agentledger/agentledger.yaml}"
    if [ -f "$config" ]; then
      exec agentledger serve --config "$config" "$@"
    fi
    exec agentledger serve "$@"
    ;;
  health)
    url="${1:-${AGENTLEDGER_HEALTH_URL:-http://127.0.0.1:4318}}/health"
    exec "$python" -c 'import sys, urllib.request
try:
    ok = urllib.request.urlopen(sys.argv[1], timeout=3).status == 200
except Exception:
    ok = False
sys.exit(0 if ok else 1)' "$url"
    ;;
  *)
    echo "usage: entrypoint.sh build|install|serve|health" >&2
    exit 2
    ;;
esac

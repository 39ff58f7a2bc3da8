#!/usr/bin/env bash
# gRPC API tooling.
#   scripts/proto.sh gen     regenerate the Python code in tokgen/v1/ from proto/ (committed)
#   scripts/proto.sh check   buf lint + buf breaking against main (buf from npm, into .tools/)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

case "${1:-}" in
  gen)
    "$VENV/bin/python" -m grpc_tools.protoc -I proto \
      --python_out=. --pyi_out=. --grpc_python_out=. proto/tokgen/v1/*.proto
    ;;
  check)
    BUF=.tools/node_modules/.bin/buf
    if [ ! -x "$BUF" ]; then
      mkdir -p .tools
      if ! npm install --silent --prefix .tools @bufbuild/buf@1.75 >/dev/null; then
        # Only an unreachable npm registry skips the check; lint errors always fail.
        echo "proto.sh: SKIPPED: could not install buf from npm" >&2
        exit 0
      fi
    fi
    "$BUF" lint
    if git cat-file -e main:proto/tokgen 2>/dev/null; then
      "$BUF" breaking --against '.git#branch=main'
    else
      echo "proto.sh: main has no API yet; nothing to check for breaking changes" >&2
    fi
    ;;
  *)
    echo "usage: scripts/proto.sh gen|check" >&2
    exit 2
    ;;
esac

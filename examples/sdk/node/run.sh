#!/usr/bin/env bash
# Runs the Node recipes of docs/token-endpoint.md (wechat-api and
# node-easywechat, exact versions in package-lock.json) against `wxphone
# serve` and `wxphone mock`, both built from this checkout and started here
# on free loopback ports. Skipped (exit 0) when node or npm is missing; CI
# installs them first.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../../.. && pwd)

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "skip: node and npm are needed for the Node SDK recipes"
  exit 0
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  { echo "node >= 18 is needed (global fetch); found $(node --version)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$root" && go build -o "$tmp/wxphone" ./cmd/wxphone)

# wait_for FILE SED-EXPRESSION: print the first match once it appears.
wait_for() {
  local v
  for _ in $(seq 1 200); do
    v=$(sed -n "$2" "$1" | head -n 1)
    if [ -n "$v" ]; then echo "$v"; return 0; fi
    sleep 0.05
  done
  echo "timed out waiting in $1:" >&2; cat "$1" >&2; return 1
}

touch "$tmp/mock.out" "$tmp/serve.out"
"$tmp/wxphone" mock --addr 127.0.0.1:0 >"$tmp/mock.out" 2>&1 &
pids+=($!)
mock=$(wait_for "$tmp/mock.out" 's/^wxmock: WeChat emulator listening on \(http[^ ]*\).*/\1/p')
appid=$(wait_for "$tmp/mock.out" 's/^  app: \([a-z0-9]*\) (secret \([^,]*\),.*/\1/p')
secret=$(wait_for "$tmp/mock.out" 's/^  app: \([a-z0-9]*\) (secret \([^,]*\),.*/\2/p')

key() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
token_key="tok_$(key)"
# One process, its state in memory: a REDIS_URL from the caller (CI sets one
# for the Go tests) is not passed on.
env -u REDIS_URL WX_APPID="$appid" WX_SECRET="$secret" WX_API_BASE="$mock" WXPHONE_ADDR=127.0.0.1:0 \
  WXPHONE_API_KEYS="phone_$(key)" WXPHONE_TOKEN_API_KEYS="$token_key" \
  "$tmp/wxphone" serve >"$tmp/serve.out" 2>&1 &
pids+=($!)
addr=$(wait_for "$tmp/serve.out" 's/.*"msg":"listening","addr":"\([^"]*\)".*/\1/p')

echo "wxphone serve on http://$addr, emulator on $mock; node $(node --version)"
WXPHONE_BASE="http://$addr" WXPHONE_TOKEN_KEY="$token_key" WXMOCK_BASE="$mock" WX_APPID="$appid" node check.js

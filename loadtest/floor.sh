#!/usr/bin/env bash
# The floor under the service's latency and throughput targets on this
# machine: the same load (vegeta) sent to the emulator directly, through
# nullproxy (the smallest Go HTTP hop) and through wxphone serve.
#   1. 1,000 req/s for 10 s against a 50 ms upstream: latency percentiles;
#   2. closed loop, 32 workers, 8 s, no upstream latency: throughput.
# Run from the repository root: loadtest/floor.sh   (about 2 minutes)
# BASE=<rev> loadtest/floor.sh also runs `wxphone serve` built from that
# revision (git archive) as "servicebase", next to this tree's, in the same
# runs: before and after side by side (about 3 minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$root"
go build -o "$work/wxphone" ./cmd/wxphone
services="service service"
if [ -n "${BASE:-}" ]; then
  mkdir "$work/base"
  git archive "$BASE" | tar -x -C "$work/base"
  (cd "$work/base" && go build -o "$work/wxphone-base" ./cmd/wxphone)
  services="service servicebase servicebase service"
fi
go -C loadtest build -o "$work/nullproxy" ./nullproxy
GOBIN="$work" go install github.com/tsenart/vegeta/v12@v12.13.0
V="$work/vegeta"
app=wxfloor000000001 secret=floor-secret-0123456789 key=floor-api-key-0123456789abcdef
"$work/wxphone" mock --addr 127.0.0.1:18081 --app "$app:$secret" --load-prefix load- >"$work/emu.log" 2>&1 &
"$work/nullproxy" -addr 127.0.0.1:18090 -upstream http://127.0.0.1:18081 >"$work/proxy.log" 2>&1 &
env -i PATH="$PATH" HOME="$HOME" WX_APPID=$app WX_SECRET=$secret WX_API_BASE=http://127.0.0.1:18081 \
  WXPHONE_API_KEYS=$key WXPHONE_RATE_LIMIT=0 WXPHONE_ADDR=127.0.0.1:18095 "$work/wxphone" serve >"$work/svc.log" 2>&1 &
ports="18081 18090 18095"
if [ -n "${BASE:-}" ]; then
  env -i PATH="$PATH" HOME="$HOME" WX_APPID=$app WX_SECRET=$secret WX_API_BASE=http://127.0.0.1:18081 \
    WXPHONE_API_KEYS=$key WXPHONE_RATE_LIMIT=0 WXPHONE_ADDR=127.0.0.1:18096 "$work/wxphone-base" serve >"$work/svcbase.log" 2>&1 &
  ports="$ports 18096"
fi
for p in $ports; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$p/" && break; sleep 0.1; done
done
tok=$(curl -s -X POST 127.0.0.1:18081/cgi-bin/stable_token \
  -d "{\"grant_type\":\"client_credential\",\"appid\":\"$app\",\"secret\":\"$secret\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
# Every request of every run carries a code never sent before: the
# emulator answers a repeated code with a cheap 40029, and wxphone serve
# answers it from its replay store, so a repeated code would measure
# something else (240,000 codes per run: direct reaches 25,000/s). Target files are written beforehand (generating them
# during the attack would compete for the CPU).
python3 - "$work" "$key" "$tok" "${BASE:-}" <<'PY'
import base64, json, sys
work, key, tok, base = sys.argv[1:5]
urls = {"direct": "http://127.0.0.1:18081/wxa/business/getuserphonenumber?access_token=" + tok,
        "proxy": "http://127.0.0.1:18090/wxa/business/getuserphonenumber?access_token=" + tok,
        "service": "http://127.0.0.1:18095/v1/phone-number",
        "servicebase": "http://127.0.0.1:18096/v1/phone-number"}
if not base:
    del urls["servicebase"]
for phase, n in (("latency", 12000), ("throughput", 240000)):
    for name, url in urls.items():
        for run in range(2):
            header = {"Content-Type": ["application/json"]}
            if name.startswith("service"):
                header["Authorization"] = ["Bearer " + key]
            with open("%s/%s-%s%d.jsonl" % (work, phase, name, run), "w") as f:
                for i in range(n):
                    body = base64.b64encode(json.dumps({"code": "load-%s-%s%d-%07d" % (phase, name, run, i)}).encode()).decode()
                    f.write(json.dumps({"method": "POST", "url": url, "body": body, "header": header}) + "\n")
PY
declare -A runs=()
attack() { # attack PHASE NAME RATE WORKERS DURATION
  local phase=$1 name=$2 rate=$3 workers=$4 dur=$5 run=${runs[$1$2]:-0}
  runs[$phase$name]=$((run + 1))
  "$V" attack -format=json -targets="$work/$phase-$name$run.jsonl" -rate="$rate" -workers="$workers" -max-workers="$workers" -duration="$dur" |
    "$V" report -type=text | awk -v n="$name" '/Requests|Latencies/ {print n ": " $0}'
}
echo "== latency: 1000 req/s, 50 ms upstream, 10 s (order direct, nullproxy, $services, nullproxy, direct)"
curl -s -X POST 127.0.0.1:18081/admin/faults -d '{"endpoint":"phone","kind":"latency","latency_ms":50}' >/dev/null
for n in direct proxy $services proxy direct; do attack latency "$n" 1000 2000 10s; done
echo "== throughput: closed loop, 32 workers, 8 s, no upstream latency"
curl -s -X DELETE 127.0.0.1:18081/admin/faults >/dev/null
for n in direct proxy $services proxy direct; do attack throughput "$n" 0 32 8s; done
# Every phone call must have used a fresh code (errcode 0 only).
echo "== emulator phone answers by errcode (want only \"0\"):"
curl -s 127.0.0.1:18081/admin/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["phone"]["by_errcode"])'

#!/usr/bin/env bash
# The floor under the service's latency and throughput targets on this
# machine: the same load (vegeta) sent to the emulator directly, through
# nullproxy (the smallest Go HTTP hop) and through wxphone serve.
#   1. 1,000 req/s for 10 s against a 50 ms upstream: latency percentiles;
#   2. closed loop, 32 workers, 8 s, no upstream latency: throughput.
# Run from the repository root: loadtest/floor.sh   (about 2 minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$root"
go build -o "$work/wxphone" ./cmd/wxphone
go -C loadtest build -o "$work/nullproxy" ./nullproxy
GOBIN="$work" go install github.com/tsenart/vegeta/v12@v12.13.0
V="$work/vegeta"
app=wxfloor000000001 secret=floor-secret-0123456789 key=floor-api-key-0123456789abcdef
"$work/wxphone" mock --addr 127.0.0.1:18081 --app "$app:$secret" --load-prefix load- >"$work/emu.log" 2>&1 &
"$work/nullproxy" -addr 127.0.0.1:18090 -upstream http://127.0.0.1:18081 >"$work/proxy.log" 2>&1 &
env -i PATH="$PATH" HOME="$HOME" WX_APPID=$app WX_SECRET=$secret WX_API_BASE=http://127.0.0.1:18081 \
  WXPHONE_API_KEYS=$key WXPHONE_RATE_LIMIT=0 WXPHONE_ADDR=127.0.0.1:18095 "$work/wxphone" serve >"$work/svc.log" 2>&1 &
for p in 18081 18090 18095; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$p/" && break; sleep 0.1; done
done
tok=$(curl -s -X POST 127.0.0.1:18081/cgi-bin/stable_token \
  -d "{\"grant_type\":\"client_credential\",\"appid\":\"$app\",\"secret\":\"$secret\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
echo '{"code":"load-same"}' >"$work/body.json"
for h in direct:18081 proxy:18090; do
  printf 'POST http://127.0.0.1:%s/wxa/business/getuserphonenumber?access_token=%s\n@%s\n' "${h#*:}" "$tok" "$work/body.json" >"$work/${h%%:*}.txt"
done
# wxphone replays a repeated code, so every request gets a new one
# (target files written beforehand: generating them during the attack
# would compete for the CPU).
python3 - "$work" "$key" <<'PY'
import base64, json, sys
work, key = sys.argv[1], sys.argv[2]
for run in range(4):
    with open("%s/service%d.jsonl" % (work, run), "w") as f:
        for i in range(120000 if run >= 2 else 12000):
            body = base64.b64encode(json.dumps({"code": "load-%d-%07d" % (run, i)}).encode()).decode()
            f.write(json.dumps({"method": "POST", "url": "http://127.0.0.1:18095/v1/phone-number", "body": body,
                                "header": {"Authorization": ["Bearer " + key], "Content-Type": ["application/json"]}}) + "\n")
PY
run=0
attack() { # attack NAME RATE WORKERS DURATION
  local name=$1 rate=$2 workers=$3 dur=$4 targets
  if [ "$name" = service ]; then
    targets=(-format=json -targets="$work/service$run.jsonl")
    run=$((run + 1))
  else
    targets=(-targets="$work/$name.txt")
  fi
  "$V" attack "${targets[@]}" -rate="$rate" -workers="$workers" -max-workers="$workers" -duration="$dur" |
    "$V" report -type=text | awk -v n="$name" '/Requests|Latencies/ {print n ": " $0}'
}
echo "== latency: 1000 req/s, 50 ms upstream, 10 s (order direct, nullproxy, service, service, nullproxy, direct)"
curl -s -X POST 127.0.0.1:18081/admin/faults -d '{"endpoint":"phone","kind":"latency","latency_ms":50}' >/dev/null
for n in direct proxy service service proxy direct; do attack "$n" 1000 2000 10s; done
echo "== throughput: closed loop, 32 workers, 8 s, no upstream latency"
curl -s -X DELETE 127.0.0.1:18081/admin/faults >/dev/null
for n in direct proxy service service proxy direct; do attack "$n" 0 32 8s; done

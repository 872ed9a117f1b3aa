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
# LATENCY_ROUNDS=N repeats the latency phase N times (default 1): a single
# run's p99 moves by milliseconds on a shared machine, so judge p99 over
# rounds. THROUGHPUT_ROUNDS=N does the same for the throughput phase (the
# direct runs only in the first round). The last lines summarize both
# phases against nullproxy, paired within each round: median p99 over the
# proxy's, and median throughput ÷ the proxy's; then each target's CPU time
# per request in the throughput runs (from /proc).
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
emu=$!
"$work/nullproxy" -addr 127.0.0.1:18090 -upstream http://127.0.0.1:18081 >"$work/proxy.log" 2>&1 &
declare -A pid=([direct]=$emu [proxy]=$!)
env -i PATH="$PATH" HOME="$HOME" WX_APPID=$app WX_SECRET=$secret WX_API_BASE=http://127.0.0.1:18081 \
  WXPHONE_API_KEYS=$key WXPHONE_RATE_LIMIT=0 WXPHONE_ADDR=127.0.0.1:18095 "$work/wxphone" serve >"$work/svc.log" 2>&1 &
pid[service]=$!
ports="18081 18090 18095"
if [ -n "${BASE:-}" ]; then
  env -i PATH="$PATH" HOME="$HOME" WX_APPID=$app WX_SECRET=$secret WX_API_BASE=http://127.0.0.1:18081 \
    WXPHONE_API_KEYS=$key WXPHONE_RATE_LIMIT=0 WXPHONE_ADDR=127.0.0.1:18096 "$work/wxphone-base" serve >"$work/svcbase.log" 2>&1 &
  pid[servicebase]=$!
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
rounds=${LATENCY_ROUNDS:-1} trounds=${THROUGHPUT_ROUNDS:-1}
python3 - "$work" "$key" "$tok" "${BASE:-}" "$rounds" "$trounds" <<'PY'
import base64, json, sys
work, key, tok, base = sys.argv[1:5]
rounds, trounds = int(sys.argv[5]), int(sys.argv[6])
urls = {"direct": "http://127.0.0.1:18081/wxa/business/getuserphonenumber?access_token=" + tok,
        "proxy": "http://127.0.0.1:18090/wxa/business/getuserphonenumber?access_token=" + tok,
        "service": "http://127.0.0.1:18095/v1/phone-number",
        "servicebase": "http://127.0.0.1:18096/v1/phone-number"}
if not base:
    del urls["servicebase"]
for phase, n, runs in (("warmup", 3000, 1), ("latency", 12000, 2 * rounds), ("throughput", 240000, 2 * trounds)):
    for name, url in urls.items():
        if phase == "throughput" and trounds > 1:
            # 8 s at the proxy's or the service's pace needs far fewer codes
            # than a direct run; the direct runs happen once.
            n, runs = (240000, 2) if name == "direct" else (120000, 2 * trounds)
        for run in range(runs):
            header = {"Content-Type": ["application/json"]}
            if name.startswith("service"):
                header["Authorization"] = ["Bearer " + key]
            with open("%s/%s-%s%d.jsonl" % (work, phase, name, run), "w") as f:
                for i in range(n):
                    body = base64.b64encode(json.dumps({"code": "load-%s-%s%d-%07d" % (phase, name, run, i)}).encode()).decode()
                    f.write(json.dumps({"method": "POST", "url": url, "body": body, "header": header}) + "\n")
PY
declare -A runs=()
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
attack() { # attack PHASE NAME RATE WORKERS DURATION
  local phase=$1 name=$2 rate=$3 workers=$4 dur=$5 run=${runs[$1$2]:-0} c0
  runs[$phase$name]=$((run + 1))
  c0=$(cputicks "${pid[$name]}")
  "$V" attack -format=json -targets="$work/$phase-$name$run.jsonl" -rate="$rate" -workers="$workers" -max-workers="$workers" -duration="$dur" |
    "$V" report -type=text | awk -v n="$name" '/Requests|Latencies/ {print n ": " $0}' | tee -a "$work/$phase.txt"
  echo "$name: CPU ticks $(($(cputicks "${pid[$name]}") - c0))" >>"$work/$phase.txt"
}
echo "== latency: 1000 req/s, 50 ms upstream, 10 s (order direct, nullproxy, $services, nullproxy, direct)"
curl -s -X POST 127.0.0.1:18081/admin/faults -d '{"endpoint":"phone","kind":"latency","latency_ms":50}' >/dev/null
# Each target first takes 2 s of the same load, unmeasured: a process's
# first seconds (connection pools, kept goroutines, heap growth) are not
# its steady state, and measured a first-run p99 of +41 ms here.
for n in direct proxy $(tr ' ' '\n' <<<"$services" | sort -u); do
  "$V" attack -format=json -targets="$work/warmup-${n}0.jsonl" -rate=1000 -workers=2000 -max-workers=2000 -duration=2s >/dev/null
done
for r in $(seq 1 "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "-- round $r"
  for n in direct proxy $services proxy direct; do attack latency "$n" 1000 2000 10s; done
done
echo "== throughput: closed loop, 32 workers, 8 s, no upstream latency"
curl -s -X DELETE 127.0.0.1:18081/admin/faults >/dev/null
for r in $(seq 1 "$trounds"); do
  [ "$trounds" -gt 1 ] && echo "-- round $r"
  d=direct; [ "$r" -gt 1 ] && d=""
  for n in $d proxy $services proxy $d; do attack throughput "$n" 0 32 8s; done
done
echo "== summary against nullproxy"
python3 - "$work" "$rounds" "$trounds" <<'PY'
import re, statistics, subprocess, sys
work, rounds, trounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def values(phase, field):
    out = {}
    for line in open("%s/%s.txt" % (work, phase)):
        m = re.match(r"(\w+): +" + field + r" .*\]\s+(.*)", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).replace(" ", "").split(","))
    return out
def ms(v):  # a vegeta duration
    for unit, f in (("ms", 1), ("µs", 1e-3), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
lat = {n: [ms(r[5]) for r in rs] for n, rs in values("latency", "Latencies").items()}
per = len(lat["proxy"]) // rounds  # proxy runs per round (2)
for name in lat:
    if name in ("proxy", "direct"):
        continue
    k = len(lat[name]) // rounds
    diffs = [statistics.mean(lat[name][r * k:(r + 1) * k]) - statistics.mean(lat["proxy"][r * per:(r + 1) * per]) for r in range(rounds)]
    print("%s: p99 over the proxy's %+.2f ms (median of %d rounds: %s)" % (name, statistics.median(diffs), rounds, " ".join("%+.2f" % d for d in diffs)))
tp = {n: [float(r[2]) for r in rs] for n, rs in values("throughput", "Requests").items()}
pk = len(tp["proxy"]) // trounds
for name in tp:
    if name == "proxy":
        continue
    if name == "direct":  # first round only
        print("direct: throughput %.0f ok/s, %.2f of the proxy's (%.0f, first round)" % (statistics.mean(tp[name]), statistics.mean(tp[name]) / statistics.mean(tp["proxy"][:pk]), statistics.mean(tp["proxy"][:pk])))
        continue
    k = len(tp[name]) // trounds
    ratios = [statistics.mean(tp[name][r * k:(r + 1) * k]) / statistics.mean(tp["proxy"][r * pk:(r + 1) * pk]) for r in range(trounds)]
    print("%s: throughput %.0f ok/s, %.2f of the proxy's (%.0f) (median of %d rounds: %s)" % (name, statistics.mean(tp[name]), statistics.median(ratios), statistics.mean(tp["proxy"]), trounds, " ".join("%.2f" % x for x in ratios)))
# CPU time of the target's process per request served (user + system from
# /proc, over each closed-loop run): steadier than throughput on a shared
# machine, though a neighbour's load still inflates it.
hz = float(subprocess.check_output(["getconf", "CLK_TCK"]))
ticks = {}
for line in open("%s/throughput.txt" % work):
    m = re.match(r"(\w+): CPU ticks (\d+)", line)
    if m:
        ticks.setdefault(m.group(1), []).append(int(m.group(2)))
for name in ("proxy", "service", "servicebase"):
    if name in ticks:
        us = [t / hz * 1e6 / (ok * 8) for t, ok in zip(ticks[name], tp[name])]
        print("%s: CPU per request %.0f µs (median of %d runs)" % (name, statistics.median(us), len(us)))
PY
# Every phone call must have used a fresh code (errcode 0 only).
echo "== emulator phone answers by errcode (want only \"0\"):"
curl -s 127.0.0.1:18081/admin/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["phone"]["by_errcode"])'

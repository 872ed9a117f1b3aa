#!/usr/bin/env bash
# check.sh: checks deploy/systemd/wxphone.service with systemd-analyze
# (.ci/run runs it):
#   - verify: the unit parses, every key is known (systemd only warns about
#     an unknown or misspelt key, so any message fails here) and ExecStart
#     names an executable (a wxphone built for the check);
#   - security --offline: the exposure level stays at or below 1.2, today's
#     (systemd's scale: 0 best, 10 worst), so dropping a hardening option
#     fails; the options other options imply (DynamicUser implies
#     NoNewPrivileges and ProtectSystem=strict, which then score nothing)
#     are required by name.
# Needs systemd-analyze (Debian's systemd package) and go.
set -euo pipefail
cd "$(dirname "$0")/../.."
MAX_EXPOSURE=${MAX_EXPOSURE:-12} # tenths: 12 = 1.2

work=$(mktemp -d /tmp/wxphone-systemd.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/wxphone" ./cmd/wxphone
sed "s|^ExecStart=/usr/local/bin/wxphone |ExecStart=$work/wxphone |" deploy/systemd/wxphone.service >"$work/wxphone.service"
grep -q "^ExecStart=$work/wxphone serve$" "$work/wxphone.service" || { echo "systemd check: ExecStart is not /usr/local/bin/wxphone serve" >&2; exit 1; }

unit=$(grep -v '^#' deploy/systemd/wxphone.service)
for want in DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
  LoadCredential=wx-secret: LoadCredential=api-keys: WX_SECRET_FILE=%d/wx-secret WXPHONE_API_KEYS_FILE=%d/api-keys; do
  grep -q -F -- "$want" <<<"$unit" || { echo "systemd check: wxphone.service lacks $want" >&2; exit 1; }
done
# systemd's stop timeout must exceed wxphone's own shutdown bound.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' <<<"$unit")
shutdown=$(sed -n 's/^Environment=WXPHONE_SHUTDOWN_TIMEOUT=\([0-9]*\)s$/\1/p' <<<"$unit")
if [ -z "$stop" ] || [ -z "$shutdown" ] || [ "$stop" -le "$shutdown" ]; then
  echo "systemd check: TimeoutStopSec ($stop) must exceed WXPHONE_SHUTDOWN_TIMEOUT ($shutdown s)" >&2
  exit 1
fi

msgs=$(systemd-analyze verify "$work/wxphone.service" 2>&1) || { echo "$msgs" >&2; exit 1; }
if [ -n "$msgs" ]; then echo "systemd-analyze verify:" >&2; echo "$msgs" >&2; exit 1; fi
echo "systemd-analyze verify: no message"

if ! out=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" "$work/wxphone.service" 2>&1); then
  echo "$out" >&2
  echo "systemd check: exposure above $MAX_EXPOSURE/10" >&2
  exit 1
fi
grep 'Overall exposure level' <<<"$out"

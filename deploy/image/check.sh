#!/usr/bin/env bash
# check.sh: builds the container image from the Dockerfile with buildah and
# checks it without a container runtime (CI runs it from .ci/run, as root):
#   1. the root filesystem is laid out by deploy/image/rootfs.sh (what the
#      Dockerfile's build stage runs) from the build context filtered by
#      .dockerignore, and the image is built from it (--target ci: the
#      image's stages less the compile in golang, as no registry is
#      reachable to pull that image from);
#   2. the image config: numeric non-root user, entrypoint and command,
#      exposed port, version label, HEALTHCHECK;
#   3. its size, against a bound;
#   4. that it works: its root filesystem (a buildah working container,
#      mounted) is entered with chroot as the image's user, with the image's
#      environment only: `wxphone version` prints the version; `wxphone mock`
#      and `wxphone serve` (the image's entrypoint and command) run on
#      loopback with secrets read from files; `wxphone healthcheck` (the
#      HEALTHCHECK) gets 200 from /healthz, /readyz reports the app's token
#      fetched from the emulator, and SIGTERM stops serve with status 0.
# Needs buildah (vfs storage, chroot isolation), chroot, go.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=${VERSION:-v0.0.0-ci}
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-$((25 * 1000 * 1000))}
APPID=wxcheckimage00001
TAG=localhost/wxphone:check

work=$(mktemp -d /tmp/wxphone-image.XXXXXX)
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
ctr="" pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$ctr" ]; then "${B[@]}" umount "$ctr" >/dev/null 2>&1 || true; "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "image check: $*" >&2; exit 1; }

# 1. Build. The root filesystem is built from the build context as the
# Dockerfile's build stage sees it (the repository filtered by
# .dockerignore, copied by buildah), with the script that stage runs.
mkdir -p "$work/ctx"
printf 'FROM scratch\nCOPY . /src/\n' >"$work/Dockerfile.context"
"${B[@]}" bud --quiet --isolation chroot --layers=false -f "$work/Dockerfile.context" -t localhost/wxphone-context:check . >/dev/null
src=$("${B[@]}" from --quiet --pull=never localhost/wxphone-context:check)
sh "$("${B[@]}" mount "$src")/src/deploy/image/rootfs.sh" "$work/ctx/rootfs" "$VERSION"
"${B[@]}" umount "$src" >/dev/null && "${B[@]}" rm "$src" >/dev/null
"${B[@]}" bud --quiet --isolation chroot --format docker --layers=false --target ci \
  --build-arg VERSION="$VERSION" --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -f Dockerfile -t "$TAG" "$work/ctx" >/dev/null

# 2. Config.
cfg() { "${B[@]}" inspect --type image --format "$1" "$TAG"; }
user=$(cfg '{{.Docker.Config.User}}')
entrypoint=$(cfg '{{range .Docker.Config.Entrypoint}}{{.}} {{end}}')
cmd=$(cfg '{{range .Docker.Config.Cmd}}{{.}} {{end}}')
ports=$(cfg '{{range $p, $_ := .Docker.Config.ExposedPorts}}{{$p}} {{end}}')
label=$(cfg '{{index .Docker.Config.Labels "org.opencontainers.image.version"}}')
health=$(cfg '{{if .Docker.Config.Healthcheck}}{{range .Docker.Config.Healthcheck.Test}}{{.}} {{end}}{{end}}')
env=$(cfg '{{range .Docker.Config.Env}}{{.}}{{"\n"}}{{end}}')
echo "user=$user entrypoint=[${entrypoint% }] cmd=[${cmd% }] ports=[${ports% }] version label=$label healthcheck=[${health% }]"
[[ $user =~ ^[0-9]+:[0-9]+$ ]] || fail "user $user is not numeric uid:gid"
[ "${user%%:*}" != 0 ] || fail "the image runs as root"
[ "${entrypoint% }" = /usr/local/bin/wxphone ] || fail "entrypoint [$entrypoint]"
[ "${cmd% }" = serve ] || fail "command [$cmd], want serve"
[ "${ports% }" = 8080/tcp ] || fail "exposed ports [$ports]"
[ "$label" = "$VERSION" ] || fail "version label $label, want $VERSION"
[ "${health% }" = "CMD /usr/local/bin/wxphone healthcheck -q" ] || fail "healthcheck [$health]"

# 3. Size: the root filesystem the image unpacks to.
ctr=$("${B[@]}" from --quiet --pull=never "$TAG")
root=$("${B[@]}" mount "$ctr")
size=$(du -sb "$root" | cut -f1)
files=$(cd "$root" && find . -type f | sort | tr '\n' ' ')
echo "image size: $size bytes ($((size / 1000000)) MB) unpacked; files: $files"
[ "$size" -le "$MAX_IMAGE_BYTES" ] || fail "image is $size bytes, bound $MAX_IMAGE_BYTES"
[ ! -e "$root/bin/sh" ] || fail "the image has a shell"

# 4. Run it under chroot, as the image's user, with the image's environment.
in_image() { env -i $env chroot --userspec="$user" "$root" "$@"; }
out=$(in_image /usr/local/bin/wxphone version)
echo "wxphone version: $out"
[[ $out == "wxphone $VERSION "* ]] || fail "version prints $out"

# Secrets as files, readable by the image's user only (as a Kubernetes
# secret volume or systemd's LoadCredential gives them).
mkdir -p "$root/run/secrets"
printf 'check-secret-0123456789\n' >"$root/run/secrets/wx-secret"
printf 'check-api-key-0123456789\n' >"$root/run/secrets/api-keys"
chown -R "$user" "$root/run/secrets"
chmod 0500 "$root/run/secrets" && chmod 0400 "$root/run/secrets"/*

# Started directly, not through the in_image function: $! is then the
# emulator's own pid (env and chroot exec it), which cleanup ends.
env -i $env chroot --userspec="$user" "$root" /usr/local/bin/wxphone mock --addr 127.0.0.1:0 --app "$APPID:check-secret-0123456789" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for() { # wait_for FILE REGEXP: the first match, within 10 s
  for _ in $(seq 1 100); do
    if m=$(grep -o -m1 -E "$2" "$1"); then echo "$m"; return 0; fi
    sleep 0.1
  done
  cat "$1" >&2
  return 1
}
emu=$(wait_for "$work/mock.log" 'http://127\.0\.0\.1:[0-9]+') || fail "the emulator did not start"

# shellcheck disable=SC2086 # word splitting of the image's entrypoint and command is the point
env -i $env WXPHONE_ADDR=127.0.0.1:0 WX_API_BASE="$emu" WX_APPID="$APPID" \
  WX_SECRET_FILE=/run/secrets/wx-secret WXPHONE_API_KEYS_FILE=/run/secrets/api-keys WXPHONE_SHUTDOWN_TIMEOUT=5s \
  chroot --userspec="$user" "$root" $entrypoint $cmd >"$work/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
addr=$(wait_for "$work/serve.log" '"addr":"127\.0\.0\.1:[0-9]+"' | grep -o -E '127[.0-9]+:[0-9]+') || fail "serve did not start"
echo "serve listening on $addr, emulator at $emu"

out=$(in_image /usr/local/bin/wxphone healthcheck --addr "$addr") || fail "healthcheck: $out"
echo "healthcheck: $out"
env -i $env WXPHONE_ADDR="$addr" chroot --userspec="$user" "$root" /usr/local/bin/wxphone healthcheck -q || fail "healthcheck through WXPHONE_ADDR"

http_get() { # http_get HOST:PORT PATH: the raw response, with no curl in the image or on the host
  local fd
  exec {fd}<>"/dev/tcp/${1%:*}/${1##*:}"
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&"$fd"
  timeout 5 cat <&"$fd"
  exec {fd}>&-
}
ready=""
for _ in $(seq 1 50); do
  ready=$(http_get "$addr" /readyz)
  [[ $ready == "HTTP/1.0 200"* ]] && break
  sleep 0.1
done
echo "readyz: $(tail -n1 <<<"$ready")"
[[ $ready == "HTTP/1.0 200"* && $ready == *"\"appid\":\"$APPID\",\"ready\":true"* ]] || fail "readyz: $ready"

kill -TERM "$serve_pid"
status=0
wait "$serve_pid" || status=$?
[ "$status" = 0 ] || { cat "$work/serve.log" >&2; fail "serve exited $status after SIGTERM"; }
grep -q '"msg":"stopped"' "$work/serve.log" || fail "serve did not log its shutdown"
if grep -q -e check-secret-0123456789 -e check-api-key-0123456789 "$work/serve.log" "$work/mock.log"; then
  fail "a secret reached a log"
fi
if env -i $env chroot --userspec="$user" "$root" /usr/local/bin/wxphone healthcheck -q --addr "$addr" 2>/dev/null; then
  fail "healthcheck passes with serve stopped"
fi
echo "image check passed: $TAG, $size bytes"

#!/bin/sh
# rootfs.sh DIR [VERSION]: lays out the container image's root
# filesystem in DIR, as the Dockerfile's build stage and CI's image check
# (deploy/image/check.sh) both do:
#   /usr/local/bin/wxphone            static binary (CGO off, -trimpath)
#   /etc/ssl/certs/ca-certificates.crt  CA bundle of the build machine
#   /etc/passwd, /etc/group           the unprivileged user 65532 (wxphone)
# Nothing else: no shell, no package manager.
set -eu
out=${1:?usage: rootfs.sh DIR [VERSION]}
version=${2:-dev}
src=$(cd "$(dirname "$0")/../.." && pwd)
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] || { echo "rootfs.sh: no CA bundle at $ca (install ca-certificates or set CA_BUNDLE)" >&2; exit 1; }

mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs"
# -buildvcs=false: the build context has no .git; the version comes from
# the argument (wxphone version prints it, the image label repeats it).
ldflags="-s -w -X main.buildVersion=$version"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/usr/local/bin/wxphone" ./cmd/wxphone)
cp "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nwxphone:x:65532:65532:wxphone:/nonexistent:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nwxphone:x:65532:\n' >"$out/etc/group"
chmod 0755 "$out/usr/local/bin/wxphone"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt" "$out/etc/passwd" "$out/etc/group"

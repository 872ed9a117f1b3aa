# The wxphone image: a static binary, a CA bundle and an unprivileged user on
# an empty base. No shell, no package manager.
#
#   docker build --build-arg VERSION=v1.2.3 -t wxphone:v1.2.3 .
#   podman build --format docker --build-arg VERSION=v1.2.3 -t wxphone:v1.2.3 .
#
# (podman and buildah write OCI images by default, which have no HEALTHCHECK:
# --format docker keeps it.) Running it: README.md, "Container image".
#
# The last stage is the image: it compiles the root filesystem in
# golang:${GO_VERSION} with deploy/image/rootfs.sh. The stage "ci" is the same
# image from a root filesystem laid out beforehand by that script in the build
# context's rootfs/: CI builds it with --target ci (deploy/image/check.sh), as
# it reaches no registry to pull the Go image from. Both take their
# configuration (user, port, labels, health check, entrypoint) from "config".
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN sh deploy/image/rootfs.sh /rootfs "$VERSION"

FROM scratch AS config
ARG VERSION=dev
ARG REVISION=unknown
# The numeric id lets Kubernetes check runAsNonRoot without a passwd lookup.
USER 65532:65532
EXPOSE 8080
LABEL org.opencontainers.image.title="wxphone" \
      org.opencontainers.image.description="Phone-number backend for WeChat Mini Programs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/wxphone/wxphone"
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/wxphone", "healthcheck", "-q"]
ENTRYPOINT ["/usr/local/bin/wxphone"]
CMD ["serve"]

FROM config AS ci
COPY rootfs/ /

FROM config
COPY --from=build /rootfs/ /

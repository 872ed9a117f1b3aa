# The wxphone image: a static binary, a CA bundle and an unprivileged user on
# an empty base. No shell, no package manager.
#
#   docker build --build-arg VERSION=v1.2.3 -t wxphone:v1.2.3 .
#   podman build --format docker --build-arg VERSION=v1.2.3 -t wxphone:v1.2.3 .
#
# (podman and buildah write OCI images by default, which have no HEALTHCHECK:
# --format docker keeps it.) Running it: README.md, "Container image".
#
# BUILD_STAGE picks where the root filesystem comes from: "build" (the
# default) compiles it in golang:${GO_VERSION}; "prebuilt" copies rootfs/ from
# the build context, laid out beforehand by deploy/image/rootfs.sh (the same
# script the build stage runs). CI uses "prebuilt" (deploy/image/check.sh):
# it reaches no registry, so it cannot pull the Go image. Only the chosen
# stage is built: this needs BuildKit (Docker 23 and later) or buildah/podman,
# which skip unused stages.
ARG GO_VERSION=1.26
ARG BUILD_STAGE=build

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN sh deploy/image/rootfs.sh /rootfs "$VERSION"

FROM scratch AS prebuilt
COPY rootfs/ /rootfs/

FROM ${BUILD_STAGE} AS rootfs

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
COPY --from=rootfs /rootfs/ /
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

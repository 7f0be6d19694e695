# The operator image: the release binary (x86_64-unknown-linux-gnu), the shared libraries it links as
# ldd lists them (glibc's and the loader) and the CA bundle, on scratch, run as non-root; no shell.
#
#   podman build -t neurallog/tenant-operator:<version> \
#     --build-arg VERSION=<version> --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The base image is an argument whose default is the public image; `make images` (tools/images.sh)
# passes a local equivalent built offline. Cargo's registry and target directory are cache mounts,
# so a rebuild after a source change compiles only what changed.
ARG BUILDER_IMAGE=rust:1.95-bookworm

FROM ${BUILDER_IMAGE} AS build
# The commit being built: `tenant-operator --version` prints it after the version (build.rs).
ARG REVISION=
WORKDIR /src
COPY . .
# The binary lives in the cache mount, so it is collected into /rootfs in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    TENANT_OPERATOR_REVISION="${REVISION}" cargo build --release --locked --bin tenant-operator \
    && mkdir -p /rootfs/etc/ssl/certs \
    && cp target/release/tenant-operator /rootfs/tenant-operator \
    && ldd target/release/tenant-operator > /tmp/libs \
    && if grep 'not found' /tmp/libs; then exit 1; fi \
    && grep -o '/[^ ]*' /tmp/libs | xargs cp -L --parents -t /rootfs \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

FROM scratch
ARG VERSION=
ARG REVISION=
LABEL org.opencontainers.image.title="NeuralLog Tenant Operator" \
      org.opencontainers.image.description="Kubernetes operator that gives every NeuralLog tenant an isolated environment" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/neurallog/tenant-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# /tenant-operator, its libraries and loader, and /etc/ssl/certs/ca-certificates.crt, so an https
# NeuralLog Auth or OTLP endpoint can be verified.
COPY --from=build /rootfs /
USER 65532:65532
# The admin endpoints (health, metrics) and the conversion webhook.
EXPOSE 8081 9443
ENTRYPOINT ["/tenant-operator"]
CMD ["run"]

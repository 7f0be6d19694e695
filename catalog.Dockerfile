# Serves the file-based catalog with opm. The cache is built at image build time, so the server
# starts fast.
#
# OPM_IMAGE is required: the operator-framework opm image of the pinned version, v1.73.0, named with
# its registry (it is not on the default one, so there is no default here), or the local equivalent
# `make images` (tools/images.sh) builds offline:
#   podman build -f catalog.Dockerfile --build-arg OPM_IMAGE=localhost/neurallog-base/opm:v1.73.0 .
# Without it the build stops at the first FROM ("missing OPM_IMAGE build argument" with podman,
# "base name (${OPM_IMAGE}) should not be blank" with docker).
ARG OPM_IMAGE
FROM ${OPM_IMAGE} AS builder
# The package only: catalog/releases.yaml records this image's digest, so it cannot be in it.
ADD catalog/neurallog-tenant-operator /configs/neurallog-tenant-operator
RUN ["/bin/opm", "serve", "/configs", "--cache-dir=/tmp/cache", "--cache-only"]

FROM ${OPM_IMAGE}
ENTRYPOINT ["/bin/opm"]
CMD ["serve", "/configs", "--cache-dir=/tmp/cache"]
COPY --from=builder /configs /configs
COPY --from=builder /tmp/cache /tmp/cache
LABEL operators.operatorframework.io.index.configs.v1=/configs

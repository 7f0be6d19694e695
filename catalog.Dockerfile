# Serves the file-based catalog with opm.
#
# OPM_IMAGE is required: the operator-framework opm image of the pinned version, v1.73.0, named with
# its registry (it is not on the default one, so there is no default here), or the local equivalent
# `make images` (tools/images.sh) builds offline:
#   podman build -f catalog.Dockerfile --build-arg OPM_IMAGE=localhost/neurallog-base/opm:v1.73.0 .
# Without it the build stops at the first FROM ("missing OPM_IMAGE build argument" with podman,
# "base name (${OPM_IMAGE}) should not be blank" with docker).
#
# No serve cache is built into the image: opm's cache database differs from one build to the next,
# and a release's catalog image must be reproducible (`make release` records its digest). opm
# builds it when it starts, which for this package takes a moment.
ARG OPM_IMAGE
FROM ${OPM_IMAGE}
ENTRYPOINT ["/bin/opm"]
CMD ["serve", "/configs"]
# The package only: catalog/releases.yaml records this image's digest, so it cannot be in it.
ADD catalog/neurallog-tenant-operator /configs/neurallog-tenant-operator
LABEL operators.operatorframework.io.index.configs.v1=/configs

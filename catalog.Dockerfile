# Serves the file-based catalog with opm (set OPM_IMAGE to the opm image of the pinned version,
# v1.73.0, in your registry). The cache is built at image build time, so the server starts fast.
ARG OPM_IMAGE
FROM ${OPM_IMAGE} AS builder
ADD catalog /configs
RUN ["/bin/opm", "serve", "/configs", "--cache-dir=/tmp/cache", "--cache-only"]

FROM ${OPM_IMAGE}
ENTRYPOINT ["/bin/opm"]
CMD ["serve", "/configs", "--cache-dir=/tmp/cache"]
COPY --from=builder /configs /configs
COPY --from=builder /tmp/cache /tmp/cache
LABEL operators.operatorframework.io.index.configs.v1=/configs

# Multi-stage build of the operator image: one static binary and the CA bundle, run as non-root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add x86_64-unknown-linux-musl \
    && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin tenant-operator

FROM scratch
# CA certificates, so an https NeuralLog Auth or OTLP endpoint can be verified.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tenant-operator /tenant-operator
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/tenant-operator"]
CMD ["run"]

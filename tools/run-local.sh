#!/usr/bin/env bash
# `make run`: a local etcd + kube-apiserver + kube-controller-manager, the Tenant CRD, the
# operator running as its own RBAC-restricted user, and the sample tenant from config/samples/.
# Runs until Ctrl-C; with RUN_ONCE=1 it stops after showing the converged tenant.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.local/run"
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
kubectl="$("$root/tools/build.sh" kubernetes)/kubectl"
admin_address="${ADMIN_ADDRESS:-127.0.0.1:8081}"

rm -rf "$dir"
mkdir -p "$dir"
pids=()
cleanup() {
  # The operator first (it flushes its traces to Jaeger), then the control plane.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

echo "==> starting etcd, kube-apiserver and kube-controller-manager (logs in .local/run/)"
"$bin/testenv" up --dir "$dir" >"$dir/testenv.out" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  grep -q '^operator kubeconfig' "$dir/testenv.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dir/testenv.out"; exit 1; }
  sleep 0.2
done
grep -q '^operator kubeconfig' "$dir/testenv.out" || { echo "control plane did not start"; cat "$dir/testenv.out"; exit 1; }
k() { "$kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }

auth_url="$(sed -n 's/^auth: //p' "$dir/testenv.out")"
otlp_endpoint="$(sed -n 's/^otlp: //p' "$dir/testenv.out")"
jaeger_url="$(sed -n 's/^jaeger: //p' "$dir/testenv.out")"
webhook_address="$(sed -n 's/^webhook address: //p' "$dir/testenv.out")"
webhook_certs="$(sed -n 's/^webhook certs: //p' "$dir/testenv.out")"

echo "==> starting the operator (metrics on http://$admin_address/metrics, log in .local/run/operator.log)"
echo "    registering tenants with the NeuralLog Auth stand-in at $auth_url"
echo "    exporting a trace per reconcile to Jaeger (OTLP $otlp_endpoint)"
echo "    serving the Tenant CRD's conversion webhook on https://$webhook_address/convert"
OTEL_EXPORTER_OTLP_ENDPOINT="$otlp_endpoint" "$bin/tenant-operator" run --kubeconfig "$dir/operator.kubeconfig" --admin-address "$admin_address" \
  --webhook-address "$webhook_address" --webhook-cert-dir "$webhook_certs" --auth-url "$auth_url" --ingress-namespace ingress-nginx >"$dir/operator.log" 2>&1 &
pids+=($!)

echo "==> applying config/samples/"
k apply -k "$root/config/samples/"
k wait tenant --all --for=jsonpath='{.status.phase}'=Provisioning --timeout=120s >/dev/null
k wait tenant --all --for=condition=AuthRegistered --timeout=120s >/dev/null

echo
k get tenants
echo
echo "The same tenant through the deprecated v1 API (converted by the operator's webhook):"
k get tenants.v1.neurallog.io acme -o jsonpath='{.spec.resources}{"\n"}{.spec.redis.config}{"\n"}'
echo
k get namespace,secret,configmap,service,statefulset,deployment,ingress,networkpolicy,resourcequota,limitrange,pvc \
  -n tenant-acme -l neurallog.io/tenant=acme
echo
k describe tenant acme | sed -n '/^Status:/,$p'
cat <<MSG

The tenant's pods stay Pending: this local cluster has no nodes, so the phase is Provisioning.
Use the cluster yourself:
  export KUBECONFIG=$dir/admin.kubeconfig
  $kubectl get tenants

Traces (one per reconcile) are in Jaeger; every Event of the tenant ends with its trace id:
  curl -s '$jaeger_url/api/traces?service=neurallog-tenant-operator&limit=5'
  curl -s '$jaeger_url/api/traces/<trace id from kubectl describe tenant acme>'
With a container runtime, the Jaeger UI can read the same traces: run the jaegertracing/jaeger
image with its OTLP port published and point OTEL_EXPORTER_OTLP_ENDPOINT at it.
MSG

if [[ "${RUN_ONCE:-}" == 1 ]]; then exit 0; fi
echo "Press Ctrl-C to stop everything."
wait "${pids[1]}"

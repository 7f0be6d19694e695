#!/usr/bin/env bash
# `make run`: the simulated cluster of the end-to-end tests (KWOK: etcd, kube-apiserver, the full
# kube-controller-manager, kube-scheduler, one fake node whose pods KWOK marks Running, volumes for
# Redis), the Tenant CRD, the operator running as its own RBAC-restricted ServiceAccount, and the
# sample tenant from config/samples/. Runs until Ctrl-C, then stops everything it started.
# With RUN_ONCE=1 it instead proves a deletion for each deletion policy and exits (`make run-once`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.local/run"
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
kubectl="$("$root/tools/build.sh" kubernetes)/kubectl"
admin_address="${ADMIN_ADDRESS:-127.0.0.1:8081}"
# How long the cluster may take to start, and a tenant to converge or to be deleted.
start_timeout=300
timeout=180s

# The cluster of an earlier run lives in $dir/kwok; it must be gone before $dir is recreated.
if pgrep -f "$dir/kwok/" >/dev/null; then
  echo "processes of an earlier make run still run (their command lines name $dir/kwok/):" >&2
  pgrep -af "$dir/kwok/" >&2
  exit 1
fi
rm -rf "$dir"
mkdir -p "$dir"
pids=()
cleanup() {
  # The operator first (it flushes its traces to Jaeger), then testenv, which deletes the cluster.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if pgrep -af "$dir/kwok/" >&2; then
    echo "the processes above of the local cluster are still running" >&2
  fi
}
trap cleanup EXIT
trap 'echo "==> stopping"; exit 130' INT
trap 'exit 143' TERM

k() { "$kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
# Fails the run: the reason, what the cluster looked like, and where the logs are.
fail() {
  echo "FAILED: $*" >&2
  # While testenv runs, the cluster does: show it.
  if kill -0 "${pids[0]}" 2>/dev/null; then
    k get tenants,namespaces -o wide >&2 || true
    k get all,pvc,events -A -o wide >"$dir/cluster-state.txt" 2>&1 || true
    # kwokctl removes the control plane's logs with the cluster: keep a copy.
    mkdir -p "$dir/control-plane"
    cp -r "$dir"/kwok/clusters/*/logs/. "$dir/control-plane/" 2>/dev/null || true
  fi
  echo "logs: $dir/testenv.out, $dir/operator.log, $dir/control-plane/, $dir/cluster-state.txt" >&2
  exit 1
}
# `kubectl wait` for what $1 describes, failing the run if it times out.
wait_for() {
  local what="$1"
  shift
  k wait "$@" --timeout="$timeout" >/dev/null || fail "timed out after $timeout waiting for $what"
}

echo "==> starting a simulated cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
echo "    and KWOK, which runs the pods of its fake node kwok-node-0 (logs in .local/run/)"
# In a session of its own: Ctrl-C reaches the operator, which flushes its traces to Jaeger, and
# testenv stops afterwards (cleanup); it stops too should this script die without cleaning up.
setsid "$bin/testenv" up --dir "$dir" >"$dir/testenv.out" 2>&1 &
pids+=($!)
deadline=$((SECONDS + start_timeout))
until grep -q '^operator kubeconfig' "$dir/testenv.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dir/testenv.out" >&2; fail "testenv exited while starting the cluster"; }
  ((SECONDS < deadline)) || { cat "$dir/testenv.out" >&2; fail "the cluster did not start within ${start_timeout}s"; }
  sleep 0.2
done

auth_url="$(sed -n 's/^auth: //p' "$dir/testenv.out")"
otlp_endpoint="$(sed -n 's/^otlp: //p' "$dir/testenv.out")"
jaeger_url="$(sed -n 's/^jaeger: //p' "$dir/testenv.out")"
webhook_address="$(sed -n 's/^webhook address: //p' "$dir/testenv.out")"
webhook_certs="$(sed -n 's/^webhook certs: //p' "$dir/testenv.out")"
operator_kubeconfig="$(sed -n 's/^operator kubeconfig: //p' "$dir/testenv.out")"

echo "==> starting the operator as ServiceAccount neurallog-system/neurallog-tenant-operator"
echo "    (metrics on http://$admin_address/metrics, log in .local/run/operator.log)"
echo "    registering tenants with the NeuralLog Auth stand-in at $auth_url"
echo "    exporting a trace per reconcile to Jaeger (OTLP $otlp_endpoint)"
echo "    serving the Tenant CRD's conversion webhook on https://$webhook_address/convert"
# Stopped as by its SIGTERM should this script die without cleaning up.
OTEL_EXPORTER_OTLP_ENDPOINT="$otlp_endpoint" POD_NAMESPACE=neurallog-system setpriv --pdeathsig TERM \
  "$bin/tenant-operator" run --kubeconfig "$operator_kubeconfig" --admin-address "$admin_address" \
  --webhook-address "$webhook_address" --webhook-cert-dir "$webhook_certs" --auth-url "$auth_url" \
  --ingress-namespace ingress-nginx --metrics-insecure >"$dir/operator.log" 2>&1 &
pids+=($!)

echo "==> applying config/samples/ (tenant acme)"
k apply -k "$root/config/samples/"
wait_for "tenant acme to be Running" tenant acme --for=jsonpath='{.status.phase}'=Running
wait_for "tenant acme to be registered with Auth" tenant acme --for=condition=AuthRegistered

echo
k get tenants
echo
echo "The same tenant through the deprecated v1 API (converted by the operator's webhook):"
k get tenants.v1.neurallog.io acme -o jsonpath='{.spec.resources}{"\n"}{.spec.redis.config}{"\n"}'
echo
k get namespace,secret,configmap,service,statefulset,deployment,pod,pvc,ingress,networkpolicy,resourcequota,limitrange \
  -n tenant-acme -l neurallog.io/tenant=acme
echo
k describe tenant acme | sed -n '/^Status:/,$p'
cat <<MSG

The tenant is Running: its pods were scheduled on the fake node kwok-node-0, where KWOK reports
them Running and Ready (no container runs), and Redis' claim is bound to a local volume.
Use the cluster yourself:
  export KUBECONFIG=$dir/admin.kubeconfig
  $kubectl get tenants,pods -A

Traces (one per reconcile) are in Jaeger; every Event of the tenant ends with its trace id:
  curl -s '$jaeger_url/api/traces?service=neurallog-tenant-operator&limit=5'
  curl -s '$jaeger_url/api/traces/<trace id from kubectl describe tenant acme>'
With a container runtime, the Jaeger UI can read the same traces: run the jaegertracing/jaeger
image with its OTLP port published and point OTEL_EXPORTER_OTLP_ENDPOINT at it.
MSG

if [[ "${RUN_ONCE:-}" != 1 ]]; then
  cat <<MSG

Delete the tenant:
  $kubectl delete tenant acme
acme has deletionPolicy: Retain, so the operator deregisters it from Auth, removes its workloads
and keeps namespace tenant-acme with Redis' volume, labelled neurallog.io/retained=true; a tenant
acme created again adopts them. A tenant with deletionPolicy: Delete (the default) takes its
namespace with it.

Press Ctrl-C to stop everything (the operator, the cluster, Auth and Jaeger).
MSG
  status=0
  wait -n "${pids[@]}" || status=$?
  # The operator stops (status 0) on Ctrl-C, which reaches it too.
  case "$status" in 0 | 130 | 143) echo "==> stopping"; exit 0 ;; esac
  kill -0 "${pids[0]}" 2>/dev/null && who="the operator" || who=testenv
  fail "$who exited with status $status"
fi

echo
echo "==> deleting tenant acme (deletionPolicy: Retain)"
k delete tenant acme --wait=false
wait_for "tenant acme to be deleted" tenant acme --for=delete
retained="$(k get namespace tenant-acme -o jsonpath='{.metadata.labels.neurallog\.io/retained}/{.metadata.deletionTimestamp}')" \
  || fail "namespace tenant-acme was not kept"
[[ "$retained" == "true/" ]] || fail "namespace tenant-acme is not kept as retained (retained label/deletion time: $retained)"
k get namespace,pvc -n tenant-acme -l neurallog.io/tenant=acme
echo "tenant acme deleted; namespace tenant-acme and its Redis volume kept, marked retained"

echo
echo "==> creating tenant globex (deletionPolicy: Delete), then deleting it"
k apply -f - <<'YAML'
apiVersion: neurallog.io/v2
kind: Tenant
metadata:
  name: globex
spec:
  displayName: Globex
  deletionPolicy: Delete
YAML
wait_for "tenant globex to be Running" tenant globex --for=jsonpath='{.status.phase}'=Running
k get tenant globex
k delete tenant globex --wait=false
wait_for "tenant globex to be deleted" tenant globex --for=delete
wait_for "namespace tenant-globex to be deleted" namespace tenant-globex --for=delete
echo "tenant globex deleted, and namespace tenant-globex with it"

#!/usr/bin/env bash
# `make e2e`: installs the operator through real OLM on a simulated cluster and runs it as its pod
# would.
#
#  1. cluster   kwokctl --runtime binary from the cached tools/ binaries, one fake node (kwok);
#  2. olm       OLM's CRDs, then `olm` and `catalog` run out of cluster against it;
#  3. catalog   `opm serve` of catalog/ plus the bundle this checkout builds (bundle/) as the head
#               of a channel `head`, a gRPC CatalogSource with spec.address, an AllNamespaces
#               OperatorGroup and a Subscription to that channel: the operator installed is the one
#               being built, with its own RBAC (a released bundle needs its own release's binary,
#               which the OLM upgrade test, still to come, is to build and run);
#  4. install   InstallPlan, CSV Succeeded, Tenant CRD established, operator Deployment available
#               (its pod simulated by kwok);
#  5. operator  the real tenant-operator binary with the CSV Deployment's args and env, as the CSV's
#               ServiceAccount (a token of it);
#  6. tenant    the CSV's alm-examples tenant converges to phase Running;
#  7. uninstall delete the Subscription and the CSV; check what OLM and the operator leave behind.
#
# Prints a timeline. On failure it names the step and keeps every component's log in .local/e2e/
# (E2E_DIR); on success the folder is removed unless E2E_KEEP=1. Every process it starts is stopped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${E2E_DIR:-$root/.local/e2e}"
operator_bin="${CARGO_TARGET_DIR:-$root/target}/debug/tenant-operator"
testenv_bin="${CARGO_TARGET_DIR:-$root/target}/debug/testenv"
timeout="${E2E_TIMEOUT:-180}" # seconds each wait may take

kube_bin="$("$root/tools/build.sh" kubernetes)"
etcd_bin="$("$root/tools/build.sh" etcd)"
kwok_bin="$("$root/tools/build.sh" kwok)"
olm_bin="$("$root/tools/build.sh" olm)"
opm_bin="$("$root/tools/build.sh" opm)"
for bin in "$operator_bin" "$testenv_bin"; do
  [[ -x "$bin" ]] || { echo "e2e: $bin is missing: run cargo build first" >&2; exit 1; }
done

# kwokctl runs `kubectl` from PATH; kwokctl itself comes from the kwok build.
export PATH="$kube_bin:$kwok_bin:$PATH"
unset GRPC_PROXY grpc_proxy
rm -rf "$dir"
mkdir -p "$dir"
export KWOK_WORKDIR="$dir/kwok"
cluster="e2e-$$"
kubeconfig="$dir/admin.kubeconfig"
install_ns=neurallog-system
package=neurallog-tenant-operator

k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

# --- processes and cleanup ----------------------------------------------------------------------
pids=()
names=()
start() { # start NAME CMD...: runs CMD in the background, output in $dir/NAME.log
  local name="$1"; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
cluster_created=""
status=1
current_step=""
cleanup() {
  set +e
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  if [[ -n "$cluster_created" ]]; then
    if [[ "$status" != 0 ]]; then
      # The control plane's own logs, before kwokctl removes its workdir.
      k get all,events -A -o wide >"$dir/cluster-state.txt" 2>&1
      k get catalogsources,subscriptions,installplans,csv,operatorgroups -A -o yaml >"$dir/olm-objects.yaml" 2>&1
      k get tenants -o yaml >"$dir/tenants.yaml" 2>&1
      mkdir -p "$dir/control-plane"
      cp "$KWOK_WORKDIR/clusters/$cluster/logs/"*.log "$dir/control-plane/" 2>/dev/null
    fi
    kwokctl delete cluster --name "$cluster" >"$dir/kwokctl-delete.log" 2>&1
  fi
  if [[ "$status" == 0 ]]; then
    [[ "${E2E_KEEP:-}" == 1 ]] || rm -rf "$dir"
  else
    ((${#timeline[@]} == 0)) || printf '  %s\n' "${timeline[@]}" >&2
    echo "e2e: FAILED in step '$current_step'; logs of every component in $dir" >&2
  fi
}
trap 'status=$?; cleanup; exit $status' EXIT
trap 'exit 130' INT TERM

# --- timeline -----------------------------------------------------------------------------------
timeline=()
step_started=0
begin() { current_step="$1"; step_started=$(date +%s.%N); echo "==> $1: $2"; }
done_step() {
  local took; took=$(awk -v a="$step_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  timeline+=("$(printf '%-10s %6ss  %s' "$current_step" "$took" "$1")")
}

# wait_for DESCRIPTION CMD...: polls CMD until it succeeds, for at most $timeout seconds, and fails
# the step if a process started here has died meanwhile.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    for i in "${!pids[@]}"; do
      kill -0 "${pids[i]}" 2>/dev/null || { echo "e2e: ${names[i]} exited while waiting for $what (see ${names[i]}.log)" >&2; return 1; }
    done
    if ((SECONDS >= deadline)); then echo "e2e: timed out after ${timeout}s waiting for $what" >&2; return 1; fi
    sleep 0.5
  done
}
jsonpath_is() { [[ "$(k get "${@:3}" -o "jsonpath=$1" 2>/dev/null)" == "$2" ]]; }
free_port() { "$testenv_bin" free-port; }
# Whether the operator's admin server answers 200 on /readyz (bash's /dev/tcp: no curl needed).
ready() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  local status_line
  IFS= read -r status_line <&3
  exec 3>&-
  [[ "$status_line" == *" 200 "* ]]
}

# --- 1. cluster ---------------------------------------------------------------------------------
begin cluster "kwokctl --runtime binary, one fake node"
cluster_created=1
kwokctl create cluster --name "$cluster" --runtime binary --kubeconfig "$kubeconfig" \
  --kube-apiserver-binary "$kube_bin/kube-apiserver" \
  --kube-controller-manager-binary "$kube_bin/kube-controller-manager" \
  --kube-scheduler-binary "$kube_bin/kube-scheduler" \
  --etcd-binary "$etcd_bin/etcd" --kwok-controller-binary "$kwok_bin/kwok" \
  --wait "${timeout}s" >"$dir/kwokctl-create.log" 2>&1 \
  || { echo "e2e: kwokctl create cluster failed (kwokctl-create.log)" >&2; exit 1; }
k apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
YAML
wait_for "the fake node to be Ready" k wait node kwok-node-0 --for=condition=Ready --timeout=2s
# The Redis volume claim of the sample tenant (no storage class, no provisioner here).
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: e2e-volume-0
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /nonexistent/e2e-volume-0}
YAML
done_step "cluster up, node Ready"

# --- 2. OLM -------------------------------------------------------------------------------------
begin olm "OLM's CRDs, olm and catalog operators"
k create -f "$(dirname "$olm_bin")/crds/" >"$dir/olm-crds.log" 2>&1
wait_for "OLM's CRDs to be established" k wait crd --all --for=condition=Established --timeout=2s
k create namespace olm >/dev/null
KUBECONFIG="$kubeconfig" start olm "$olm_bin/olm" --namespace olm
start catalog "$olm_bin/catalog" --kubeconfig "$kubeconfig" --namespace olm
# Both log "starting workers..." once their informers have synced. They also both try to serve
# health on :8080; the loser logs the bind error and carries on.
wait_for "olm to start its workers" grep -q 'msg="starting workers..."' "$dir/olm.log"
wait_for "catalog to start its workers" grep -q 'msg="starting workers..."' "$dir/catalog.log"
done_step "olm and catalog running"

# --- 3. catalog, OperatorGroup, Subscription ----------------------------------------------------
begin catalog "opm serve catalog/ + bundle/, CatalogSource, OperatorGroup, Subscription"
catalog="$dir/catalog"
cp -r "$root/catalog" "$catalog"
"$opm_bin/opm" render "$root/bundle" -o yaml >"$catalog/$package/bundles/head.yaml"
head_csv="$(sed -n 's/^  name: //p' "$root/bundle/manifests/$package.clusterserviceversion.yaml" | head -1)"
cat >>"$catalog/$package/channels.yaml" <<YAML
---
schema: olm.channel
package: $package
name: head
entries:
  - name: $head_csv
YAML
"$opm_bin/opm" validate "$catalog"
opm_port="$(free_port)"
start opm "$opm_bin/opm" serve "$catalog" -p "$opm_port" --pprof-addr "" \
  -t "$dir/opm-termination.log"
k create namespace "$install_ns" >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: operators.coreos.com/v1alpha1
kind: CatalogSource
metadata:
  name: neurallog
  namespace: olm
spec:
  sourceType: grpc
  address: 127.0.0.1:$opm_port
  displayName: NeuralLog (e2e)
---
apiVersion: operators.coreos.com/v1
kind: OperatorGroup
metadata:
  name: global
  namespace: $install_ns
spec: {}
---
apiVersion: operators.coreos.com/v1alpha1
kind: Subscription
metadata:
  name: $package
  namespace: $install_ns
spec:
  name: $package
  channel: head
  source: neurallog
  sourceNamespace: olm
  installPlanApproval: Automatic
YAML
wait_for "the CatalogSource to connect to opm" \
  jsonpath_is '{.status.connectionState.lastObservedState}' READY catalogsource neurallog -n olm
done_step "catalog READY on port $opm_port"

# --- 4. install ---------------------------------------------------------------------------------
begin install "InstallPlan, CSV Succeeded, CRD established, Deployment available"
wait_for "the Subscription's InstallPlan" \
  bash -c "[[ -n \"\$(kubectl --kubeconfig '$kubeconfig' get subscription $package -n $install_ns -o jsonpath='{.status.installPlanRef.name}')\" ]]"
installplan="$(k get subscription "$package" -n "$install_ns" -o jsonpath='{.status.installPlanRef.name}')"
wait_for "InstallPlan $installplan to complete" jsonpath_is '{.status.phase}' Complete installplan "$installplan" -n "$install_ns"
csv="$(k get subscription "$package" -n "$install_ns" -o jsonpath='{.status.installedCSV}')"
[[ -n "$csv" ]] || csv="$(k get subscription "$package" -n "$install_ns" -o jsonpath='{.status.currentCSV}')"
wait_for "CSV $csv to succeed" jsonpath_is '{.status.phase}' Succeeded csv "$csv" -n "$install_ns"
wait_for "the Tenant CRD to be established" k wait crd tenants.neurallog.io --for=condition=Established --timeout=2s
wait_for "the operator Deployment to be available" \
  k wait deployment "$package" -n "$install_ns" --for=condition=Available --timeout=2s
done_step "$csv Succeeded (InstallPlan $installplan)"

# --- 5. operator --------------------------------------------------------------------------------
begin operator "tenant-operator as the CSV's ServiceAccount, with its Deployment's args and env"
deployment=(deployment "$package" -n "$install_ns")
container='.spec.template.spec.containers[0]'
service_account="$(k get "${deployment[@]}" -o jsonpath='{.spec.template.spec.serviceAccountName}')"
pod="$(k get pods -n "$install_ns" -l app.kubernetes.io/name="$package" -o jsonpath='{.items[0].metadata.name}')"
mapfile -t args < <(k get "${deployment[@]}" -o jsonpath="{range $container.args[*]}{@}{\"\\n\"}{end}")
env_args=()
# Fields separated by '|', not a tab: read collapses runs of whitespace separators, so an empty
# value would shift the fieldRef into its place.
while IFS='|' read -r name value field; do
  # Downward-API values (fieldRef) come from the pod kwok simulates.
  if [[ -n "$field" ]]; then value="$(k get pod "$pod" -n "$install_ns" -o jsonpath="{.$field}")"; fi
  env_args+=("$name=$value")
done < <(k get "${deployment[@]}" -o jsonpath="{range $container.env[*]}{.name}{\"|\"}{.value}{\"|\"}{.valueFrom.fieldRef.fieldPath}{\"\\n\"}{end}")
# The pod's credentials: a token of its ServiceAccount, the cluster's server and CA.
token="$(k create token "$service_account" -n "$install_ns" --duration=1h)"
server="$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
ca_line="certificate-authority-data: $ca"
[[ -n "$ca" ]] || ca_line="insecure-skip-tls-verify: true"
cat >"$dir/operator.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $server
    $ca_line
users:
- name: $service_account
  user:
    token: $token
contexts:
- name: e2e
  context: {cluster: e2e, user: $service_account}
current-context: e2e
YAML
admin_port="$(free_port)"
# The Deployment's admin (8081) and webhook (9443) ports are the pod's own; on this host the
# operator gets free ones.
printf '%s\n' "args: ${args[*]}" "env: ${env_args[*]}" "identity: system:serviceaccount:$install_ns:$service_account" >"$dir/operator.cmdline"
start operator env -u KUBECONFIG "${env_args[@]}" TENANT_OPERATOR_ADMIN_ADDRESS="127.0.0.1:$admin_port" \
  TENANT_OPERATOR_WEBHOOK_ADDRESS=127.0.0.1:0 "$operator_bin" "${args[@]}" --kubeconfig "$dir/operator.kubeconfig"
wait_for "the operator to be ready (/readyz)" ready "$admin_port"
done_step "ready as system:serviceaccount:$install_ns:$service_account"

# --- 6. tenant ----------------------------------------------------------------------------------
begin tenant "the CSV's alm-examples tenant converges"
examples="$(k get csv "$csv" -n "$install_ns" -o jsonpath='{.metadata.annotations.alm-examples}')"
printf '{"apiVersion": "v1", "kind": "List", "items": %s}\n' "$examples" >"$dir/alm-examples.json"
# The v2 example: a v1 one would need the conversion webhook, which the API server cannot reach
# here (KWOK routes no Service).
k create --dry-run=client -f "$dir/alm-examples.json" -o jsonpath='{.apiVersion}{"\t"}{@}{"\n"}' \
  | sed -n 's|^neurallog.io/v2\t||p' >"$dir/example-v2.json"
created="$(k create -f "$dir/example-v2.json" -o name)"
tenant="${created%%$'\n'*}"
tenant="${tenant##*/}"
wait_for "tenant $tenant to reach phase Running" jsonpath_is '{.status.phase}' Running tenant "$tenant"
tenant_ns="$(k get tenant "$tenant" -o jsonpath='{.status.namespace}')"
done_step "tenant $tenant Running in $tenant_ns"

# --- 7. uninstall -------------------------------------------------------------------------------
begin uninstall "delete the Subscription and the CSV"
k delete subscription "$package" -n "$install_ns" --wait=true >/dev/null
k delete csv "$csv" -n "$install_ns" --wait=true >/dev/null
wait_for "the operator Deployment to be garbage-collected" \
  bash -c "! kubectl --kubeconfig '$kubeconfig' get deployment $package -n $install_ns"
# OLM removes the RBAC of the CSV's permissions; the bundle's standalone ClusterRole (the Secrets
# reader the operator binds in each tenant namespace) stays, like the tenants whose RoleBindings
# still name it.
kept_role=clusterrole.rbac.authorization.k8s.io/neurallog-tenant-operator-tenant-secrets
wait_for "the CSV's cluster roles to be removed" \
  bash -c "[[ \"\$(kubectl --kubeconfig '$kubeconfig' get clusterroles,clusterrolebindings -l olm.owner=$csv -o name)\" == '$kept_role' ]]"
left="$dir/left-behind.txt"
{
  echo "# OLM (expected: CRD kept, no CSV/Deployment/RBAC of the CSV but the tenant Secrets reader)"
  k get crd tenants.neurallog.io -o name 2>&1
  k get csv,deployment,serviceaccount,role,rolebinding -n "$install_ns" 2>&1
  k get clusterroles,clusterrolebindings -l "olm.owner=$csv" -o name 2>&1
  echo "# operator (expected: the tenant and its namespace kept)"
  k get tenants 2>&1
  k get deployments,statefulsets,pvc -n "$tenant_ns" 2>&1
} >"$left"
fail=""
k get crd tenants.neurallog.io >/dev/null 2>&1 || fail+=" the Tenant CRD was removed;"
[[ -z "$(k get csv -n "$install_ns" -o name 2>/dev/null)" ]] || fail+=" a CSV is left;"
k get tenant "$tenant" >/dev/null 2>&1 || fail+=" tenant $tenant was removed;"
k get namespace "$tenant_ns" >/dev/null 2>&1 || fail+=" namespace $tenant_ns was removed;"
[[ -z "$fail" ]] || { echo "e2e: after uninstall:$fail (see left-behind.txt)" >&2; exit 1; }
done_step "CSV, Deployment and RBAC gone; CRD, tenant and $tenant_ns kept"
sed 's/^/    /' "$left"

status=0
echo
echo "e2e timeline:"
printf '  %s\n' "${timeline[@]}"

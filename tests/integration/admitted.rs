//! Everything the API server admits, the operator can build: Tenants generated from the CRD's own
//! schema of each served version (valid values, near-valid ones, edge lengths, unusual characters) are created on the
//! real API server; for every one it admits, the operator must accept it and every child it would
//! write must pass a server-side dry-run create. The one refusal allowed is a budget too small for
//! the tenant's own pods, which no schema rule can compute.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use neurallog_tenant_operator::api::Tenant;
use neurallog_tenant_operator::fixtures::generate::values;
use neurallog_tenant_operator::resources::{Platform, access, namespace, network, quota, redis, registry, server};
use proptest::strategy::{Strategy as _, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use testenv::repo_root;

use crate::support::{Controllers, Harness};

/// Tenants generated; the issue asks for at least 500.
const CASES: usize = 500;

/// A child as JSON, with the API resource it is created through.
fn entry<K: kube::Resource<DynamicType = ()> + serde::Serialize>(child: &K) -> (ApiResource, Value) {
    (ApiResource::erase::<K>(&()), serde_json::to_value(child).expect("a child serialises"))
}

/// Every child the operator writes for a tenant, the namespace first.
fn children(
    tenant: &Tenant,
    operator: &k8s_openapi::api::rbac::v1::Subject,
) -> Result<Vec<(ApiResource, Value)>, String> {
    let model = tenant.model().map_err(|invalid| invalid.to_string())?;
    let platform = Platform {
        ingress_namespace: Some("ingress-nginx".into()),
        ingress_class: Some("nginx".into()),
        ingress_tls_secret: Some("wildcard-tls".into()),
        auth_url: Some("http://auth.neurallog.svc:3000".into()),
        ..Platform::default()
    };
    let mut all = vec![entry(&namespace::namespace(&model, None))];
    all.extend(network::network_policies(&model, &platform).iter().map(entry));
    all.extend(quota::resource_quota(&model).as_ref().map(entry));
    all.extend(quota::limit_range(&model).as_ref().map(entry));
    all.push(entry(&redis::secret(&model, &redis::generate_password())));
    all.push(entry(&redis::config_map(&model)));
    all.push(entry(&redis::service(&model)));
    all.push(entry(&redis::stateful_set(&model, &platform)));
    all.push(entry(&server::service(&model)));
    all.push(entry(&server::deployment(&model, &platform)));
    all.push(entry(&registry::service(&model)));
    all.push(entry(&registry::deployment(&model, &platform)));
    all.extend(registry::ingress(&model, &platform).as_ref().map(entry));
    all.push(entry(&access::role_binding(&model, operator)));
    Ok(all)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_child_of_every_admitted_tenant_passes_a_server_side_dry_run() {
    let h = Harness::start(Controllers::None).await;
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("config/crd/bases/neurallog.io_tenants.yaml")).unwrap(),
    )
    .unwrap();
    // A fixed seed: a failure names the case and reproduces.
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let operator = access::subject("system:serviceaccount:neurallog-system:neurallog-tenant-operator");
    // Read back the way the operator reads: the stored version.
    let stored = Api::<Tenant>::all(h.admin.clone());

    let (mut admitted, mut model_refused, mut dry_runs) = (0, Vec::new(), 0);
    let mut failures = Vec::new();
    // Written through each served version: v1 reaches the operator through the conversion webhook.
    for version in ["v1", "v2"] {
        let served = crd["spec"]["versions"].as_array().unwrap().iter().find(|v| v["name"] == version).unwrap();
        let specs = values(&served["schema"]["openAPIV3Schema"]["properties"]["spec"]);
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
        let tenants = Api::<DynamicObject>::all_with(h.admin.clone(), &resource);
        for case in 0..CASES {
            let spec = specs.new_tree(&mut runner).expect("a value").current();
            let name = format!("gen-{version}-{case}");
            let manifest = json!({"apiVersion": format!("neurallog.io/{version}"), "kind": "Tenant", "metadata": {"name": name}, "spec": spec});
            let object: DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
            match tenants.create(&PostParams::default(), &object).await {
                Ok(_) => admitted += 1,
                Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => continue,
                Err(other) => panic!("{version} case {case}: {other}\n{manifest:#}"),
            }
            // As stored, with the defaults the API server filled in, read as the operator reads it.
            let tenant = match stored.get(&name).await {
                Ok(tenant) => tenant,
                Err(error) => {
                    failures.push(format!("{name}: the operator cannot read the admitted tenant: {error}\n{manifest}"));
                    continue;
                }
            };
            let children = match children(&tenant, &operator) {
                Ok(children) => children,
                // The one check no schema rule can make (it adds up the components' resources and
                // replicas against the budget): the tenant is Failed with the shortfall named.
                Err(refused) if refused.contains("the quota allows") => {
                    model_refused.push(format!("{name}: {refused}"));
                    continue;
                }
                Err(refused) => {
                    failures.push(format!("{name}: admitted, but the operator refuses it: {refused}\n{manifest}"));
                    continue;
                }
            };
            for (index, (resource, child)) in children.iter().enumerate() {
                let object: DynamicObject = serde_json::from_value(child.clone()).unwrap();
                let namespace = child["metadata"]["namespace"].as_str();
                let api = match namespace {
                    Some(ns) => Api::<DynamicObject>::namespaced_with(h.admin.clone(), ns, resource),
                    None => Api::<DynamicObject>::all_with(h.admin.clone(), resource),
                };
                // The namespace (first) is created for real, so the others have a home.
                let params = PostParams { dry_run: index > 0, ..PostParams::default() };
                dry_runs += usize::from(index > 0);
                if let Err(error) = api.create(&params, &object).await {
                    failures.push(format!(
                        "{name}: {} {} refused: {error}\ntenant spec: {}",
                        resource.kind,
                        child["metadata"]["name"],
                        serde_json::to_string(&tenant.spec).unwrap_or_default()
                    ));
                }
            }
        }
    }
    println!(
        "generated {} tenants: {admitted} admitted, {} of them over their own budget, {dry_runs} children dry-run, {} failures",
        2 * CASES,
        model_refused.len(),
        failures.len()
    );
    for refused in model_refused.iter().take(5) {
        println!("  over budget: {refused}");
    }
    assert!(admitted >= 2 * CASES / 5, "the generator must reach past validation: only {admitted} admitted");
    assert!(
        failures.is_empty(),
        "{} failures; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n\n")
    );
}

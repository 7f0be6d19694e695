//! NetworkPolicies of the tenant namespace.
//!
//! Ingress is denied by default; Redis accepts only the server; the server and the registry accept
//! each other and, on their HTTP ports, the allowed namespaces and the operator-level ingress
//! namespace; custom rules open the server pods
//! (never Redis) to the peers they name. Custom egress rules limit only the server, and always
//! keep DNS and the tenant namespace reachable. Policies are named by their content, so
//! reordering rules changes nothing and a removed rule's policy can be found and deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::{Platform, child_meta, selector_labels, tenant_labels};
use crate::model::{NAMESPACE_NAME_LABEL, PeerRule, Peers, Protocol, TenantModel};

/// The ports cluster DNS pods serve on, which egress-limited servers may always reach.
const DNS_PORTS: [i32; 2] = [53, 5353];

/// Label of every policy the operator manages, used to find stale ones.
pub const COMPONENT_VALUE: &str = "network-policy";
/// Label telling operator defaults (`default`) from user rules (`custom`).
pub const POLICY_LABEL: &str = "neurallog.io/policy";

fn labels(model: &TenantModel, kind: &str) -> BTreeMap<String, String> {
    let mut labels = tenant_labels(&model.name);
    labels.insert(super::COMPONENT_LABEL.to_owned(), COMPONENT_VALUE.to_owned());
    labels.insert(POLICY_LABEL.to_owned(), kind.to_owned());
    labels
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: (!labels.is_empty()).then_some(labels), ..LabelSelector::default() }
}

fn namespace_peer(namespace: &str, pods: Option<LabelSelector>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector(BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())]))),
        pod_selector: pods,
        ..NetworkPolicyPeer::default()
    }
}

/// Peers of a custom rule: the selected pods in each named namespace (or in the tenant
/// namespace), or the rule's own selectors.
fn peers(rule: &PeerRule) -> Vec<NetworkPolicyPeer> {
    match &rule.peers {
        Peers::Named { pods, namespaces } if namespaces.is_empty() => {
            vec![NetworkPolicyPeer { pod_selector: Some(selector(pods.clone())), ..NetworkPolicyPeer::default() }]
        }
        Peers::Named { pods, namespaces } => {
            namespaces.iter().map(|ns| namespace_peer(ns, Some(selector(pods.clone())))).collect()
        }
        Peers::Selected { peers } => peers.clone(),
    }
}

fn port(protocol: Protocol, number: Option<i32>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.as_str().to_owned()),
        port: number.map(IntOrString::Int),
        ..Default::default()
    }
}

fn ports(rule: &PeerRule) -> Option<Vec<NetworkPolicyPort>> {
    (!rule.ports.is_empty()).then(|| rule.ports.iter().map(|(protocol, number)| port(*protocol, *number)).collect())
}

fn content_name(prefix: &str, rule: &PeerRule) -> String {
    let digest = Sha256::digest(serde_json::to_vec(rule).unwrap_or_default());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hash}")
}

fn policy(model: &TenantModel, name: String, kind: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy { metadata: child_meta(model, name, labels(model, kind)), spec: Some(spec) }
}

/// Every NetworkPolicy the tenant should have (none when disabled).
pub fn network_policies(model: &TenantModel, platform: &Platform) -> Vec<NetworkPolicy> {
    let network = &model.network;
    if !network.enabled {
        return Vec::new();
    }
    let server_pods = || selector(selector_labels(&model.name, super::server::APP));
    let registry_pods = || selector(selector_labels(&model.name, super::registry::APP));
    let redis_pods = selector(selector_labels(&model.name, super::redis::APP));
    let mut policies = vec![
        policy(
            model,
            "default-deny-ingress".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ..NetworkPolicySpec::default()
            },
        ),
        policy(
            model,
            "allow-redis-from-server".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(redis_pods),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: Some(server_pods()), ..Default::default() }]),
                    ports: Some(vec![port(Protocol::Tcp, Some(super::redis::PORT))]),
                }]),
                ..NetworkPolicySpec::default()
            },
        ),
    ];
    // The operator asks each Redis for its INFO (src/controller/operand.rs).
    if let Some(operator_namespace) = &platform.operator_namespace {
        let operator_pods =
            selector(BTreeMap::from([("app.kubernetes.io/name".to_owned(), crate::monitoring::NAME.to_owned())]));
        policies.push(policy(
            model,
            "allow-redis-from-operator".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(selector(selector_labels(&model.name, super::redis::APP))),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![namespace_peer(operator_namespace, Some(operator_pods))]),
                    ports: Some(vec![port(Protocol::Tcp, Some(super::redis::PORT))]),
                }]),
                ..NetworkPolicySpec::default()
            },
        ));
    }

    // Each HTTP component accepts its tenant peer plus the allowed and ingress namespaces. A
    // policy with an empty `from` would open the port to the whole cluster; here the peer is
    // always present, so `from` is never empty.
    let sources: Vec<&str> =
        network.allowed_namespaces.iter().map(String::as_str).chain(platform.ingress_namespace.as_deref()).collect();
    let http_ingress = |name: &str, pods: LabelSelector, peer: LabelSelector, port_number: i32| {
        let mut from = vec![NetworkPolicyPeer { pod_selector: Some(peer), ..Default::default() }];
        from.extend(sources.iter().map(|ns| namespace_peer(ns, None)));
        policy(
            model,
            name.to_owned(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(pods),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(vec![port(Protocol::Tcp, Some(port_number))]),
                }]),
                ..NetworkPolicySpec::default()
            },
        )
    };
    policies.push(http_ingress("allow-server-ingress", server_pods(), registry_pods(), super::endpoints::SERVER_PORT));
    policies.push(http_ingress(
        "allow-registry-ingress",
        registry_pods(),
        server_pods(),
        super::endpoints::REGISTRY_PORT,
    ));

    for rule in &network.ingress_rules {
        policies.push(policy(
            model,
            content_name("custom-ingress", rule),
            "custom",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule { from: Some(peers(rule)), ports: ports(rule) }]),
                ..NetworkPolicySpec::default()
            },
        ));
    }

    if !network.egress_rules.is_empty() {
        // Egress isolation of the server must not cut name resolution or its own tenant.
        policies.push(policy(
            model,
            "allow-server-egress-baseline".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    dns_egress(),
                    NetworkPolicyEgressRule {
                        to: Some(vec![NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector::default()),
                            ..Default::default()
                        }]),
                        ports: None,
                    },
                ]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    for rule in &network.egress_rules {
        policies.push(policy(
            model,
            content_name("custom-egress", rule),
            "custom",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule { to: Some(peers(rule)), ports: ports(rule) }]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    if let Some(backup) = &model.backup {
        policies.extend(backup_policies(model, backup));
    }
    // Identical rules give identical policies; keep one of each name.
    policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    policies.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    policies
}

/// Name resolution, wherever the cluster's DNS pods run. Policies see the DNS pod's own port: 53
/// where CoreDNS serves it, 5353 on OpenShift.
fn dns_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer { namespace_selector: Some(LabelSelector::default()), ..Default::default() }]),
        ports: Some(
            DNS_PORTS
                .iter()
                .flat_map(|&number| [port(Protocol::Udp, Some(number)), port(Protocol::Tcp, Some(number))])
                .collect(),
        ),
    }
}

/// The port an `http(s)://host[:port]` endpoint is served on.
fn endpoint_port(endpoint: &str) -> Option<i32> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(if scheme == "https" { 443 } else { 80 }),
    }
}

/// Backup pods reach the tenant's Redis, name resolution and, for a bucket, the store's port;
/// nothing else. Redis admits them beside the server.
fn backup_policies(model: &TenantModel, backup: &crate::model::backup::BackupModel) -> Vec<NetworkPolicy> {
    let backup_pods = || selector(selector_labels(&model.name, super::backup::APP));
    let redis_pods = || selector(selector_labels(&model.name, super::redis::APP));
    let dns = dns_egress();
    let redis = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer { pod_selector: Some(redis_pods()), ..Default::default() }]),
        ports: Some(vec![port(Protocol::Tcp, Some(super::redis::PORT))]),
    };
    let mut egress = vec![dns, redis];
    // The store may be anywhere (in the cluster or not): its port is opened to any address.
    if let Some(store_port) = backup.destination.s3.as_ref().and_then(|s3| endpoint_port(&s3.endpoint)) {
        egress.push(NetworkPolicyEgressRule { to: None, ports: Some(vec![port(Protocol::Tcp, Some(store_port))]) });
    }
    vec![
        policy(
            model,
            "allow-redis-from-backup".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(redis_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: Some(backup_pods()), ..Default::default() }]),
                    ports: Some(vec![port(Protocol::Tcp, Some(super::redis::PORT))]),
                }]),
                ..NetworkPolicySpec::default()
            },
        ),
        policy(
            model,
            "allow-backup-egress".into(),
            "default",
            NetworkPolicySpec {
                pod_selector: Some(backup_pods()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(egress),
                ..NetworkPolicySpec::default()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    //! Who may reach whom under the generated policies, by the reachability model (the real
    //! node's end-to-end test holds the model to what an enforcer does).

    use std::collections::BTreeSet;

    use super::*;
    use crate::api::v1::{self, NetworkPolicyRule};
    use crate::fixtures::TestTenant;
    use crate::fixtures::reachability::{Endpoint, allowed};

    type Pod = Endpoint;

    fn pod(namespace: &str, labels: &[(&str, &str)]) -> Pod {
        Endpoint::new(namespace, labels)
    }

    fn server() -> Pod {
        pod("tenant-acme", &[("app", "neurallog-server"), ("neurallog.io/tenant", "acme")])
    }
    fn redis() -> Pod {
        pod("tenant-acme", &[("app", "redis"), ("neurallog.io/tenant", "acme")])
    }
    fn registry() -> Pod {
        pod("tenant-acme", &[("app", "neurallog-registry"), ("neurallog.io/tenant", "acme")])
    }

    fn rule(labels: &[(&str, &str)], namespaces: &[&str], ports: &[(v1::Protocol, i32)]) -> NetworkPolicyRule {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NetworkPolicyRule {
            from: labels.clone(),
            to: labels,
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ports: ports
                .iter()
                .map(|(protocol, port)| v1::NetworkPolicyPort { protocol: Some(*protocol), port: Some(*port) })
                .collect(),
            ..NetworkPolicyRule::default()
        }
    }

    fn policies(network: v1::NetworkPolicySpec, ingress_namespace: Option<&str>) -> Vec<NetworkPolicy> {
        let platform = Platform { ingress_namespace: ingress_namespace.map(Into::into), ..Platform::default() };
        let network = serde_json::to_value(network).unwrap();
        network_policies(&TestTenant::new("acme").set("networkPolicy", network).valid_model(), &platform)
    }

    fn names(policies: &[NetworkPolicy]) -> Vec<String> {
        policies.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn backup_pods_reach_redis_dns_and_the_stores_port_and_nothing_else() {
        let mut model = TestTenant::new("acme").valid_model();
        let policies = |model: &TenantModel| network_policies(model, &Platform::default());
        let backup_pod = pod("tenant-acme", &[("app", "backup"), ("neurallog.io/tenant", "acme")]);
        assert!(!allowed(&policies(&model), &backup_pod, &redis(), "TCP", 6379), "no backups, no way in");
        model.backup = Some(crate::model::backup::BackupModel {
            schedule: None,
            keep: 7,
            destination: crate::api::backup::BackupDestination {
                s3: Some(crate::api::backup::S3Destination {
                    endpoint: "https://store.example:8443".into(),
                    bucket: "logs".into(),
                    credentials_secret: "store".into(),
                    ..Default::default()
                }),
                volume_claim: None,
            },
        });
        let p = policies(&model);
        let store = pod("storage", &[("app", "s3")]);
        let dns = pod("kube-system", &[("k8s-app", "kube-dns")]);
        assert!(allowed(&p, &backup_pod, &redis(), "TCP", 6379));
        assert!(allowed(&p, &server(), &redis(), "TCP", 6379), "the server still reaches Redis");
        assert!(allowed(&p, &backup_pod, &store, "TCP", 8443));
        assert!(allowed(&p, &backup_pod, &dns, "UDP", 53));
        assert!(!allowed(&p, &backup_pod, &store, "TCP", 80), "only the store's port");
        assert!(!allowed(&p, &backup_pod, &server(), "TCP", 3030), "not the server");
        assert_eq!(endpoint_port("http://store:7070"), Some(7070));
        assert_eq!(endpoint_port("http://store"), Some(80));
        assert_eq!(endpoint_port("https://store/"), Some(443));
    }

    #[test]
    fn the_operators_pods_reach_redis_from_their_namespace_and_nothing_else_does() {
        let model = TestTenant::new("acme").valid_model();
        let operator = pod("ops", &[("app.kubernetes.io/name", "neurallog-tenant-operator")]);
        let beside_it = pod("ops", &[("app.kubernetes.io/name", "debug")]);
        let elsewhere = pod("other", &[("app.kubernetes.io/name", "neurallog-tenant-operator")]);
        let outside = network_policies(&model, &Platform::default());
        assert!(!allowed(&outside, &operator, &redis(), "TCP", 6379), "no operator namespace, no way in");
        let p = network_policies(&model, &Platform { operator_namespace: Some("ops".into()), ..Platform::default() });
        assert!(allowed(&p, &operator, &redis(), "TCP", 6379));
        assert!(!allowed(&p, &operator, &redis(), "TCP", 6380), "only Redis' port");
        assert!(!allowed(&p, &operator, &server(), "TCP", 3030), "not the server");
        assert!(!allowed(&p, &beside_it, &redis(), "TCP", 6379), "not another pod of its namespace");
        assert!(!allowed(&p, &elsewhere, &redis(), "TCP", 6379), "not the same labels elsewhere");
    }

    #[test]
    fn defaults_isolate_redis_and_close_the_server_without_allowed_namespaces() {
        let p = policies(v1::NetworkPolicySpec::default(), None);
        let outsider = pod("other", &[("app", "neurallog-server")]);
        let neighbour = pod("tenant-acme", &[("app", "debug")]);
        let table = [
            (&server(), &redis(), 6379, true),
            (&server(), &registry(), 3031, true),
            (&registry(), &server(), 3030, true),
            (&registry(), &redis(), 6379, false),
            (&neighbour, &redis(), 6379, false),
            (&neighbour, &server(), 3030, false),
            (&neighbour, &registry(), 3031, false),
            (&outsider, &redis(), 6379, false),
            // Original bug: with no allowed namespaces the server port was open to the cluster.
            (&outsider, &server(), 3030, false),
            (&outsider, &registry(), 3031, false),
        ];
        for (from, to, port, expected) in table {
            assert_eq!(allowed(&p, from, to, "TCP", port), expected, "{} -> {:?}:{port}", from.namespace, to.labels);
        }
    }

    #[test]
    fn allowed_namespaces_and_the_ingress_namespace_reach_only_the_server_port() {
        let network = v1::NetworkPolicySpec { allowed_namespaces: vec!["web".into()], ..Default::default() };
        let p = policies(network, Some("ingress-nginx"));
        for ns in ["web", "ingress-nginx"] {
            let client = pod(ns, &[("app", "anything")]);
            assert!(allowed(&p, &client, &server(), "TCP", 3030), "{ns} reaches the server");
            assert!(allowed(&p, &client, &registry(), "TCP", 3031), "{ns} reaches the registry");
            assert!(!allowed(&p, &client, &registry(), "TCP", 3030), "{ns} reaches only the registry port");
            assert!(!allowed(&p, &client, &server(), "TCP", 9229), "{ns} reaches only port 3030");
            assert!(!allowed(&p, &client, &redis(), "TCP", 6379), "{ns} never reaches Redis");
        }
        assert!(!allowed(&p, &pod("elsewhere", &[]), &server(), "TCP", 3030));
    }

    #[test]
    fn custom_ingress_rules_open_only_the_server_to_the_named_peers() {
        let network = v1::NetworkPolicySpec {
            ingress_rules: vec![rule(&[("app", "prometheus")], &["monitoring"], &[(v1::Protocol::Tcp, 3030)])],
            ..Default::default()
        };
        let p = policies(network, None);
        let prometheus = pod("monitoring", &[("app", "prometheus")]);
        assert!(allowed(&p, &prometheus, &server(), "TCP", 3030));
        // Original bugs: custom rules applied to every pod (Redis included) ...
        assert!(!allowed(&p, &prometheus, &redis(), "TCP", 6379));
        // ... and could only name peers in the tenant namespace.
        assert!(!allowed(&p, &pod("other", &[("app", "prometheus")]), &server(), "TCP", 3030));
    }

    #[test]
    fn an_empty_custom_ingress_rule_stays_inside_the_tenant_namespace() {
        let p =
            policies(v1::NetworkPolicySpec { ingress_rules: vec![rule(&[], &[], &[])], ..Default::default() }, None);
        assert!(allowed(&p, &pod("tenant-acme", &[("app", "debug")]), &server(), "TCP", 3030));
        assert!(!allowed(&p, &pod("other", &[]), &server(), "TCP", 3030));
        assert!(!allowed(&p, &pod("tenant-acme", &[("app", "debug")]), &redis(), "TCP", 6379));
    }

    #[test]
    fn egress_rules_keep_dns_and_the_tenant_reachable_and_limit_only_the_server() {
        let network = v1::NetworkPolicySpec {
            egress_rules: vec![rule(&[("app", "payments")], &["payments"], &[(v1::Protocol::Tcp, 443)])],
            ..Default::default()
        };
        let p = policies(network, None);
        let dns = pod("kube-system", &[("k8s-app", "kube-dns")]);
        // Original bugs: any egress rule cut DNS and server -> Redis.
        assert!(allowed(&p, &server(), &dns, "UDP", 53));
        assert!(allowed(&p, &server(), &dns, "TCP", 53));
        // OpenShift's DNS pods serve on 5353 behind the Service's 53.
        let openshift_dns = pod("openshift-dns", &[("dns.operator.openshift.io/daemonset-dns", "default")]);
        assert!(allowed(&p, &server(), &openshift_dns, "UDP", 5353));
        assert!(allowed(&p, &server(), &openshift_dns, "TCP", 5353));
        assert!(!allowed(&p, &server(), &openshift_dns, "TCP", 5354));
        assert!(allowed(&p, &server(), &redis(), "TCP", 6379));
        assert!(allowed(&p, &server(), &registry(), "TCP", 3031));
        assert!(allowed(&p, &server(), &pod("payments", &[("app", "payments")]), "TCP", 443));
        assert!(!allowed(&p, &server(), &pod("internet", &[]), "TCP", 443));
        // Redis is not egress-isolated by the server's rules.
        assert!(allowed(&p, &redis(), &pod("internet", &[]), "TCP", 443));
    }

    /// The names 0.1.0 gave custom policies (a hash of the rule's pods, namespaces and ports): an
    /// upgrade renames no existing policy. Selector rules only `v2` states have names of their own.
    #[test]
    fn rules_v1_can_state_keep_the_names_0_1_0_gave_them() {
        let p = policies(
            v1::NetworkPolicySpec {
                ingress_rules: vec![rule(&[("app", "a")], &["web"], &[(v1::Protocol::Tcp, 1)])],
                ..Default::default()
            },
            None,
        );
        assert!(names(&p).contains(&"custom-ingress-453a33ad06".to_owned()), "{:?}", names(&p));
        let mut model = TestTenant::new("acme").valid_model();
        model.network.ingress_rules =
            vec![PeerRule { peers: Peers::Selected { peers: vec![NetworkPolicyPeer::default()] }, ports: Vec::new() }];
        let selected = network_policies(&model, &Platform::default());
        assert!(names(&selected).iter().any(|n| n.starts_with("custom-ingress-") && n != "custom-ingress-453a33ad06"));
    }

    /// The custom policies of `policies`, by name, each with the one label value its peers select
    /// (`app` of the rule it was made from).
    fn custom_by_name(policies: &[NetworkPolicy]) -> BTreeMap<String, (String, NetworkPolicy)> {
        policies
            .iter()
            .filter(|p| p.metadata.labels.as_ref().is_some_and(|l| l[POLICY_LABEL] == "custom"))
            .map(|p| {
                let spec = p.spec.as_ref().unwrap();
                let peers = spec.ingress.iter().flatten().flat_map(|rule| rule.from.iter().flatten());
                let apps: Vec<String> = peers
                    .filter_map(|peer| peer.pod_selector.as_ref()?.match_labels.as_ref()?.get("app").cloned())
                    .collect();
                assert_eq!(apps.len(), 1, "one peer per test rule: {p:?}");
                (p.metadata.name.clone().unwrap(), (apps[0].clone(), p.clone()))
            })
            .collect()
    }

    #[test]
    fn policies_are_named_by_content_not_position() {
        let a = rule(&[("app", "a")], &[], &[(v1::Protocol::Tcp, 1)]);
        let b = rule(&[("app", "b")], &[], &[(v1::Protocol::Udp, 2)]);
        let c = rule(&[("app", "c")], &["web"], &[(v1::Protocol::Tcp, 3)]);
        let ingress = |rules: &[&NetworkPolicyRule]| {
            policies(
                v1::NetworkPolicySpec {
                    ingress_rules: rules.iter().map(|r| (*r).clone()).collect(),
                    ..Default::default()
                },
                None,
            )
        };
        let three = ingress(&[&a, &b, &c]);
        assert_eq!(names(&three), names(&ingress(&[&c, &a, &b])), "reordering renames nothing");
        let before = custom_by_name(&three);
        let apps: BTreeSet<&str> = before.values().map(|(app, _)| app.as_str()).collect();
        assert_eq!(apps, BTreeSet::from(["a", "b", "c"]), "one policy per rule: {before:?}");

        // Rule 1 of 3 removed: exactly its policy goes; rules 0 and 2 keep their policies, by
        // name and content.
        let after = custom_by_name(&ingress(&[&a, &c]));
        let removed: Vec<_> = before.iter().filter(|(name, _)| !after.contains_key(*name)).collect();
        assert_eq!(removed.len(), 1, "removing a rule removes exactly one policy: {removed:?}");
        assert_eq!(removed[0].1.0, "b", "the removed policy is the removed rule's: {}", removed[0].0);
        assert_eq!(after.len(), 2);
        for (name, (app, policy)) in &after {
            let (app_before, policy_before) =
                before.get(name).unwrap_or_else(|| panic!("{name} (rule {app}) is a new name: {before:?}"));
            assert_eq!((app, policy), (app_before, policy_before), "{name} holds what it held");
        }
        // And in any order, as if rule 1 had never been.
        assert_eq!(after, custom_by_name(&ingress(&[&c, &a])));
    }

    #[test]
    fn disabled_means_no_policies_and_every_policy_is_labelled_for_cleanup() {
        assert!(policies(v1::NetworkPolicySpec { enabled: Some(false), ..Default::default() }, None).is_empty());
        for p in policies(v1::NetworkPolicySpec::default(), None) {
            assert_eq!(p.metadata.labels.as_ref().unwrap()[super::super::COMPONENT_LABEL], COMPONENT_VALUE);
        }
    }
}

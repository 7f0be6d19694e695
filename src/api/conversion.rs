//! Conversion between `v1` and `v2` Tenants, as the API server asks for it in a ConversionReview.
//!
//! Lossless both ways: each spec maps field by field; what the target version cannot state is
//! kept whole in an annotation on the converted object (`v1` spec on a `v2` object, and the other
//! way round) and restored when the object converts back, as long as the object was not changed
//! in between. So v1 → v2 → v1 and v2 → v1 → v2 give back the object they started from. A stash
//! that no longer matches (the object was edited in the other version since) is left as it is:
//! it is never restored, and the edit wins. The status maps one to one. Metadata is passed through
//! untouched but for those annotations, as the API server requires.
//!
//! Pure: no I/O, no panics on any input; every failure names the object and the field.

use std::collections::BTreeMap;

use kube::core::Status;
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::common::{REDIS_ENUM_DIRECTIVES, REDIS_INTEGER_DIRECTIVES};
use super::{GROUP, KIND, v1, v2};
use crate::model::NAMESPACE_NAME_LABEL;

/// The ConversionReview version the webhook speaks (the CRD's `conversionReviewVersions`).
pub const REVIEW_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// On a `v2` object: the `v1` spec it came from, where `v2` cannot state all of it.
pub const V1_SPEC_ANNOTATION: &str = "conversion.neurallog.io/v1-spec";
/// On a `v1` object: the `v2` spec it came from, where `v1` cannot state all of it.
pub const V2_SPEC_ANNOTATION: &str = "conversion.neurallog.io/v2-spec";

/// Why an object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error(
        "{object}: cannot convert from {from:?} to {to:?}: this webhook converts Tenants between neurallog.io/v1 and neurallog.io/v2"
    )]
    UnsupportedVersion { object: String, from: String, to: String },
    #[error("{object}: {field}: {message}")]
    Invalid { object: String, field: String, message: String },
}

/// Answers a ConversionReview: every object converted, or a failure naming the first object that
/// could not be.
pub fn review(review: ConversionReview) -> ConversionReview {
    if review.types.api_version != REVIEW_API_VERSION {
        let message = format!(
            "ConversionReview {:?} is not supported: this webhook speaks {REVIEW_API_VERSION}",
            review.types.api_version
        );
        return ConversionResponse::invalid(Status::failure(&message, "BadRequest").with_code(400)).into_review();
    }
    let request = match ConversionRequest::from_review(review) {
        Ok(request) => request,
        Err(error) => {
            return ConversionResponse::invalid(Status::failure(&error.to_string(), "BadRequest").with_code(400))
                .into_review();
        }
    };
    let converted: Result<Vec<Value>, ConversionError> =
        request.objects.iter().map(|object| convert(object, &request.desired_api_version)).collect();
    let response = ConversionResponse::for_request(request);
    match converted {
        Ok(objects) => response.success(objects),
        Err(error) => response.failure(Status::failure(&error.to_string(), "Invalid").with_code(422)),
    }
    .into_review()
}

/// One Tenant converted to `desired` (`neurallog.io/v1` or `neurallog.io/v2`).
pub fn convert(object: &Value, desired: &str) -> Result<Value, ConversionError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map_or_else(|| "Tenant (unnamed)".to_owned(), |name| format!("Tenant {name}"));
    let invalid =
        |field: &str, message: String| ConversionError::Invalid { object: name.clone(), field: field.into(), message };
    let Some(fields) = object.as_object() else {
        return Err(invalid("(object)", "not a JSON object".into()));
    };
    let from = fields.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if fields.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Err(invalid("kind", format!("must be {KIND}")));
    }
    let (v1, v2) = (format!("{GROUP}/v1"), format!("{GROUP}/v2"));
    let unsupported =
        || ConversionError::UnsupportedVersion { object: name.clone(), from: from.into(), to: desired.into() };
    if from != v1 && from != v2 {
        return Err(unsupported());
    }
    if desired != v1 && desired != v2 {
        return Err(unsupported());
    }
    if from == desired {
        return Ok(object.clone());
    }
    let mut annotations = annotations(fields).map_err(|message| invalid("metadata.annotations", message))?;
    let spec = fields.get("spec").cloned().unwrap_or(Value::Object(Map::new()));
    let status = fields.get("status").filter(|status| !status.is_null());
    let (spec, status) = if desired == v2 {
        let spec1: v1::TenantSpec = parse(&spec, "spec").map_err(|(field, message)| invalid(&field, message))?;
        let status = status
            .map(|status| parse::<v1::TenantStatus>(status, "status"))
            .transpose()
            .map_err(|(field, message)| invalid(&field, message))?;
        let spec2 =
            restore(&mut annotations, V2_SPEC_ANNOTATION, &spec1, spec_to_v1).unwrap_or_else(|| spec_to_v2(&spec1));
        stash(&mut annotations, V1_SPEC_ANNOTATION, &spec1, spec_to_v1(&spec2) != spec1);
        (to_value(&spec2), status.as_ref().map(status_to_v2).map(|s| to_value(&s)))
    } else {
        let spec2: v2::TenantSpec = parse(&spec, "spec").map_err(|(field, message)| invalid(&field, message))?;
        let status = status
            .map(|status| parse::<v2::TenantStatus>(status, "status"))
            .transpose()
            .map_err(|(field, message)| invalid(&field, message))?;
        let spec1 =
            restore(&mut annotations, V1_SPEC_ANNOTATION, &spec2, spec_to_v2).unwrap_or_else(|| spec_to_v1(&spec2));
        stash(&mut annotations, V2_SPEC_ANNOTATION, &spec2, spec_to_v2(&spec1) != spec2);
        (to_value(&spec1), status.as_ref().map(status_to_v1).map(|s| to_value(&s)))
    };
    let mut converted = fields.clone();
    converted.insert("apiVersion".into(), Value::String(desired.to_owned()));
    converted.insert("spec".into(), spec);
    if let Some(status) = status {
        converted.insert("status".into(), status);
    }
    if let Some(Value::Object(metadata)) = converted.get_mut("metadata") {
        if annotations.is_empty() {
            metadata.remove("annotations");
        } else {
            metadata.insert("annotations".into(), to_value(&annotations));
        }
    }
    Ok(Value::Object(converted))
}

/// The object's annotations (none when it has none).
fn annotations(fields: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    match fields.get("metadata").and_then(|metadata| metadata.get("annotations")) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|error| format!("not a map of strings: {error}")),
    }
}

/// What a stash annotation holds: the spec, and the value the annotation had before, if any (an
/// object may carry anything under any key; the round trip gives it back).
#[derive(serde::Deserialize, Serialize)]
struct Stash<S> {
    spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced: Option<String>,
}

/// The spec stashed under `key` when it still maps to `current` (the object was not changed in
/// the other version since); the annotation is consumed then (what it replaced comes back), and
/// left alone otherwise.
fn restore<S: DeserializeOwned, C: PartialEq>(
    annotations: &mut BTreeMap<String, String>,
    key: &str,
    current: &C,
    back: fn(&S) -> C,
) -> Option<S> {
    let stash: Stash<S> = serde_json::from_str(annotations.get(key)?).ok()?;
    if back(&stash.spec) != *current {
        return None;
    }
    match stash.replaced {
        Some(replaced) => annotations.insert(key.to_owned(), replaced),
        None => annotations.remove(key),
    };
    Some(stash.spec)
}

/// Keeps `spec` under `key` when the converted object cannot state all of it.
fn stash<S: Serialize>(annotations: &mut BTreeMap<String, String>, key: &str, spec: &S, lossy: bool) {
    if lossy {
        let stash = Stash { spec, replaced: annotations.get(key).cloned() };
        annotations.insert(key.to_owned(), serde_json::to_string(&stash).unwrap_or_default());
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Reads `value` as a `T`, refusing anything `T` would drop (an unknown field): conversion must
/// not lose what it does not understand. The error is (field path, message).
fn parse<T: DeserializeOwned + Serialize>(value: &Value, root: &str) -> Result<T, (String, String)> {
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { root.to_owned() } else { format!("{root}.{path}") };
        (field, error.into_inner().to_string())
    })?;
    if let Some(path) = dropped(value, &to_value(&parsed)) {
        return Err((format!("{root}{path}"), "unknown field".into()));
    }
    Ok(parsed)
}

/// The path of the first field of `input` that `output` does not have (a null, an empty map and
/// an empty list are absent values).
fn dropped(input: &Value, output: &Value) -> Option<String> {
    let absent = |value: &Value| match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
        _ => false,
    };
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => input.iter().find_map(|(key, value)| match output.get(key) {
            _ if absent(value) => None,
            None => Some(format!(".{key}")),
            Some(kept) => dropped(value, kept).map(|path| format!(".{key}{path}")),
        }),
        (Value::Array(input), Value::Array(output)) => input
            .iter()
            .zip(output)
            .enumerate()
            .find_map(|(index, (value, kept))| dropped(value, kept).map(|path| format!("[{index}]{path}"))),
        _ => None,
    }
}

// v1 → v2.

fn any<T>(values: &[&Option<T>]) -> bool {
    values.iter().any(|value| value.is_some())
}

fn spec_to_v2(spec: &v1::TenantSpec) -> v2::TenantSpec {
    v2::TenantSpec {
        version: None,
        upgrade: None,
        backup: None,
        restore_from: None,
        display_name: spec.display_name.clone(),
        description: spec.description.clone(),
        deletion_policy: spec.deletion_policy,
        quota: spec.resources.as_ref().map(quota_to_v2),
        server: spec.server.as_ref().map(|server| v2::Server {
            replicas: server.replicas,
            image: server.image.clone(),
            resources: server.resources.as_ref().map(resources_to_v2),
            env: server.env.iter().map(env_to_v2).collect(),
        }),
        redis: spec.redis.as_ref().map(|redis| v2::Redis {
            replicas: redis.replicas,
            image: redis.image.clone(),
            resources: redis.resources.as_ref().map(resources_to_v2),
            storage: redis.storage.clone(),
            config: (!redis.config.is_empty()).then(|| redis_config_to_v2(&redis.config)),
        }),
        registry: spec.registry.as_ref().map(|registry| v2::Registry {
            replicas: registry.replicas,
            image: registry.image.clone(),
            resources: registry.resources.as_ref().map(resources_to_v2),
            exposure: registry.base_domain.clone().map(|base_domain| v2::Exposure { base_domain }),
        }),
        network_policy: spec.network_policy.as_ref().map(|network| v2::NetworkPolicy {
            enabled: network.enabled,
            allowed_namespaces: network.allowed_namespaces.clone(),
            ingress: network
                .ingress_rules
                .iter()
                .map(|rule| v2::IngressRule {
                    description: rule.description.clone(),
                    from: peers_to_v2(&rule.from, &rule.namespaces),
                    ports: ports_to_v2(&rule.ports),
                })
                .collect(),
            egress: network
                .egress_rules
                .iter()
                .map(|rule| v2::EgressRule {
                    description: rule.description.clone(),
                    to: peers_to_v2(&rule.to, &rule.namespaces),
                    ports: ports_to_v2(&rule.ports),
                })
                .collect(),
        }),
    }
}

fn request(value: &Option<v1::ResourceLimit>) -> Option<String> {
    value.as_ref().and_then(|v| v.request.clone())
}

fn limit(value: &Option<v1::ResourceLimit>) -> Option<String> {
    value.as_ref().and_then(|v| v.limit.clone())
}

fn quota_to_v2(resources: &v1::ResourceRequirements) -> v2::Quota {
    let requests = v2::QuotaRequests {
        cpu: request(&resources.cpu),
        memory: request(&resources.memory),
        // The quota caps storage by its limit, else its request (v1's rule).
        storage: limit(&resources.storage).or_else(|| request(&resources.storage)),
    };
    let limits = v2::ResourceList { cpu: limit(&resources.cpu), memory: limit(&resources.memory) };
    v2::Quota {
        requests: any(&[&requests.cpu, &requests.memory, &requests.storage]).then_some(requests),
        limits: any(&[&limits.cpu, &limits.memory]).then_some(limits),
    }
}

fn resources_to_v2(resources: &v1::ResourceRequirements) -> v2::Resources {
    let requests = v2::ResourceList { cpu: request(&resources.cpu), memory: request(&resources.memory) };
    let limits = v2::ResourceList { cpu: limit(&resources.cpu), memory: limit(&resources.memory) };
    v2::Resources {
        requests: any(&[&requests.cpu, &requests.memory]).then_some(requests),
        limits: any(&[&limits.cpu, &limits.memory]).then_some(limits),
    }
}

fn key_to_v2(key: &v1::KeySelector) -> v2::KeySelector {
    v2::KeySelector { name: key.name.clone(), key: key.key.clone(), optional: key.optional }
}

fn env_to_v2(var: &v1::EnvVar) -> v2::EnvVar {
    v2::EnvVar {
        name: var.name.clone(),
        value: var.value.clone(),
        value_from: var.value_from.as_ref().map(|source| v2::EnvVarSource {
            config_map_key_ref: source.config_map_key_ref.as_ref().map(key_to_v2),
            secret_key_ref: source.secret_key_ref.as_ref().map(key_to_v2),
            field_ref: None,
        }),
    }
}

/// The directives `v2` types become fields; the others stay directives. A value its field cannot
/// hold (stored before `v1` checked it) is left out, and kept by the stash.
fn redis_config_to_v2(config: &BTreeMap<String, String>) -> v2::RedisConfig {
    fn word<T: DeserializeOwned>(config: &BTreeMap<String, String>, key: &str) -> Option<T> {
        config.get(key).and_then(|value| serde_json::from_value(Value::String(value.clone())).ok())
    }
    let integer = |key: &str| config.get(key).and_then(|value| value.parse::<i64>().ok());
    let typed: Vec<&str> = REDIS_ENUM_DIRECTIVES
        .iter()
        .map(|(key, _)| *key)
        .chain(REDIS_INTEGER_DIRECTIVES.iter().map(|(key, _, _)| *key))
        .collect();
    v2::RedisConfig {
        maxmemory_policy: word(config, "maxmemory-policy"),
        appendfsync: word(config, "appendfsync"),
        loglevel: word(config, "loglevel"),
        timeout: integer("timeout"),
        tcp_keepalive: integer("tcp-keepalive"),
        databases: integer("databases"),
        maxclients: integer("maxclients"),
        hz: integer("hz"),
        extra: config
            .iter()
            .filter(|(key, _)| !typed.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn labels(labels: &BTreeMap<String, String>) -> v2::LabelSelector {
    v2::LabelSelector { match_labels: labels.clone(), match_expressions: Vec::new() }
}

/// `v1`'s peers: pods by labels, in each named namespace or in the tenant namespace.
fn peers_to_v2(pods: &BTreeMap<String, String>, namespaces: &[String]) -> Vec<v2::Peer> {
    if namespaces.is_empty() {
        return vec![v2::Peer { pod_selector: Some(labels(pods)), namespace_selector: None }];
    }
    namespaces
        .iter()
        .map(|namespace| v2::Peer {
            pod_selector: Some(labels(pods)),
            namespace_selector: Some(labels(&BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.clone())]))),
        })
        .collect()
}

/// `v1`'s port 0 ("every port") is `v2`'s port left out.
fn ports_to_v2(ports: &[v1::NetworkPolicyPort]) -> Vec<v2::Port> {
    ports.iter().map(|port| v2::Port { protocol: port.protocol, port: port.port.filter(|n| *n != 0) }).collect()
}

fn status_to_v2(status: &v1::TenantStatus) -> v2::TenantStatus {
    v2::TenantStatus {
        phase: status.phase,
        conditions: status.conditions.clone(),
        namespace: status.namespace.clone(),
        observed_generation: status.observed_generation,
        server: status.server_status.clone(),
        redis: status.redis_status.clone(),
        registry: status.registry_status.clone(),
        version: status.version.clone(),
        target_version: status.target_version.clone(),
        previous_version: status.previous_version.clone(),
        images: status.images.clone(),
        backup: status.backup.clone(),
    }
}

// v2 → v1.

fn spec_to_v1(spec: &v2::TenantSpec) -> v1::TenantSpec {
    v1::TenantSpec {
        display_name: spec.display_name.clone(),
        description: spec.description.clone(),
        deletion_policy: spec.deletion_policy,
        resources: spec.quota.as_ref().map(|quota| {
            let requests = quota.requests.clone().unwrap_or_default();
            let limits = quota.limits.clone().unwrap_or_default();
            v1::ResourceRequirements {
                cpu: pair(requests.cpu, limits.cpu),
                memory: pair(requests.memory, limits.memory),
                storage: pair(requests.storage, None),
            }
        }),
        server: spec.server.as_ref().map(|server| v1::ServerSpec {
            replicas: server.replicas,
            image: server.image.clone(),
            resources: server.resources.as_ref().map(resources_to_v1),
            env: server.env.iter().map(env_to_v1).collect(),
        }),
        redis: spec.redis.as_ref().map(|redis| v1::RedisSpec {
            replicas: redis.replicas,
            image: redis.image.clone(),
            resources: redis.resources.as_ref().map(resources_to_v1),
            storage: redis.storage.clone(),
            config: redis.config.as_ref().map(v2::RedisConfig::directives).unwrap_or_default(),
        }),
        registry: spec.registry.as_ref().map(|registry| v1::RegistrySpec {
            replicas: registry.replicas,
            image: registry.image.clone(),
            resources: registry.resources.as_ref().map(resources_to_v1),
            base_domain: registry.exposure.as_ref().map(|exposure| exposure.base_domain.clone()),
        }),
        network_policy: spec.network_policy.as_ref().map(|network| v1::NetworkPolicySpec {
            enabled: network.enabled,
            allowed_namespaces: network.allowed_namespaces.clone(),
            ingress_rules: network
                .ingress
                .iter()
                .map(|rule| {
                    let (from, namespaces) = peers_to_v1(&rule.from);
                    v1::NetworkPolicyRule {
                        description: rule.description.clone(),
                        from,
                        to: BTreeMap::new(),
                        namespaces,
                        ports: ports_to_v1(&rule.ports),
                    }
                })
                .collect(),
            egress_rules: network
                .egress
                .iter()
                .map(|rule| {
                    let (to, namespaces) = peers_to_v1(&rule.to);
                    v1::NetworkPolicyRule {
                        description: rule.description.clone(),
                        from: BTreeMap::new(),
                        to,
                        namespaces,
                        ports: ports_to_v1(&rule.ports),
                    }
                })
                .collect(),
        }),
    }
}

fn pair(request: Option<String>, limit: Option<String>) -> Option<v1::ResourceLimit> {
    (request.is_some() || limit.is_some()).then_some(v1::ResourceLimit { request, limit })
}

fn resources_to_v1(resources: &v2::Resources) -> v1::ResourceRequirements {
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    v1::ResourceRequirements {
        cpu: pair(requests.cpu, limits.cpu),
        memory: pair(requests.memory, limits.memory),
        storage: None,
    }
}

fn key_to_v1(key: &v2::KeySelector) -> v1::KeySelector {
    v1::KeySelector { name: key.name.clone(), key: key.key.clone(), optional: key.optional }
}

/// A `fieldRef` has no `v1` form: the variable keeps its name and loses its source there.
fn env_to_v1(var: &v2::EnvVar) -> v1::EnvVar {
    v1::EnvVar {
        name: var.name.clone(),
        value: var.value.clone(),
        value_from: var.value_from.as_ref().and_then(|source| {
            let source = v1::EnvVarSource {
                config_map_key_ref: source.config_map_key_ref.as_ref().map(key_to_v1),
                secret_key_ref: source.secret_key_ref.as_ref().map(key_to_v1),
            };
            (source.config_map_key_ref.is_some() || source.secret_key_ref.is_some()).then_some(source)
        }),
    }
}

/// `v2`'s peers in `v1`'s form where they have one; otherwise the first peer's pod labels in the
/// tenant namespace (the stash keeps the rest).
fn peers_to_v1(peers: &[v2::Peer]) -> (BTreeMap<String, String>, Vec<String>) {
    v2::named_peers(peers).unwrap_or_else(|| {
        let pods = peers.first().and_then(|peer| peer.pod_selector.as_ref()).map(|s| s.match_labels.clone());
        (pods.unwrap_or_default(), Vec::new())
    })
}

fn ports_to_v1(ports: &[v2::Port]) -> Vec<v1::NetworkPolicyPort> {
    ports.iter().map(|port| v1::NetworkPolicyPort { protocol: port.protocol, port: port.port }).collect()
}

fn status_to_v1(status: &v2::TenantStatus) -> v1::TenantStatus {
    v1::TenantStatus {
        conditions: status.conditions.clone(),
        phase: status.phase,
        namespace: status.namespace.clone(),
        observed_generation: status.observed_generation,
        server_status: status.server.clone(),
        redis_status: status.redis.clone(),
        registry_status: status.registry.clone(),
        version: status.version.clone(),
        target_version: status.target_version.clone(),
        previous_version: status.previous_version.clone(),
        images: status.images.clone(),
        backup: status.backup.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use serde_json::json;

    use super::*;
    use crate::fixtures::generate::values;

    /// Round trips each way; the issue asks for at least 10,000.
    const ROUND_TRIPS: usize = 10_000;

    fn schema(version: &str, part: &str) -> Value {
        let crd = to_value(&crate::api::crd(&crate::api::ConversionService::default()));
        let versions = crd["spec"]["versions"].as_array().cloned().unwrap_or_default();
        let served = versions.into_iter().find(|v| v["name"] == version).expect("version served");
        served["schema"]["openAPIV3Schema"]["properties"][part].clone()
    }

    /// The object as its version's types read it (defaults filled in, nulls gone), metadata as is;
    /// `None` when they cannot read it. Read twice: a null reads as no value, which the next read
    /// fills with the field's default, as the operator's own read does.
    fn normalised(object: &Value) -> Option<Value> {
        read_once(&read_once(object)?)
    }

    fn read_once(object: &Value) -> Option<Value> {
        fn read<T: DeserializeOwned + Serialize>(value: &Value, root: &str) -> Option<Value> {
            parse::<T>(value, root).ok().map(|typed| to_value(&typed))
        }
        let mut object = object.clone();
        let v1 = object["apiVersion"] == "neurallog.io/v1";
        object["spec"] = if v1 {
            read::<v1::TenantSpec>(&object["spec"], "spec")
        } else {
            read::<v2::TenantSpec>(&object["spec"], "spec")
        }?;
        if !object["status"].is_null() {
            object["status"] = if v1 {
                read::<v1::TenantStatus>(&object["status"], "status")
            } else {
                read::<v2::TenantStatus>(&object["status"], "status")
            }?;
        }
        Some(object)
    }

    /// Generated objects of `version` that its types read, each converted to `other` and back.
    fn round_trips(version: &str, other: &str) {
        let (spec, status) = (values(&schema(version, "spec")), values(&schema(version, "status")));
        let annotation = proptest::sample::select(vec!["team", V1_SPEC_ANNOTATION, V2_SPEC_ANNOTATION]);
        let annotations = proptest::collection::btree_map(annotation, "[a-z{}\":]{0,12}", 0..2);
        let objects = (spec, proptest::option::of(status), annotations, 0..1000u32).prop_map(
            move |(spec, status, annotations, n)| {
                let mut object = json!({
                    "apiVersion": format!("neurallog.io/{version}"), "kind": "Tenant",
                    "metadata": {"name": format!("t-{n}"), "uid": format!("uid-{n}"), "generation": 3, "resourceVersion": "42"},
                    "spec": spec,
                });
                if !annotations.is_empty() {
                    object["metadata"]["annotations"] = to_value(&annotations);
                }
                if let Some(status) = status {
                    object["status"] = status;
                }
                object
            },
        );
        // A fixed seed: a failure names the case and reproduces.
        let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let (from, to) = (format!("neurallog.io/{version}"), format!("neurallog.io/{other}"));
        let (mut checked, mut unreadable, mut stashed) = (0, 0, 0);
        while checked < ROUND_TRIPS {
            let object = objects.new_tree(&mut runner).expect("a value").current();
            // Only what the version's own types read can be stored: an unknown enum word cannot.
            let Some(expected) = normalised(&object) else {
                unreadable += 1;
                continue;
            };
            let there = convert(&object, &to).unwrap_or_else(|error| panic!("{error}\n{object:#}"));
            assert_eq!(there["apiVersion"], to.as_str());
            let mut metadata = there["metadata"].clone();
            if let Some(map) = metadata.as_object_mut() {
                map.remove("annotations");
            }
            let mut original = object["metadata"].clone();
            if let Some(map) = original.as_object_mut() {
                map.remove("annotations");
            }
            assert_eq!(metadata, original, "only annotations of metadata may change");
            stashed += usize::from(
                there
                    .pointer("/metadata/annotations")
                    .is_some_and(|a| a.get(V1_SPEC_ANNOTATION).is_some() || a.get(V2_SPEC_ANNOTATION).is_some())
                    && object.pointer("/metadata/annotations").is_none(),
            );
            let back = convert(&there, &from).unwrap_or_else(|error| panic!("{error}\n{there:#}"));
            assert_eq!(normalised(&back), Some(expected), "round trip of\n{object:#}\nthrough\n{there:#}");
            checked += 1;
        }
        println!(
            "{version} → {other} → {version}: {checked} identities, {stashed} through a stash, {unreadable} unreadable skipped"
        );
        assert!(stashed > 0, "the generator must reach what {other} cannot state");
    }

    #[test]
    fn v1_to_v2_to_v1_is_the_identity() {
        round_trips("v1", "v2");
    }

    #[test]
    fn v2_to_v1_to_v2_is_the_identity() {
        round_trips("v2", "v1");
    }

    /// ConversionReviews as the API server sends them, each answered as committed beside it
    /// (`tests/fixtures/conversion`). `UPDATE_SNAPSHOTS=1` rewrites the answers after a deliberate
    /// change; review the diff.
    #[test]
    fn reviews_are_answered_as_their_snapshots_say() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conversion");
        let mut requests: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.to_string_lossy().ends_with(".request.json"))
            .collect();
        requests.sort();
        assert!(requests.len() >= 4, "snapshots missing in {}", dir.display());
        for path in requests {
            let request: ConversionReview =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("request")).expect("a ConversionReview");
            let answer = serde_json::to_string_pretty(&review(request)).expect("serialises") + "\n";
            let expected_path = path.to_string_lossy().replace(".request.json", ".response.json");
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::write(&expected_path, &answer).expect("snapshot written");
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            assert!(answer == expected, "{expected_path} differs from the answer:\n{answer}");
        }
    }

    #[test]
    fn a_review_of_another_version_or_without_a_request_is_refused() {
        let review_of = |value: Value| review(serde_json::from_value(value).expect("a ConversionReview"));
        let beta = review_of(json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "request": {"uid": "u", "desiredAPIVersion": "neurallog.io/v2", "objects": []}}));
        let result = beta.response.expect("a response").result;
        assert!(result.is_failure() && result.message.contains("v1beta1"), "{result:?}");
        let empty = review_of(json!({"apiVersion": REVIEW_API_VERSION, "kind": "ConversionReview"}));
        assert!(empty.response.expect("a response").result.is_failure());
    }

    #[test]
    fn a_web_admin_replace_through_v1_keeps_what_only_v2_states_when_it_changes_nothing_of_it() {
        // Stored as v2 with a fieldRef; read through v1 (stash), replaced with metadata.name only
        // and the v1 spec changed elsewhere: the stash is gone with the annotations, so the
        // fieldRef variable keeps its name but has no source — what a v1 client can say.
        let stored = json!({"apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": "a", "uid": "u"},
            "spec": {"server": {"env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}}});
        let read = convert(&stored, "neurallog.io/v1").expect("converts");
        assert!(read.pointer(&format!("/metadata/annotations/{}", V2_SPEC_ANNOTATION.replace('/', "~1"))).is_some());
        let mut replaced = read.clone();
        replaced["metadata"] = json!({"name": "a", "uid": "u"});
        replaced["spec"]["displayName"] = json!("A");
        let written = convert(&replaced, "neurallog.io/v2").expect("converts");
        assert_eq!(written["spec"]["server"]["env"], json!([{"name": "POD_IP"}]));
        // Unchanged apart from its annotations, the stash restores everything.
        let kept = convert(&read, "neurallog.io/v2").expect("converts");
        assert_eq!(normalised(&kept), normalised(&stored));
    }
}

//! The self-managed webhook certificate, for installs without OLM (`kubectl apply -k
//! config/default`, `--webhook-service`): under OLM this never runs, since OLM mounts the
//! certificate and owns the CRD's `spec.conversion`.
//!
//! Every replica, at start and then every [`SelfManaged::check_interval`]:
//! 1. makes sure the `kubernetes.io/tls` Secret holds a serving certificate for
//!    `<service>.<namespace>.svc` valid for more than [`RENEW_BEFORE`], and the CA that signed it
//!    (`ca.crt`): created when missing (of two replicas racing, the loser reads the winner's),
//!    reissued when it is about to expire or unusable (guarded by the resourceVersion);
//! 2. serves it ([`Certificates::Memory`]);
//! 3. points the CRD's `spec.conversion` at the Service with that CA, when it does not already.
//!
//! Each issue makes a new CA, whose key is never stored. `ca.crt` keeps the previous CA beside the
//! new one while the certificate it signed is valid: a replica that has not re-read the Secret
//! yet still serves that certificate, and the API server must go on trusting it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition,
};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;
use tokio::sync::watch;

use super::certificates::{self, Certificates, PemPair};
use crate::api::ConversionService;

/// The Secret's default name (`--webhook-cert-secret`).
pub const DEFAULT_SECRET: &str = "neurallog-tenant-operator-webhook-cert";
/// The CRD whose conversion the webhook serves.
pub const CRD: &str = "tenants.neurallog.io";
/// A certificate is reissued this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an issued certificate is valid.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Issued certificates start this long ago, for nodes whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(3600);
/// The CA outlives the certificate it signs: verifiers such as the API server's check both.
const CA_EXTRA: Duration = Duration::from_secs(24 * 3600);
/// The default time between checks.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// The first retry after a failed check; doubled per failure up to the check interval.
const RETRY: Duration = Duration::from_secs(15);
/// The field manager of the Secret and of the CRD's `spec.conversion`.
const FIELD_MANAGER: &str = "neurallog-tenant-operator-webhook";
const CA_FILE: &str = "ca.crt";

/// The self-managed mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfManaged {
    /// The Service in front of the webhook, in `namespace`.
    pub service: String,
    /// The operator's namespace (`POD_NAMESPACE`): the Service's and the Secret's.
    pub namespace: String,
    /// The Secret holding the certificate.
    pub secret: String,
    pub check_interval: Duration,
}

impl SelfManaged {
    /// The name the API server dials, and verifies the certificate for.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

/// What the Secret holds: the serving pair and the CA bundle, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Stored {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("cert_bytes", &self.cert.len()).finish_non_exhaustive()
    }
}

impl Stored {
    /// The Secret's data; absent keys are empty.
    pub fn from_secret(secret: &Secret) -> Self {
        let data = secret.data.as_ref();
        let get = |key: &str| data.and_then(|data| data.get(key)).map(|value| value.0.clone()).unwrap_or_default();
        Self { cert: get(certificates::CERT_FILE), key: get(certificates::KEY_FILE), ca: get(CA_FILE) }
    }

    fn data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (certificates::CERT_FILE.to_owned(), ByteString(self.cert.clone())),
            (certificates::KEY_FILE.to_owned(), ByteString(self.key.clone())),
            (CA_FILE.to_owned(), ByteString(self.ca.clone())),
        ])
    }

    fn pair(&self) -> PemPair {
        PemPair { cert: self.cert.clone(), key: self.key.clone() }
    }
}

/// Why a stored certificate must be reissued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("the Secret has no {0}")]
    Missing(&'static str),
    #[error("the certificate and key cannot serve: {0}")]
    Unusable(String),
    #[error("the certificate is not valid now for {host} under the CA in ca.crt: {reason}")]
    Invalid { host: String, reason: String },
    #[error("the certificate expires within {} days", RENEW_BEFORE.as_secs() / 86_400)]
    Expiring,
}

/// Whether `stored` can serve `host` now and for longer than [`RENEW_BEFORE`], verified as the
/// API server will: the chain up to a CA in `ca.crt`, the name, the validity period.
pub fn freshness(stored: &Stored, host: &str, now: SystemTime) -> Result<(), Stale> {
    for (name, value) in
        [(certificates::CERT_FILE, &stored.cert), (certificates::KEY_FILE, &stored.key), (CA_FILE, &stored.ca)]
    {
        if value.is_empty() {
            return Err(Stale::Missing(name));
        }
    }
    certificates::certified_key(&stored.pair()).map_err(|error| Stale::Unusable(error.to_string()))?;
    let invalid = |reason: String| Stale::Invalid { host: host.to_owned(), reason };
    verify(&stored.cert, &stored.ca, host, now).map_err(invalid)?;
    verify(&stored.cert, &stored.ca, host, now + RENEW_BEFORE).map_err(|_| Stale::Expiring)
}

/// Verifies the leaf of `cert` for `host` at `at` against the CAs of `ca`.
fn verify(cert: &[u8], ca: &[u8], host: &str, at: SystemTime) -> Result<(), String> {
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        roots.add(certificate.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(crate::tls::provider()))
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
    verifier.verify_server_cert(leaf, intermediates, &name, &[], at).map(drop).map_err(|e| e.to_string())
}

/// The PEM blocks of the certificates in `pem`, as written.
fn certificate_blocks(pem: &str) -> Vec<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let (Some(start), Some(end)) = (rest.find("-----BEGIN CERTIFICATE-----"), rest.find(END)) {
        if end < start {
            rest = &rest[end + END.len()..];
            continue;
        }
        blocks.push(&rest[start..end + END.len()]);
        rest = &rest[end + END.len()..];
    }
    blocks
}

/// The CA of `previous`'s `ca.crt` that signed its certificate, while that certificate is valid
/// for `host`: replicas that have not re-read the Secret still serve it.
fn signer_to_keep(previous: &Stored, host: &str, now: SystemTime) -> Option<String> {
    let ca = String::from_utf8_lossy(&previous.ca);
    certificate_blocks(&ca)
        .into_iter()
        .find(|block| verify(&previous.cert, block.as_bytes(), host, now).is_ok())
        .map(str::to_owned)
}

fn offset(at: SystemTime) -> Result<time::OffsetDateTime, rcgen::Error> {
    let seconds =
        at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| rcgen::Error::Time)
}

/// A new CA and a certificate it signs for the Service's names, valid from now for [`VALIDITY`];
/// `ca.crt` also carries the CA that signed `previous`, while what it signed is valid.
pub fn issue(settings: &SelfManaged, previous: Option<&Stored>, now: SystemTime) -> Result<Stored, rcgen::Error> {
    let host = settings.host();
    let start = offset(now - BACKDATE)?;

    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{} webhook CA", settings.service));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.not_before = start;
    ca_params.not_after = offset(now + VALIDITY + CA_EXTRA)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;

    let names =
        vec![host.clone(), format!("{}.{}", settings.service, settings.namespace), format!("{host}.cluster.local")];
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, host.clone());
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = start;
    params.not_after = offset(now + VALIDITY)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let mut bundle = ca.pem();
    if let Some(kept) = previous.and_then(|previous| signer_to_keep(previous, &host, now)) {
        bundle.push_str(&kept);
        bundle.push('\n');
    }
    Ok(Stored { cert: cert.pem().into_bytes(), key: key.serialize_pem().into_bytes(), ca: bundle.into_bytes() })
}

/// The CRD's `spec.conversion`: the webhook behind the Service, trusted through `ca_bundle`.
pub fn desired_conversion(settings: &SelfManaged, ca_bundle: &[u8]) -> CustomResourceConversion {
    let service = ConversionService { namespace: settings.namespace.clone(), name: settings.service.clone() };
    crate::api::webhook_conversion(&service, Some(ca_bundle.to_vec()))
}

/// The merge patch that sets `desired`, dropping a `url` someone else set (a client config holds
/// a service or a URL, not both).
fn conversion_patch(desired: &CustomResourceConversion) -> serde_json::Value {
    let mut conversion = serde_json::to_value(desired).unwrap_or_default();
    if let Some(config) = conversion.pointer_mut("/webhook/clientConfig").and_then(|c| c.as_object_mut()) {
        config.insert("url".to_owned(), serde_json::Value::Null);
    }
    json!({"spec": {"conversion": conversion}})
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot {action} the Secret {namespace}/{name}: {source}")]
    Secret { action: &'static str, namespace: String, name: String, source: kube::Error },
    #[error("cannot {action} the CustomResourceDefinition {CRD}: {source}")]
    Crd { action: &'static str, source: kube::Error },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the Secret {namespace}/{name} kept changing under this replica's writes")]
    Contended { namespace: String, name: String },
}

/// Keeps the certificate and the CRD right for one replica.
struct Provisioner {
    client: Client,
    settings: SelfManaged,
    pairs: watch::Sender<Option<PemPair>>,
}

/// The certificate source to serve from, and the task that provisions it (every replica runs
/// one; it never ends, so drop it at shutdown).
pub fn start(client: Client, settings: SelfManaged) -> (Certificates, impl Future<Output = ()> + Send + 'static) {
    let (pairs, receiver) = watch::channel(None);
    let provisioner = Provisioner { client, settings, pairs };
    let task = async move {
        tracing::info!(
            service = %provisioner.settings.host(),
            secret = %provisioner.settings.secret,
            "self-managed webhook certificate: this replica keeps the Secret and the CRD's conversion right"
        );
        let mut failures = 0u32;
        loop {
            let wait = match provisioner.check().await {
                Ok(()) => {
                    failures = 0;
                    provisioner.settings.check_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = RETRY
                        .saturating_mul(2u32.saturating_pow(failures - 1))
                        .min(provisioner.settings.check_interval);
                    tracing::warn!(%error, retry_in_s = wait.as_secs(), "self-managed webhook certificate");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    };
    (Certificates::Memory(receiver), task)
}

impl Provisioner {
    async fn check(&self) -> Result<(), ProvisionError> {
        let stored = self.secret().await?;
        self.pairs.send_if_modified(|current| {
            let pair = stored.pair();
            let changed = current.as_ref() != Some(&pair);
            *current = Some(pair);
            changed
        });
        self.point_crd(&stored.ca).await
    }

    /// The Secret's certificate, created or reissued first when needed.
    async fn secret(&self) -> Result<Stored, ProvisionError> {
        let SelfManaged { namespace, secret: name, .. } = &self.settings;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let failed = |action: &'static str| {
            move |source| ProvisionError::Secret { action, namespace: namespace.clone(), name: name.clone(), source }
        };
        let host = self.settings.host();
        // Each attempt lost to another replica reads what it wrote.
        for _ in 0..3 {
            let now = SystemTime::now();
            match api.get_opt(name).await.map_err(failed("read"))? {
                None => {
                    let stored = issue(&self.settings, None, now)?;
                    match api
                        .create(
                            &PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() },
                            &self.new_secret(&stored),
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(secret = %name, "created the webhook certificate Secret");
                            return Ok(stored);
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(error) => return Err(failed("create")(error)),
                    }
                }
                Some(existing) => {
                    let stored = Stored::from_secret(&existing);
                    let Err(stale) = freshness(&stored, &host, now) else { return Ok(stored) };
                    let renewed = issue(&self.settings, Some(&stored), now)?;
                    let patch = json!({
                        "metadata": {"resourceVersion": existing.resource_version()},
                        "data": renewed.data(),
                    });
                    let params =
                        PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
                    match api.patch(name, &params, &Patch::Merge(&patch)).await {
                        Ok(_) => {
                            tracing::info!(secret = %name, reason = %stale, "reissued the webhook certificate");
                            return Ok(renewed);
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(error) => return Err(failed("update")(error)),
                    }
                }
            }
        }
        Err(ProvisionError::Contended { namespace: namespace.clone(), name: name.clone() })
    }

    fn new_secret(&self, stored: &Stored) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.settings.secret.clone()),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_owned(), "neurallog-tenant-operator".to_owned()),
                    ("app.kubernetes.io/component".to_owned(), "webhook".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(stored.data()),
            ..Secret::default()
        }
    }

    /// Sets the CRD's `spec.conversion` to the webhook, when it says anything else.
    async fn point_crd(&self, ca_bundle: &[u8]) -> Result<(), ProvisionError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = api.get(CRD).await.map_err(|source| ProvisionError::Crd { action: "read", source })?;
        let desired = desired_conversion(&self.settings, ca_bundle);
        if crd.spec.conversion.as_ref() == Some(&desired) {
            return Ok(());
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        api.patch(CRD, &params, &Patch::Merge(&conversion_patch(&desired)))
            .await
            .map_err(|source| ProvisionError::Crd { action: "patch", source })?;
        tracing::info!(crd = CRD, service = %self.settings.host(), "pointed the CRD's conversion at the webhook and its CA");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn settings() -> SelfManaged {
        SelfManaged {
            service: "neurallog-tenant-operator-webhook".to_owned(),
            namespace: "neurallog-system".to_owned(),
            secret: DEFAULT_SECRET.to_owned(),
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }

    #[test]
    fn an_issued_certificate_is_fresh_until_thirty_days_before_it_expires() {
        let settings = settings();
        let host = settings.host();
        let now = SystemTime::now();
        let stored = issue(&settings, None, now).unwrap();
        assert_eq!(freshness(&stored, &host, now), Ok(()));
        assert_eq!(freshness(&stored, &host, now + VALIDITY - RENEW_BEFORE - DAY), Ok(()));
        assert_eq!(freshness(&stored, &host, now + VALIDITY - RENEW_BEFORE + DAY), Err(Stale::Expiring));
        assert!(matches!(freshness(&stored, &host, now + VALIDITY + DAY), Err(Stale::Invalid { .. })));
        assert!(matches!(freshness(&stored, &host, now - 2 * BACKDATE), Err(Stale::Invalid { .. })), "not yet valid");
        // The other names the Service answers to are in it too.
        for name in [
            "neurallog-tenant-operator-webhook.neurallog-system",
            "neurallog-tenant-operator-webhook.neurallog-system.svc.cluster.local",
        ] {
            assert_eq!(freshness(&stored, name, now), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_certificate_for_another_service_missing_pieces_or_a_foreign_key_is_reissued() {
        let settings = settings();
        let now = SystemTime::now();
        let stored = issue(&settings, None, now).unwrap();
        assert!(matches!(freshness(&stored, "other.neurallog-system.svc", now), Err(Stale::Invalid { .. })));
        assert_eq!(
            freshness(&Stored { ca: Vec::new(), ..stored.clone() }, &settings.host(), now),
            Err(Stale::Missing("ca.crt"))
        );
        assert_eq!(
            freshness(&Stored { key: Vec::new(), ..stored.clone() }, &settings.host(), now),
            Err(Stale::Missing("tls.key"))
        );
        let other = issue(&settings, None, now).unwrap();
        let foreign_key = Stored { key: other.key.clone(), ..stored.clone() };
        assert!(matches!(freshness(&foreign_key, &settings.host(), now), Err(Stale::Unusable(_))));
        let foreign_ca = Stored { ca: other.ca.clone(), ..stored.clone() };
        assert!(matches!(freshness(&foreign_ca, &settings.host(), now), Err(Stale::Invalid { .. })));
        let secret = Secret { data: Some(stored.data()), ..Secret::default() };
        assert_eq!(Stored::from_secret(&secret), stored);
        assert_eq!(
            Stored::from_secret(&Secret::default()),
            Stored { cert: Vec::new(), key: Vec::new(), ca: Vec::new() }
        );
    }

    #[test]
    fn a_reissue_keeps_trusting_the_previous_ca_while_what_it_signed_is_valid() {
        let settings = settings();
        let host = settings.host();
        let now = SystemTime::now();
        let first = issue(&settings, None, now).unwrap();
        // A day into the renewal window.
        let later = now + VALIDITY - RENEW_BEFORE + DAY;
        let second = issue(&settings, Some(&first), later).unwrap();
        let bundle = String::from_utf8(second.ca.clone()).unwrap();
        assert_eq!(certificate_blocks(&bundle).len(), 2, "{bundle}");
        // A replica that still serves the first certificate is trusted under the new bundle.
        let stale_replica = Stored { ca: second.ca.clone(), ..first.clone() };
        assert_eq!(freshness(&stale_replica, &host, later), Err(Stale::Expiring));
        assert!(verify(&first.cert, &second.ca, &host, later).is_ok());
        assert_eq!(freshness(&second, &host, later), Ok(()));
        // Once the first has expired, its CA is not carried further.
        let third = issue(&settings, Some(&first), now + VALIDITY + DAY).unwrap();
        assert_eq!(certificate_blocks(&String::from_utf8(third.ca).unwrap()).len(), 1);
        // Only the CA that signed the certificate is carried, never the whole old bundle.
        let fourth = issue(&settings, Some(&second), later).unwrap();
        assert_eq!(certificate_blocks(&String::from_utf8(fourth.ca).unwrap()).len(), 2);
    }

    #[test]
    fn the_crd_points_at_the_service_with_the_ca_and_nothing_else() {
        let settings = settings();
        let desired = desired_conversion(&settings, b"CA PEM");
        let value = serde_json::to_value(&desired).unwrap();
        assert_eq!(
            value,
            json!({
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {
                        "service": {"namespace": "neurallog-system", "name": "neurallog-tenant-operator-webhook", "path": "/convert", "port": 443},
                        "caBundle": "Q0EgUEVN",
                    },
                },
            })
        );
        let patch = conversion_patch(&desired);
        assert_eq!(patch["spec"]["conversion"]["webhook"]["clientConfig"]["url"], serde_json::Value::Null);
        assert!(patch["spec"]["conversion"]["webhook"]["clientConfig"].as_object().unwrap().contains_key("url"));
        // What the API server returns once patched (port and path as sent) compares equal: no
        // second patch.
        let served: CustomResourceConversion = serde_json::from_value(value).unwrap();
        assert_eq!(served, desired);
        assert_ne!(desired_conversion(&settings, b"another CA"), desired);
    }

    /// A fake API server holding one Secret and the CRD, for what the provisioner sends.
    mod fake {
        use std::sync::{Arc, Mutex};

        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{Method, StatusCode, Uri};
        use axum::response::{IntoResponse, Response};
        use serde_json::{Value, json};

        pub const NAMESPACE: &str = "neurallog-system";

        #[derive(Default)]
        pub struct Api {
            pub secret: Option<Value>,
            pub crd: Value,
            /// The writes received, as `verb kind`.
            pub writes: Vec<String>,
            /// What another replica writes to the Secret just before this one's next write.
            pub other_replica: Option<Value>,
        }

        pub type Shared = Arc<Mutex<Api>>;

        pub fn client(api: &Shared) -> kube::Client {
            let router = axum::Router::new().fallback(serve).with_state(api.clone());
            kube::Client::new(router, NAMESPACE)
        }

        fn merge(target: &mut Value, patch: &Value) {
            let Value::Object(patch) = patch else { return *target = patch.clone() };
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(target) = target {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }

        fn status(code: StatusCode, reason: &str) -> Response {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": reason, "code": code.as_u16()});
            reply(code, &body)
        }

        fn reply(code: StatusCode, body: &Value) -> Response {
            (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }

        fn version(object: &Value) -> u64 {
            object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0)
        }

        async fn serve(State(api): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
            let mut api = api.lock().unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            let secrets = format!("/api/v1/namespaces/{NAMESPACE}/secrets");
            let secret = format!("{secrets}/{}", super::DEFAULT_SECRET);
            let crd = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}", super::CRD);
            let path = uri.path();
            if method != Method::GET {
                let kind = if path == crd { "CRD" } else { "Secret" };
                api.writes.push(format!("{method} {kind}"));
                if let Some(mut winner) = api.other_replica.take() {
                    let next = api.secret.as_ref().map_or(1, version) + 1;
                    winner["metadata"]["resourceVersion"] = json!(next.to_string());
                    api.secret = Some(winner);
                }
            }
            match method {
                Method::GET if path == secret => match &api.secret {
                    Some(object) => reply(StatusCode::OK, object),
                    None => status(StatusCode::NOT_FOUND, "NotFound"),
                },
                Method::POST if path == secrets => {
                    if api.secret.is_some() {
                        return status(StatusCode::CONFLICT, "AlreadyExists");
                    }
                    let mut created = body;
                    created["metadata"]["resourceVersion"] = json!("1");
                    api.secret = Some(created.clone());
                    reply(StatusCode::CREATED, &created)
                }
                Method::PATCH if path == secret => {
                    let Some(current) = api.secret.as_mut() else { return status(StatusCode::NOT_FOUND, "NotFound") };
                    if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                        return status(StatusCode::CONFLICT, "Conflict");
                    }
                    let next = version(current) + 1;
                    merge(current, &body);
                    current["metadata"]["resourceVersion"] = json!(next.to_string());
                    reply(StatusCode::OK, current)
                }
                Method::GET if path == crd && api.crd.is_null() => status(StatusCode::NOT_FOUND, "NotFound"),
                Method::GET if path == crd => reply(StatusCode::OK, &api.crd),
                Method::PATCH if path == crd => {
                    merge(&mut api.crd, &body);
                    reply(StatusCode::OK, &api.crd)
                }
                _ => status(StatusCode::NOT_FOUND, "NotFound"),
            }
        }
    }

    fn crd() -> serde_json::Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": CRD, "resourceVersion": "7"},
            "spec": {"group": "neurallog.io", "scope": "Cluster", "versions": [],
                "names": {"plural": "tenants", "kind": "Tenant"}, "conversion": {"strategy": "None"}},
        })
    }

    fn provisioner(api: &fake::Shared) -> (Provisioner, watch::Receiver<Option<PemPair>>) {
        let (pairs, receiver) = watch::channel(None);
        (Provisioner { client: fake::client(api), settings: settings(), pairs }, receiver)
    }

    fn stored(api: &fake::Shared) -> Stored {
        let secret = api.lock().unwrap().secret.clone().unwrap();
        Stored::from_secret(&serde_json::from_value(secret).unwrap())
    }

    fn crd_conversion(api: &fake::Shared) -> CustomResourceConversion {
        serde_json::from_value(api.lock().unwrap().crd["spec"]["conversion"].clone()).unwrap()
    }

    #[tokio::test]
    async fn a_first_replica_creates_the_secret_serves_it_and_points_the_crd_then_stays_quiet() {
        let api = fake::Shared::default();
        api.lock().unwrap().crd = crd();
        let (provisioner, served) = provisioner(&api);
        provisioner.check().await.unwrap();
        let created = stored(&api);
        assert_eq!(freshness(&created, &settings().host(), SystemTime::now()), Ok(()));
        assert_eq!(served.borrow().clone(), Some(created.pair()));
        assert_eq!(crd_conversion(&api), desired_conversion(&settings(), &created.ca));
        let secret: Secret = serde_json::from_value(api.lock().unwrap().secret.clone().unwrap()).unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(api.lock().unwrap().writes, ["POST Secret", "PATCH CRD"]);

        // Right already: reads only.
        provisioner.check().await.unwrap();
        assert_eq!(api.lock().unwrap().writes.len(), 2);
    }

    #[tokio::test]
    async fn of_two_replicas_racing_the_loser_serves_the_winners_certificate() {
        let api = fake::Shared::default();
        let winner = issue(&settings(), None, SystemTime::now()).unwrap();
        let (provisioner, served) = provisioner(&api);
        api.lock().unwrap().crd = crd();
        api.lock().unwrap().other_replica = Some(serde_json::to_value(provisioner.new_secret(&winner)).unwrap());
        provisioner.check().await.unwrap();
        assert_eq!(stored(&api), winner);
        assert_eq!(served.borrow().clone(), Some(winner.pair()));
        assert_eq!(crd_conversion(&api), desired_conversion(&settings(), &winner.ca));
        assert_eq!(api.lock().unwrap().writes, ["POST Secret", "PATCH CRD"]);
    }

    #[tokio::test]
    async fn an_expiring_certificate_is_reissued_trusting_both_cas_and_a_lost_race_reads_the_winner() {
        let api = fake::Shared::default();
        let (provisioner, served) = provisioner(&api);
        let now = SystemTime::now();
        let expiring = issue(&settings(), None, now - (VALIDITY - RENEW_BEFORE) - DAY).unwrap();
        let mut secret = serde_json::to_value(provisioner.new_secret(&expiring)).unwrap();
        secret["metadata"]["resourceVersion"] = json!("3");
        api.lock().unwrap().secret = Some(secret);
        api.lock().unwrap().crd = crd();
        provisioner.check().await.unwrap();
        let renewed = stored(&api);
        assert_ne!(renewed, expiring);
        assert_eq!(freshness(&renewed, &settings().host(), now), Ok(()));
        assert!(
            verify(&expiring.cert, &renewed.ca, &settings().host(), now).is_ok(),
            "the old certificate is still trusted"
        );
        assert_eq!(served.borrow().clone(), Some(renewed.pair()));
        assert_eq!(crd_conversion(&api), desired_conversion(&settings(), &renewed.ca));

        // Expiring again, and another replica reissues it first: this one reads and serves that.
        let mut secret = serde_json::to_value(provisioner.new_secret(&expiring)).unwrap();
        secret["metadata"]["resourceVersion"] = json!("10");
        let winner = issue(&settings(), Some(&expiring), now).unwrap();
        api.lock().unwrap().secret = Some(secret);
        api.lock().unwrap().other_replica = Some(serde_json::to_value(provisioner.new_secret(&winner)).unwrap());
        api.lock().unwrap().writes.clear();
        provisioner.check().await.unwrap();
        assert_eq!(stored(&api), winner);
        assert_eq!(served.borrow().clone(), Some(winner.pair()));
        assert_eq!(api.lock().unwrap().writes, ["PATCH Secret", "PATCH CRD"]);
    }

    #[tokio::test]
    async fn a_missing_crd_is_an_error_after_the_certificate_is_served() {
        let api = fake::Shared::default();
        let (provisioner, served) = provisioner(&api);
        let error = provisioner.check().await.unwrap_err();
        assert!(matches!(error, ProvisionError::Crd { action: "read", .. }), "{error}");
        assert!(served.borrow().is_some(), "served all the same");
    }

    #[test]
    fn certificate_blocks_are_cut_as_written() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificate_blocks(text),
            [
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"
            ]
        );
        assert!(certificate_blocks("-----END CERTIFICATE-----").is_empty());
    }
}

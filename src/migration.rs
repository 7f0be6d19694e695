//! The storage-version migration: re-encodes every Tenant still stored as `v1` in etcd at `v2`, then
//! trims the CRD's `status.storedVersions` to `[v2]`, so that a later release can stop serving `v1`.
//!
//! - Each Tenant gets a no-op JSON merge patch carrying its UID and resourceVersion. The API server
//!   re-encodes the object at the storage version and writes it only when the bytes differ, so an
//!   object already at `v2` keeps its resourceVersion; the two preconditions turn a concurrent write
//!   or a delete-and-recreate into a 409, which means "already re-encoded by someone else".
//! - Tenants are listed a page at a time (metadata only); after each page the continue token and the
//!   counts are written to the annotations of a Lease in the operator's namespace, so a new leader
//!   resumes where the last one stopped. An expired token (410) resumes from the inconsistent
//!   continue token the API server hands back, or else from the beginning.
//! - The trim re-reads the CRD and happens only if the CRD still stores `v2` and `storedVersions`
//!   holds nothing but `v1` and `v2`; the write is guarded by the resourceVersion it read.
//!
//! - A run that cannot start (the CRD cannot be read, or does not allow the migration) says why in
//!   a Warning Event on the CRD, once per cause however often the retries meet it.
//!
//! The leader runs this ([`run_until_done`]) beside the controller; a run is idempotent, so any
//! interruption costs at most one page of repeated patches. Tests hold a pass at a chosen point
//! (after a page, before the trim) with [`MigrationSettings::pause`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::api::{STORAGE_VERSION, Tenant};
use crate::metrics::Metrics;
use crate::telemetry;

/// The CRD whose stored versions are migrated.
pub const CRD_NAME: &str = "tenants.neurallog.io";
/// The Lease, in the operator's namespace, whose annotations hold the progress of a migration.
pub const PROGRESS_LEASE: &str = "neurallog-tenant-operator-migration";
/// The versions the trim may drop: those this release knows how to read.
const KNOWN_VERSIONS: [&str; 2] = ["v1", STORAGE_VERSION];

/// The progress annotations on [`PROGRESS_LEASE`].
const CONTINUE: &str = "migration.neurallog.io/continue";
const MIGRATED: &str = "migration.neurallog.io/migrated";
const SKIPPED: &str = "migration.neurallog.io/skipped";
const FAILED: &str = "migration.neurallog.io/failed";
const PAGES: &str = "migration.neurallog.io/pages";
/// The UID of the CRD the progress belongs to: a deleted and recreated CRD starts afresh.
const CRD_UID: &str = "migration.neurallog.io/crd-uid";
/// "listing" while pages remain, "trimming" once every Tenant was visited.
const PHASE: &str = "migration.neurallog.io/phase";
/// The CRD's generation when the pass began: a pass over a CRD whose spec changed since (its
/// storage version switched away and back, say, storing some Tenants at another version) starts
/// over rather than trims.
const CRD_GENERATION: &str = "migration.neurallog.io/crd-generation";

/// How the migration runs.
#[derive(Debug, Clone)]
pub struct MigrationSettings {
    /// Tenants per list page, and per progress checkpoint.
    pub page_size: u32,
    /// No-op patches in flight at once.
    pub concurrency: usize,
    /// Attempts of one request that fails with 429, 5xx or a transport error.
    pub attempts: u32,
    /// The namespace of [`PROGRESS_LEASE`]; `None` (no namespace known, a local run) keeps no
    /// progress, so an interrupted run starts over (harmless: a repeated patch is a no-op).
    pub progress_namespace: Option<String>,
    /// This replica, as the reporting instance of the Events.
    pub instance: Option<String>,
    /// How long [`run_until_done`] waits before trying again a run that did not finish; doubled
    /// after each such run, up to 30 minutes.
    pub first_retry: Duration,
    /// Awaited at each [`PausePoint`] of a pass; `None` (always, outside tests) awaits nothing.
    pub pause: Option<Pause>,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            page_size: 500,
            concurrency: 8,
            attempts: 6,
            progress_namespace: None,
            instance: None,
            first_retry: FIRST_RETRY,
            pause: None,
        }
    }
}

/// Where a pass awaits [`MigrationSettings::pause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// Page `n` (counted from 1 over the whole pass, resumed or not) was migrated and its progress
    /// saved: a pass stopped here resumes with page `n + 1`.
    PageDone(u64),
    /// Every Tenant was visited and none failed: the trim comes next.
    BeforeTrim,
}

/// A test's hold on a pass: the future it returns for a [`PausePoint`] is awaited before the pass
/// goes on, so a test can stop the pass exactly there (interrupt it, or write meanwhile).
#[derive(Clone)]
pub struct Pause(Arc<dyn Fn(PausePoint) -> BoxFuture<'static, ()> + Send + Sync>);

impl Pause {
    pub fn new<F>(hold: impl Fn(PausePoint) -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(Arc::new(move |point| Box::pin(hold(point))))
    }

    /// A pause that holds the pass for ever at `point` and lets every other point by.
    pub fn forever_at(point: PausePoint) -> Self {
        Self::new(move |reached| async move {
            if reached == point {
                std::future::pending::<()>().await;
            }
        })
    }
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pause")
    }
}

/// Awaits the settings' pause at `point`, if there is one.
async fn pause(settings: &MigrationSettings, point: PausePoint) {
    if let Some(Pause(hold)) = &settings.pause {
        tracing::debug!(?point, "migration paused");
        hold(point).await;
    }
}

/// With the test fixtures only (integration tests run the binary built so): a pass of this
/// process holds for ever once the page this variable names is saved, so a test can kill it there.
#[cfg(feature = "test-fixtures")]
pub const HOLD_AFTER_PAGE_VARIABLE: &str = "TENANT_OPERATOR_TEST_MIGRATION_HOLD_AFTER_PAGE";

#[cfg(feature = "test-fixtures")]
fn held_by_environment(mut settings: MigrationSettings) -> MigrationSettings {
    if let Some(page) = std::env::var(HOLD_AFTER_PAGE_VARIABLE).ok().and_then(|v| v.parse().ok()) {
        settings.pause = Some(Pause::forever_at(PausePoint::PageDone(page)));
    }
    settings
}

/// Tenants by what their no-op patch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rewritten by the patch: they were stored at an older version.
    pub migrated: u64,
    /// Not rewritten: already at the storage version, or changed (409) or deleted (404) by someone
    /// else since they were listed, which stores them at the storage version too.
    pub skipped: u64,
    /// Still failing after every attempt.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.migrated += other.migrated;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `storedVersions` was already exactly the storage version: nothing was sent.
    AlreadyMigrated,
    /// Every Tenant is stored at the storage version and `storedVersions` says so.
    Migrated(Counts),
    /// Some Tenants still failed: `storedVersions` is left alone and the next run starts over.
    Incomplete(Counts),
    /// The CRD does not allow the migration or the trim (another storage version, an unknown
    /// stored version); nothing more is done until it changes.
    Refused { reason: String, counts: Counts },
}

/// What stopped a run. Every variant names the object it was about.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot read CustomResourceDefinition {CRD_NAME}: {0}")]
    ReadCrd(#[source] kube::Error),
    #[error("cannot list Tenants (page {page}): {source}")]
    List { page: u64, source: kube::Error },
    #[error("cannot read or write the migration's progress in Lease {namespace}/{PROGRESS_LEASE}: {source}")]
    Progress { namespace: String, source: kube::Error },
    #[error("cannot trim status.storedVersions of CustomResourceDefinition {CRD_NAME}: {0}")]
    Trim(#[source] kube::Error),
    #[error("status.storedVersions of CustomResourceDefinition {CRD_NAME} kept changing under the trim")]
    TrimConflict,
}

/// What the CRD allows, decided from the CRD alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `storedVersions` is exactly the storage version.
    Done,
    /// The CRD stores this release's version and lists only versions it knows: migrate, then trim.
    Migrate,
    /// Leave it alone, for this reason.
    Refuse(String),
}

/// Whether `crd` may be migrated (before) or trimmed (after): only while its spec names this
/// release's storage version and `storedVersions` holds nothing this release does not know, so a
/// storage version changed or added meanwhile is never trimmed away.
pub fn decide(crd: &CustomResourceDefinition) -> Decision {
    let storage: Vec<&str> = crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.as_str()).collect();
    if storage != [STORAGE_VERSION] {
        return Decision::Refuse(format!("the CRD stores {storage:?}, not {STORAGE_VERSION}"));
    }
    let stored: Vec<&str> = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.as_ref())
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if stored == [STORAGE_VERSION] {
        return Decision::Done;
    }
    if let Some(unknown) = stored.iter().find(|v| !KNOWN_VERSIONS.contains(v)) {
        return Decision::Refuse(format!("status.storedVersions lists {unknown}, which this release cannot read"));
    }
    Decision::Migrate
}

/// The progress of a pass over the Tenants, as kept on the Lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    /// The continue token of the next page; `None` at the start of a pass.
    continue_token: Option<String>,
    counts: Counts,
    pages: u64,
    /// Every Tenant was visited: only the trim remains.
    listed: bool,
    /// The CRD's `metadata.generation` when the pass began.
    crd_generation: Option<i64>,
}

impl Progress {
    fn annotations(&self, crd_uid: &str) -> BTreeMap<String, Value> {
        let number = |n: u64| Value::String(n.to_string());
        BTreeMap::from([
            (CONTINUE.to_owned(), self.continue_token.clone().map_or(Value::Null, Value::String)),
            (MIGRATED.to_owned(), number(self.counts.migrated)),
            (SKIPPED.to_owned(), number(self.counts.skipped)),
            (FAILED.to_owned(), number(self.counts.failed)),
            (PAGES.to_owned(), number(self.pages)),
            (CRD_UID.to_owned(), Value::String(crd_uid.to_owned())),
            (PHASE.to_owned(), Value::String(if self.listed { "trimming" } else { "listing" }.to_owned())),
            (CRD_GENERATION.to_owned(), self.crd_generation.map_or(Value::Null, |g| Value::String(g.to_string()))),
        ])
    }

    /// The progress kept in `annotations`, if it belongs to the CRD `crd_uid`; anything unreadable
    /// is a fresh start (a repeated patch costs a request, never a wrong result).
    fn from_annotations(annotations: &BTreeMap<String, String>, crd_uid: &str) -> Option<Self> {
        if annotations.get(CRD_UID).map(String::as_str) != Some(crd_uid) {
            return None;
        }
        let number = |key: &str| annotations.get(key).and_then(|v| v.parse::<u64>().ok());
        Some(Self {
            continue_token: annotations.get(CONTINUE).filter(|t| !t.is_empty()).cloned(),
            counts: Counts { migrated: number(MIGRATED)?, skipped: number(SKIPPED)?, failed: number(FAILED)? },
            pages: number(PAGES)?,
            listed: annotations.get(PHASE).map(String::as_str) == Some("trimming"),
            crd_generation: annotations.get(CRD_GENERATION).and_then(|v| v.parse().ok()),
        })
    }
}

/// Where the progress is kept: the annotations of [`PROGRESS_LEASE`], or nowhere.
struct ProgressStore {
    leases: Option<(Api<Lease>, String)>,
    crd_uid: String,
}

impl ProgressStore {
    fn error(&self, source: kube::Error) -> MigrationError {
        let namespace = self.leases.as_ref().map(|(_, ns)| ns.clone()).unwrap_or_default();
        MigrationError::Progress { namespace, source }
    }

    /// The progress kept, or a fresh start. Where the operator may not read Leases (a role left
    /// out of an install), it goes on without keeping any: slower to resume, never wrong.
    async fn load(&mut self) -> Result<Progress, MigrationError> {
        let Some((leases, namespace)) = &self.leases else { return Ok(Progress::default()) };
        match leases.get_opt(PROGRESS_LEASE).await {
            Ok(Some(lease)) => Ok(Progress::from_annotations(
                lease.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()),
                &self.crd_uid,
            )
            .unwrap_or_default()),
            Ok(None) => Ok(Progress::default()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(
                    lease = PROGRESS_LEASE,
                    %namespace,
                    "may not read the migration's progress Lease: migrating without keeping progress"
                );
                self.leases = None;
                Ok(Progress::default())
            }
            Err(error) => Err(self.error(error)),
        }
    }

    async fn save(&self, progress: &Progress) -> Result<(), MigrationError> {
        self.write(progress.annotations(&self.crd_uid)).await
    }

    /// Removes every progress annotation (the Lease stays: the operator may not delete Leases).
    async fn clear(&self) -> Result<(), MigrationError> {
        let keys = [CONTINUE, MIGRATED, SKIPPED, FAILED, PAGES, CRD_UID, PHASE, CRD_GENERATION];
        self.write(keys.iter().map(|k| ((*k).to_owned(), Value::Null)).collect()).await
    }

    async fn write(&self, annotations: BTreeMap<String, Value>) -> Result<(), MigrationError> {
        let Some((leases, _)) = &self.leases else { return Ok(()) };
        let patch = json!({"metadata": {"annotations": annotations}});
        let patched = leases.patch(PROGRESS_LEASE, &PatchParams::default(), &Patch::Merge(&patch)).await;
        match patched {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let annotations: BTreeMap<String, String> =
                    annotations.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))).collect();
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(PROGRESS_LEASE.to_owned()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                leases.create(&PostParams::default(), &lease).await.map(drop).map_err(|e| self.error(e))
            }
            Err(error) => Err(self.error(error)),
        }
    }
}

/// Whether another attempt of a request could succeed: throttled, a server error, or no answer.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Jittered exponential delays between `attempts` attempts: 200 ms doubling up to 10 s.
fn backoff(attempts: u32) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX))
}

/// What one Tenant's no-op patch did.
enum Item {
    Migrated,
    Skipped,
    Failed(kube::Error),
}

/// The no-op write of one Tenant, guarded by the UID and resourceVersion it was listed with.
async fn migrate_one(api: &Api<Tenant>, name: &str, uid: &str, version: &str, attempts: u32) -> Item {
    let patch = guard(uid, version);
    let send = || async { api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch)).await };
    match send.retry(backoff(attempts)).sleep(tokio::time::sleep).when(is_transient).await {
        // Unchanged bytes are not written, so the resourceVersion tells whether it was rewritten.
        Ok(object) if object.metadata.resource_version.as_deref() == Some(version) => Item::Skipped,
        Ok(_) => Item::Migrated,
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Item::Skipped,
        Err(error) => Item::Failed(error),
    }
}

/// The no-op patch: the preconditions and nothing else. A field left empty is left out (a `null`
/// would ask to remove it).
fn guard(uid: &str, version: &str) -> Value {
    let mut metadata = serde_json::Map::new();
    for (key, value) in [("uid", uid), ("resourceVersion", version)] {
        if !value.is_empty() {
            metadata.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    json!({ "metadata": metadata })
}

/// A list request, retried like a patch.
async fn list_page(
    api: &Api<Tenant>,
    params: &ListParams,
    attempts: u32,
) -> kube::Result<kube::api::ObjectList<kube::core::PartialObjectMeta<Tenant>>> {
    let send = || async { api.list_metadata(params).await };
    send.retry(backoff(attempts)).sleep(tokio::time::sleep).when(is_transient).await
}

/// The reference of the Events about the CRD: from the CRD read, or by name when it could not be
/// read.
fn crd_reference(crd: Option<&CustomResourceDefinition>) -> ObjectReference {
    crd.map(|crd| crd.object_ref(&())).unwrap_or_else(|| ObjectReference {
        api_version: Some("apiextensions.k8s.io/v1".to_owned()),
        kind: Some("CustomResourceDefinition".to_owned()),
        name: Some(CRD_NAME.to_owned()),
        ..ObjectReference::default()
    })
}

/// Records an Event about the CRD. A failure to record is logged, never fatal.
async fn publish(recorder: &Recorder, crd: &CustomResourceDefinition, type_: EventType, reason: &str, note: String) {
    publish_about(recorder, &crd_reference(Some(crd)), type_, reason, note).await;
}

async fn publish_about(recorder: &Recorder, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "MigrateStorage".to_owned(),
        secondary: None,
    };
    telemetry::publish_event(recorder, reference, event).await;
}

fn stored_versions(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.status.as_ref().and_then(|s| s.stored_versions.clone()).unwrap_or_default()
}

/// The refusal at the start of a run that was last published as an Event, so that a refusal
/// repeated by the retries is published once.
#[derive(Debug, Default)]
struct Published {
    refusal: Option<(&'static str, String)>,
}

impl Published {
    /// Publishes a Warning about the CRD (or about its name, when `crd` could not be read) that
    /// the migration cannot start, unless this very refusal was the last one published.
    async fn refusal(
        &mut self,
        recorder: &Recorder,
        crd: Option<&CustomResourceDefinition>,
        reason: &'static str,
        note: String,
    ) {
        let refusal = Some((reason, note.clone()));
        if self.refusal == refusal {
            return;
        }
        // A trace of its own, which the Event's note names like every other.
        let span = tracing::warn_span!(
            parent: None,
            "migrate storage version",
            otel.name = "migrate storage version",
            crd = CRD_NAME,
            to = STORAGE_VERSION,
            otel.status_code = "ERROR",
            otel.status_message = %note,
        );
        publish_about(recorder, &crd_reference(crd), EventType::Warning, reason, note).instrument(span).await;
        self.refusal = refusal;
    }
}

fn recorder(client: &Client, settings: &MigrationSettings) -> Recorder {
    let reporter = Reporter { controller: "neurallog-tenant-operator".into(), instance: settings.instance.clone() };
    Recorder::new(client.clone(), reporter)
}

/// Migrates every Tenant to the storage version and trims the CRD's `storedVersions`, resuming
/// the progress a previous run kept. Sends nothing when `storedVersions` is already exactly the
/// storage version. A CRD that cannot be read, or does not allow the migration, is a Warning
/// Event about the CRD.
pub async fn run(
    client: Client,
    settings: MigrationSettings,
    metrics: Arc<Metrics>,
) -> Result<Outcome, MigrationError> {
    let recorder = recorder(&client, &settings);
    run_once(client, &settings, &metrics, &recorder, &mut Published::default()).await
}

/// [`run`], with the Events' recorder and the refusal last published kept across runs.
async fn run_once(
    client: Client,
    settings: &MigrationSettings,
    metrics: &Metrics,
    recorder: &Recorder,
    published: &mut Published,
) -> Result<Outcome, MigrationError> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = match crds.get(CRD_NAME).await {
        Ok(crd) => crd,
        Err(error) => {
            let error = MigrationError::ReadCrd(error);
            tracing::warn!(crd = CRD_NAME, "storage version migration cannot start: {error}");
            let note = format!("the storage version migration cannot start: {error}; to be tried again");
            published.refusal(recorder, None, "StorageMigrationFailed", note).await;
            return Err(error);
        }
    };
    match decide(&crd) {
        Decision::Done => {
            published.refusal = None;
            metrics.migration_remaining(0);
            return Ok(Outcome::AlreadyMigrated);
        }
        Decision::Refuse(reason) => {
            tracing::warn!(crd = CRD_NAME, %reason, "storage version migration refused");
            let note = format!(
                "the storage version migration of CustomResourceDefinition {CRD_NAME} is refused: {reason}; \
                 storedVersions not trimmed"
            );
            published.refusal(recorder, Some(&crd), "StorageMigrationRefused", note).await;
            return Ok(Outcome::Refused { reason, counts: Counts::default() });
        }
        Decision::Migrate => published.refusal = None,
    }
    let span = tracing::info_span!(
        parent: None,
        "migrate storage version",
        otel.name = "migrate storage version",
        crd = CRD_NAME,
        to = STORAGE_VERSION,
        migrated = tracing::field::Empty,
        skipped = tracing::field::Empty,
        failed = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = async {
        let from = stored_versions(&crd);
        tracing::info!(crd = CRD_NAME, stored_versions = ?from, to = STORAGE_VERSION, "storage version migration started");
        let note = format!("re-encoding every Tenant at {STORAGE_VERSION} (storedVersions {from:?})");
        publish(recorder, &crd, EventType::Normal, "StorageMigrationStarted", note).await;
        let result = migrate(client, settings, metrics, &crd).await;
        finished(recorder, &crd, &result).await;
        result
    }
    .instrument(span.clone())
    .await;
    metrics.migration_finished(started.elapsed());
    match &result {
        Ok(Outcome::Migrated(counts) | Outcome::Incomplete(counts) | Outcome::Refused { counts, .. }) => {
            span.record("migrated", counts.migrated).record("skipped", counts.skipped).record("failed", counts.failed);
            if counts.failed > 0 {
                span.record("otel.status_code", "ERROR").record("otel.status_message", "some Tenants failed");
            }
        }
        Ok(Outcome::AlreadyMigrated) => {}
        Err(error) => {
            span.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
        }
    }
    result
}

/// The log line and Event that end a run.
async fn finished(recorder: &Recorder, crd: &CustomResourceDefinition, result: &Result<Outcome, MigrationError>) {
    let (type_, reason, note) = match result {
        Ok(Outcome::Migrated(c)) => (
            EventType::Normal,
            "StorageMigrated",
            format!(
                "every Tenant is stored at {STORAGE_VERSION} ({} rewritten, {} skipped); storedVersions is \
                 [{STORAGE_VERSION}]",
                c.migrated, c.skipped
            ),
        ),
        Ok(Outcome::Incomplete(c)) => (
            EventType::Warning,
            "StorageMigrationIncomplete",
            format!(
                "{} Tenants could not be rewritten ({} rewritten, {} skipped); storedVersions left as is, to be \
                 tried again",
                c.failed, c.migrated, c.skipped
            ),
        ),
        Ok(Outcome::Refused { reason, .. }) => {
            (EventType::Warning, "StorageMigrationRefused", format!("storedVersions not trimmed: {reason}"))
        }
        Ok(Outcome::AlreadyMigrated) => (EventType::Normal, "StorageMigrated", "nothing to migrate".to_owned()),
        Err(error) => (EventType::Warning, "StorageMigrationFailed", format!("{error}; to be tried again")),
    };
    match result {
        Ok(Outcome::Migrated(c) | Outcome::Incomplete(c) | Outcome::Refused { counts: c, .. }) => tracing::info!(
            crd = CRD_NAME,
            migrated = c.migrated,
            skipped = c.skipped,
            failed = c.failed,
            outcome = reason,
            "storage version migration finished"
        ),
        _ => tracing::warn!(crd = CRD_NAME, outcome = reason, "storage version migration finished: {note}"),
    }
    publish(recorder, crd, type_, reason, note).await;
}

/// The body of [`run`], inside its root span, once the CRD was found to need it: the pages, each
/// checkpointed, then the trim.
async fn migrate(
    client: Client,
    settings: &MigrationSettings,
    metrics: &Metrics,
    crd: &CustomResourceDefinition,
) -> Result<Outcome, MigrationError> {
    let mut store = ProgressStore {
        leases: settings.progress_namespace.as_ref().map(|ns| (Api::namespaced(client.clone(), ns), ns.clone())),
        crd_uid: crd.metadata.uid.clone().unwrap_or_default(),
    };
    let mut progress = store.load().await?;
    let generation = crd.metadata.generation;
    if progress.crd_generation != generation {
        if progress.pages > 0 {
            tracing::info!(crd = CRD_NAME, "the CRD changed since the last pass began: starting over");
        }
        progress = Progress { crd_generation: generation, ..Progress::default() };
    } else if progress.pages > 0 {
        tracing::info!(crd = CRD_NAME, pages = progress.pages, "resuming after the last page done");
    }

    let tenants = Api::<Tenant>::all(client.clone());
    // Restarts of the list after a 410 without an inconsistent continue token: each re-visits
    // every Tenant, so they are bounded.
    let mut restarts = 0;
    while !progress.listed {
        let page_number = progress.pages + 1;
        let mut params = ListParams::default().limit(settings.page_size);
        if let Some(token) = &progress.continue_token {
            params = params.continue_token(token);
        }
        let page = match list_page(&tenants, &params, settings.attempts).await {
            Ok(page) => page,
            Err(kube::Error::Api(status))
                if status.code == 410 && progress.continue_token.is_some() && restarts < 3 =>
            {
                restarts += 1;
                let inconsistent = status.metadata.as_ref().and_then(|m| m.continue_.clone()).filter(|t| !t.is_empty());
                tracing::info!(page = page_number, resumed = inconsistent.is_some(), "continue token expired");
                progress.continue_token = inconsistent;
                continue;
            }
            Err(source) => return Err(MigrationError::List { page: page_number, source }),
        };
        let page_span = tracing::info_span!(
            "migrate page",
            otel.name = format!("migrate page {page_number}"),
            page = page_number,
            objects = page.items.len(),
            migrated = tracing::field::Empty,
            skipped = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        let counts = migrate_page(&tenants, settings, metrics, page.items).instrument(page_span.clone()).await;
        page_span.record("migrated", counts.migrated).record("skipped", counts.skipped).record("failed", counts.failed);
        progress.counts.add(counts);
        progress.pages = page_number;
        progress.continue_token = page.metadata.continue_.filter(|t| !t.is_empty());
        progress.listed = progress.continue_token.is_none();
        let remaining = page.metadata.remaining_item_count.unwrap_or(0).max(0);
        metrics.migration_remaining(if progress.listed { 0 } else { remaining });
        store.save(&progress).await?;
        pause(settings, PausePoint::PageDone(page_number)).await;
    }

    let counts = progress.counts;
    let outcome = if counts.failed > 0 {
        Outcome::Incomplete(counts)
    } else {
        pause(settings, PausePoint::BeforeTrim).await;
        match trim(client, generation).await? {
            Trim::Trimmed | Trim::AlreadyDone => Outcome::Migrated(counts),
            Trim::Refused(reason) => Outcome::Refused { reason, counts },
            // Tenants written while the spec said otherwise may sit at another version: the next
            // pass (retried like a pass with failures) visits them all again.
            Trim::Changed => Outcome::Incomplete(counts),
        }
    };
    // A pass with failures starts over next time: its finished pages may hold the failed Tenants.
    store.clear().await?;
    Ok(outcome)
}

/// The no-op patches of one page, `settings.concurrency` at a time; a child span per failure.
async fn migrate_page(
    tenants: &Api<Tenant>,
    settings: &MigrationSettings,
    metrics: &Metrics,
    items: Vec<kube::core::PartialObjectMeta<Tenant>>,
) -> Counts {
    let mut counts = Counts::default();
    let patches = futures::stream::iter(items)
        .map(|item| async move {
            let name = item.metadata.name.unwrap_or_default();
            let (uid, version) =
                (item.metadata.uid.unwrap_or_default(), item.metadata.resource_version.unwrap_or_default());
            let result = migrate_one(tenants, &name, &uid, &version, settings.attempts).await;
            (name, result)
        })
        .buffer_unordered(settings.concurrency.max(1));
    let mut patches = std::pin::pin!(patches);
    while let Some((name, result)) = patches.next().await {
        match result {
            Item::Migrated => counts.migrated += 1,
            Item::Skipped => counts.skipped += 1,
            Item::Failed(error) => {
                counts.failed += 1;
                let message = format!("cannot rewrite Tenant {name} at {STORAGE_VERSION}: {error}");
                let span = tracing::warn_span!(
                    "migrate Tenant",
                    otel.name = format!("migrate Tenant {name}"),
                    tenant = %name,
                    otel.status_code = "ERROR",
                    otel.status_message = %message,
                );
                span.in_scope(|| tracing::warn!(tenant = %name, %error, "{message}"));
            }
        }
    }
    metrics.migration_objects(counts.migrated, counts.skipped, counts.failed);
    counts
}

/// What the trim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trim {
    /// `storedVersions` is now the storage version alone.
    Trimmed,
    /// It already was.
    AlreadyDone,
    /// [`decide`] refuses it, for this reason.
    Refused(String),
    /// The CRD's spec changed since the pass began: the pass must be done again first.
    Changed,
}

/// Trims `status.storedVersions` to the storage version if [`decide`] still allows it on a fresh
/// read of the CRD and its generation is still `pass_generation` (the one the pass began with;
/// `None`: not checked), guarded by that read's resourceVersion; a conflict is decided and tried
/// once more.
pub async fn trim(client: Client, pass_generation: Option<i64>) -> Result<Trim, MigrationError> {
    let crds = Api::<CustomResourceDefinition>::all(client);
    for _ in 0..2 {
        let mut crd = crds.get(CRD_NAME).await.map_err(MigrationError::ReadCrd)?;
        match decide(&crd) {
            Decision::Done => return Ok(Trim::AlreadyDone),
            Decision::Refuse(reason) => return Ok(Trim::Refused(reason)),
            Decision::Migrate => {}
        }
        if pass_generation.is_some() && crd.metadata.generation != pass_generation {
            tracing::info!(crd = CRD_NAME, "the CRD changed during the pass: not trimming, the pass starts over");
            return Ok(Trim::Changed);
        }
        let from = stored_versions(&crd);
        crd.status.get_or_insert_default().stored_versions = Some(vec![STORAGE_VERSION.to_owned()]);
        let span = tracing::info_span!(
            "write",
            otel.name = format!("update CustomResourceDefinition {CRD_NAME} status"),
            verb = "update",
            kind = "CustomResourceDefinition",
            name = CRD_NAME,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        // The CRD carries the resourceVersion it was read with: a change since is a 409.
        let replaced = crds.replace_status(CRD_NAME, &PostParams::default(), &crd).instrument(span.clone()).await;
        match replaced {
            Ok(_) => {
                tracing::info!(crd = CRD_NAME, from = ?from, to = STORAGE_VERSION, "status.storedVersions trimmed");
                return Ok(Trim::Trimmed);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                span.record("otel.status_code", "ERROR").record("otel.status_message", status.message.as_str());
                tracing::info!(crd = CRD_NAME, "the CRD changed under the trim: deciding again");
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
                return Err(MigrationError::Trim(error));
            }
        }
    }
    Err(MigrationError::TrimConflict)
}

/// First wait before a run that did not finish is tried again (the default of
/// [`MigrationSettings::first_retry`]); doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(30 * 60);

/// Runs [`run`] until the migration is done or refused, waiting longer after each run that failed
/// or left Tenants behind; a refusal to start is published once, however often it repeats. The
/// leader spawns this and drops it when it stops leading.
pub async fn run_until_done(client: Client, settings: MigrationSettings, metrics: Arc<Metrics>) {
    #[cfg(feature = "test-fixtures")]
    let settings = held_by_environment(settings);
    let recorder = recorder(&client, &settings);
    let mut published = Published::default();
    let mut wait = settings.first_retry;
    loop {
        match run_once(client.clone(), &settings, &metrics, &recorder, &mut published).await {
            Ok(Outcome::AlreadyMigrated | Outcome::Migrated(_) | Outcome::Refused { .. }) => return,
            Ok(Outcome::Incomplete(counts)) => {
                tracing::warn!(failed = counts.failed, retry_in = ?wait, "storage version migration incomplete")
            }
            Err(error) => tracing::warn!(retry_in = ?wait, "storage version migration failed: {error}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinitionStatus, CustomResourceDefinitionVersion,
    };

    fn crd(storage: &str, stored: &[&str]) -> CustomResourceDefinition {
        let mut crd = crate::api::crd(&crate::api::ConversionService::default());
        for version in &mut crd.spec.versions {
            version.storage = version.name == storage;
        }
        crd.status = Some(CustomResourceDefinitionStatus {
            stored_versions: Some(stored.iter().map(|v| (*v).to_owned()).collect()),
            ..CustomResourceDefinitionStatus::default()
        });
        crd
    }

    #[test]
    fn only_a_crd_storing_v2_with_known_stored_versions_is_migrated() {
        assert_eq!(decide(&crd("v2", &["v2"])), Decision::Done);
        assert_eq!(decide(&crd("v2", &["v1", "v2"])), Decision::Migrate);
        assert_eq!(decide(&crd("v2", &["v2", "v1"])), Decision::Migrate);
        assert!(matches!(decide(&crd("v1", &["v1", "v2"])), Decision::Refuse(r) if r.contains("stores")));
        assert!(matches!(decide(&crd("v2", &["v1", "v2", "v3"])), Decision::Refuse(r) if r.contains("v3")));
        let mut two = crd("v2", &["v1", "v2"]);
        two.spec.versions.push(CustomResourceDefinitionVersion {
            name: "v3".into(),
            storage: true,
            ..Default::default()
        });
        assert!(matches!(decide(&two), Decision::Refuse(_)));
    }

    #[test]
    fn progress_round_trips_through_the_annotations_of_its_crd_only() {
        let progress = Progress {
            continue_token: Some("token".into()),
            counts: Counts { migrated: 3, skipped: 2, failed: 1 },
            pages: 2,
            listed: false,
            crd_generation: Some(4),
        };
        let annotations: BTreeMap<String, String> = progress
            .annotations("uid-1")
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect();
        assert!(annotations.keys().all(|k| k.starts_with("migration.neurallog.io/")));
        assert_eq!(Progress::from_annotations(&annotations, "uid-1"), Some(progress));
        assert_eq!(Progress::from_annotations(&annotations, "uid-2"), None);
        assert_eq!(Progress::from_annotations(&BTreeMap::new(), "uid-1"), None);
    }

    #[test]
    fn the_no_op_patch_carries_only_its_preconditions() {
        assert_eq!(guard("u", "7"), json!({"metadata": {"uid": "u", "resourceVersion": "7"}}));
        assert_eq!(guard("", "7"), json!({"metadata": {"resourceVersion": "7"}}));
    }

    #[test]
    fn throttling_server_errors_and_lost_connections_are_retried_conflicts_are_not() {
        let status = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        assert!(is_transient(&status(429)));
        assert!(is_transient(&status(503)));
        assert!(!is_transient(&status(409)));
        assert!(!is_transient(&status(404)));
    }
}

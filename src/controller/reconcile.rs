//! One reconcile of one tenant, traced as its own trace: the root span names the tenant, the
//! generation and resourceVersion it saw, and why it ran; its trace id goes into the logs and
//! every Event. The trace, the log line and the reconcile metric agree on how it ended.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use tracing::field::Empty;

use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Reason};
use super::finalizer::{self, FinalizerPatch};
use super::outcome::{NEWER_COPY_WAIT, Outcome};
use super::{apply, cleanup};
use crate::api::Tenant;
use crate::metrics::TENANT_CONTROLLER;
use crate::telemetry;

pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let name = tenant.name_any();
    let started = std::time::Instant::now();
    let _worker = ctx.metrics.worker(TENANT_CONTROLLER);
    let span = tracing::info_span!(
        parent: None,
        "reconcile",
        tenant = %name,
        generation = tenant.meta().generation.unwrap_or_default(),
        resource_version = tenant.resource_version().unwrap_or_default(),
        trigger = %ctx.triggers.take(&name),
        trace_id = Empty,
        span_id = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    let ids = span.in_scope(telemetry::current_ids);
    if let Some((trace_id, span_id)) = &ids {
        span.record("trace_id", trace_id).record("span_id", span_id);
    }
    let result = async {
        let result = pass(&tenant, &ctx).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let root = tracing::Span::current();
        match &result {
            Ok(Outcome { shortfall: None, .. }) => {
                ctx.triggers.scheduled(&name, "requeued by the previous reconcile (resync or wait)");
                tracing::debug!(outcome = "ok", elapsed_ms, "reconcile finished");
            }
            Ok(Outcome { shortfall: Some(why), .. }) => {
                root.record("otel.status_code", "ERROR").record("otel.status_message", why.as_str());
                ctx.triggers.scheduled(&name, "retry after a reconcile that fell short");
                tracing::warn!(error = %why, "reconcile fell short");
                tracing::debug!(outcome = "error", elapsed_ms, "reconcile finished");
            }
            Err(error) => {
                root.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
                ctx.triggers.scheduled(&name, "retry after a failed reconcile");
                tracing::warn!(%error, "reconcile failed");
                tracing::debug!(outcome = "error", elapsed_ms, "reconcile finished");
                let reason = Reason::Failed(error.reason().to_owned());
                events::publish(&ctx.recorder, &tenant, reason, Activity::Reconcile, error.to_string()).await;
            }
        }
        result
    }
    .instrument(span)
    .await;
    let succeeded = matches!(&result, Ok(Outcome { shortfall: None, .. }));
    ctx.metrics.reconciled(TENANT_CONTROLLER, succeeded, started.elapsed(), ids.map(|(trace_id, _)| trace_id));
    result.map(|outcome| outcome.action)
}

/// The finalizer first, then the apply or the cleanup path.
async fn pass(tenant: &Tenant, ctx: &Context) -> Result<Outcome> {
    let name = tenant.name_any();
    if !ctx.caches_synced().await {
        return Err(Error::CachesGone { tenant: name });
    }
    let has_finalizer = finalizer::has_finalizer(tenant);
    if tenant.meta().deletion_timestamp.is_some() {
        // A tenant on its way out moves no further and holds no slot of the rollout; its backup
        // series go with it (its TenantBackups stay).
        ctx.rollout.forget(&name);
        ctx.metrics.forget_tenant(&name);
        return if has_finalizer {
            cleanup::cleanup(tenant, ctx).await
        } else {
            Ok(Outcome::done(Action::await_change()))
        };
    }
    if !has_finalizer && finalizer::add(&ctx.client, tenant).await? == FinalizerPatch::StaleCopy {
        return Ok(Outcome::done(Action::requeue(NEWER_COPY_WAIT)));
    }
    apply::apply(tenant, ctx).await
}

pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&tenant.name_any());
    // The failure itself is logged (and traced) by the reconcile.
    tracing::debug!(tenant = %tenant.name_any(), retry_in = ?delay, reason = error.reason(), "retry scheduled");
    Action::requeue(delay)
}

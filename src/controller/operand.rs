//! The operand's health, as metrics: every interval the leader asks each tenant's Redis for its
//! `INFO` (memory used and allowed, keys, evictions, clients, persistence) over the network with
//! the tenant's password, as a Redis exporter would, without a container beside every Redis.
//!
//! Cost: one short connection per tenant per interval (1,000 tenants every 30 s are about 33
//! connections a second, each a few kilobytes), seven series per tenant. A Redis that does not
//! answer within [`QUERY_TIMEOUT`] is `redis_up 0`. The password Secret is immutable, so it is read
//! once per tenant. The NetworkPolicy `allow-redis-from-operator` admits the operator's pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::reflector::Store;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tracing::Instrument as _;

use super::context::Context;
use crate::api::Tenant;
use crate::model::redis_info::RedisInfo;
use crate::resources::redis;

/// Time one Redis has to answer: connect, authenticate and send its INFO.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Redis asked at once.
const PARALLEL_QUERIES: usize = 16;
/// Longest reply line read (`+OK`, `$<length>`): a peer that is not Redis cannot grow it further.
const MAX_LINE: u64 = 4096;

/// A RESP command of bulk strings.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
    }
    out
}

/// `AUTH` then `INFO` on one connection.
async fn query(address: &str, password: &str) -> Result<RedisInfo, String> {
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|error| error.to_string())?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if !password.is_empty() {
        stream.get_mut().write_all(&command(&["AUTH", password])).await.map_err(|e| e.to_string())?;
        (&mut stream).take(MAX_LINE).read_line(&mut line).await.map_err(|e| e.to_string())?;
        if !line.starts_with('+') {
            return Err(format!("AUTH refused: {}", line.trim()));
        }
    }
    stream.get_mut().write_all(&command(&["INFO"])).await.map_err(|e| e.to_string())?;
    line.clear();
    (&mut stream).take(MAX_LINE).read_line(&mut line).await.map_err(|e| e.to_string())?;
    let length: usize = line
        .trim()
        .strip_prefix('$')
        .and_then(|length| length.parse().ok())
        .ok_or_else(|| format!("INFO answered {:?}", line.trim()))?;
    // INFO is a few kilobytes; anything far larger is not Redis.
    if length > 1 << 20 {
        return Err(format!("INFO of {length} bytes"));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(RedisInfo::parse(&String::from_utf8_lossy(&body)))
}

/// The tenants' Redis passwords, by the tenant's UID (each Secret is immutable).
#[derive(Default)]
struct Passwords(Mutex<HashMap<String, String>>);

impl Passwords {
    async fn get(&self, ctx: &Context, uid: &str, namespace: &str, tenant: &str) -> Option<String> {
        if let Some(password) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(uid) {
            return Some(password.clone());
        }
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace).get(&redis::secret_name(tenant)).await;
        let password =
            secret.ok()?.data?.get(redis::PASSWORD_KEY).map(|p| String::from_utf8_lossy(&p.0).into_owned())?;
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(uid.to_owned(), password.clone());
        Some(password)
    }

    /// Forgets a password Redis may no longer take (the operator replaces a lost Secret).
    fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
    }

    /// Forgets the tenants no longer there.
    fn keep(&self, uids: &[String]) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|uid, _| uids.contains(uid));
    }
}

/// Asks every tenant's Redis for its INFO, every `interval`, until `shutdown`.
pub async fn run(ctx: Arc<Context>, tenants: Store<Tenant>, interval: Duration, shutdown: impl Future<Output = ()>) {
    let passwords = Passwords::default();
    // The tenants measured in the last round: one deleted meanwhile loses its series (a sample
    // taken while its deletion dropped the others would otherwise stay).
    let mut measured = HashSet::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let listed = tenants.state();
        let live: Vec<Arc<Tenant>> =
            listed.into_iter().filter(|tenant| tenant.metadata.deletion_timestamp.is_none()).collect();
        passwords.keep(&live.iter().filter_map(|tenant| tenant.uid()).collect::<Vec<_>>());
        let names: HashSet<String> = live.iter().map(|tenant| tenant.name_any()).collect();
        for gone in measured.difference(&names) {
            ctx.metrics.forget_redis(gone);
        }
        measured = names;
        // At trace level, below what is exported (the operator's debug): a round every 30 s is no
        // reconcile to follow in Jaeger.
        let span = tracing::trace_span!("operand_metrics", tenants = live.len());
        futures::stream::iter(live)
            .for_each_concurrent(PARALLEL_QUERIES, |tenant| collect(&ctx, &passwords, tenant))
            .instrument(span)
            .await;
    }
}

/// One tenant's sample; a tenant not yet provisioned (no password, no Redis) is skipped.
async fn collect(ctx: &Context, passwords: &Passwords, tenant: Arc<Tenant>) {
    let Ok(model) = tenant.model() else { return };
    let Some(uid) = tenant.uid() else { return };
    let Some(password) = passwords.get(ctx, &uid, &model.namespace, &model.name).await else { return };
    let address = format!("{}.{}.svc:{}", redis::name(&model), model.namespace, redis::PORT);
    let sample = match tokio::time::timeout(QUERY_TIMEOUT, query(&address, &password)).await {
        Ok(Ok(info)) => Some(info),
        Ok(Err(error)) => {
            tracing::debug!(tenant = %model.name, %error, "Redis INFO failed");
            passwords.forget(&uid);
            None
        }
        Err(_) => None,
    };
    ctx.metrics.set_redis(&model.name, sample.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&["AUTH", "pw"]), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec());
    }
}

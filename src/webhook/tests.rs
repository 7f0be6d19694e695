//! The webhook over real TLS on 127.0.0.1, with certificates from an rcgen CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::certificates::tests::{issued, publish, tempdir, wait_for};
use super::*;
use crate::tls::{Trust, client_config};

const HOST: &str = "webhook.test";

/// A running webhook serving the directory `dir` (polled every 20 ms), and its stop switch.
struct Running {
    address: SocketAddr,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let settings = Settings { address: SocketAddr::from(([127, 0, 0, 1], 0)), cert_dir: dir.to_owned() };
        let certificates =
            Certificates::Directory { path: settings.cert_dir.clone(), poll_interval: Duration::from_millis(20) };
        let webhook = Webhook::bind(&settings, certificates).await?;
        let address = webhook.local_addr();
        assert_ne!(address.port(), 0);
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(webhook.serve(metrics.clone(), async {
            let _ = stopped.await;
        }));
        Ok(Self { address, metrics, stop, served })
    }

    fn url(&self) -> String {
        format!("https://{HOST}:{}{PATH}", self.address.port())
    }

    /// A client trusting the CAs in `ca_pem`; `fresh` opens a connection (a handshake) per request.
    fn client(&self, ca_pem: &str, fresh: bool) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config(Trust::Pem(ca_pem.as_bytes()))?)
            .resolve(HOST, self.address)
            .timeout(Duration::from_secs(10));
        if fresh {
            builder = builder.pool_max_idle_per_host(0);
        }
        Ok(builder.build()?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(()).map_err(|()| anyhow::anyhow!("the webhook stopped on its own"))?;
        self.served.await?
    }
}

fn review(uid: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": uid,
            "desiredAPIVersion": "neurallog.io/v1",
            "objects": [{"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {}}],
        },
    })
}

/// Sends a review; the status and the parsed reply.
async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> reqwest::Result<(u16, Value)> {
    let response = client.post(url).header("content-type", "application/json").body(body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_over_tls_gets_the_conversions_reply_and_is_counted() -> anyhow::Result<()> {
    let dir = tempdir();
    let (ca, pair) = issued(&[HOST]);
    publish(&dir, 1, &pair);
    let webhook = Running::start(&dir).await?;
    let client = webhook.client(&ca, false)?;

    let (status, reply) = post(&client, &webhook.url(), review("3c1a").to_string()).await?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (reply["apiVersion"].as_str(), reply["kind"].as_str()),
        (Some("apiextensions.k8s.io/v1"), Some("ConversionReview"))
    );
    assert_eq!(reply["response"]["uid"], "3c1a", "{reply}");
    // What the conversion itself says is its business; the reply carries it as it is.
    let expected = crate::api::conversion::review(serde_json::from_value(review("3c1a"))?);
    assert_eq!(reply, serde_json::to_value(&expected)?);

    let success = expected.response.as_ref().is_some_and(|r| r.result.is_success());
    let text = webhook.metrics.encode()?;
    let result = if success { "success" } else { "failure" };
    let counted = format!("neurallog_tenant_operator_conversion_reviews_total{{result=\"{result}\"}} 1");
    assert!(text.contains(&counted), "{text}");
    assert!(text.contains("neurallog_tenant_operator_conversion_duration_seconds_count 1"), "{text}");

    // Plain HTTP on the same port is no way in, nor is another path or method.
    let plain = reqwest::Client::builder().tls_backend_preconfigured(client_config(Trust::Nobody)?).build()?;
    assert!(plain.post(format!("http://{}{PATH}", webhook.address)).body("{}").send().await.is_err());
    let other = client.post(webhook.url().replace(PATH, "/mutate")).body("{}").send().await?;
    assert_eq!(other.status().as_u16(), 404);
    let get = client.get(webhook.url()).send().await?;
    assert_eq!(get.status().as_u16(), 405);
    webhook.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_review_is_refused_and_a_wrong_review_is_the_conversions_to_judge() -> anyhow::Result<()> {
    let dir = tempdir();
    let (ca, pair) = issued(&[HOST]);
    publish(&dir, 1, &pair);
    let webhook = Running::start(&dir).await?;
    let client = webhook.client(&ca, false)?;

    // Not a ConversionReview at all: 400, and a failed v1 review saying so.
    for body in ["not json".to_owned(), json!({"kind": "AdmissionReview"}).to_string(), "[]".to_owned()] {
        let (status, reply) = post(&client, &webhook.url(), body.clone()).await?;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(
            (reply["apiVersion"].as_str(), reply["kind"].as_str()),
            (Some("apiextensions.k8s.io/v1"), Some("ConversionReview"))
        );
        let result = &reply["response"]["result"];
        assert_eq!((result["status"].as_str(), result["code"].as_u64()), (Some("Failure"), Some(400)), "{reply}");
        let message = result["message"].as_str().unwrap_or_default();
        assert!(message.contains("the body is not a ConversionReview"), "{body}: {message}");
    }
    // A review of another version or without a request: the conversion refuses it, and the reply
    // is a v1 review all the same.
    let mut v1beta1 = review("b");
    v1beta1["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
    let no_request = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"});
    for body in [v1beta1, no_request] {
        let (status, reply) = post(&client, &webhook.url(), body.to_string()).await?;
        assert_eq!(status, 200, "{body}: {reply}");
        assert_eq!(reply["apiVersion"], "apiextensions.k8s.io/v1", "{reply}");
        assert_eq!(reply["response"]["result"]["status"], "Failure", "{reply}");
        assert!(!reply["response"]["result"]["message"].as_str().unwrap_or_default().is_empty(), "{reply}");
    }
    let text = webhook.metrics.encode()?;
    assert!(text.contains("neurallog_tenant_operator_conversion_reviews_total{result=\"failure\"} 5"), "{text}");
    webhook.stop().await
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_announced_or_not() -> anyhow::Result<()> {
    let mut announced = HeaderMap::new();
    announced.insert(header::CONTENT_LENGTH, (MAX_BODY + 1).to_string().parse()?);
    assert!(matches!(read_body(&announced, Body::empty()).await, Err(Unanswered::TooLarge)));
    let streamed = Body::from(vec![b' '; MAX_BODY + 1]);
    assert!(matches!(read_body(&HeaderMap::new(), streamed).await, Err(Unanswered::TooLarge)));
    let fits = Body::from(vec![b' '; 1024]);
    assert_eq!(read_body(&HeaderMap::new(), fits).await.ok().map(|b| b.len()), Some(1024));
    assert_eq!(reason(StatusCode::PAYLOAD_TOO_LARGE), "RequestEntityTooLarge");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_the_server_runs_and_serves_once_one_is_mounted() -> anyhow::Result<()> {
    let dir = tempdir();
    let webhook = Running::start(&dir).await?;
    let (ca, pair) = issued(&[HOST]);
    let client = webhook.client(&ca, true)?;
    assert!(post(&client, &webhook.url(), review("a").to_string()).await.is_err(), "no certificate: no handshake");
    publish(&dir, 1, &pair);
    let mut served = false;
    for _ in 0..250 {
        if post(&client, &webhook.url(), review("a").to_string()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the mounted certificate serves");
    webhook.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_under_a_client_looping_requests_fails_none_of_them() -> anyhow::Result<()> {
    let dir = tempdir();
    let (old_ca, old) = issued(&[HOST]);
    let (new_ca, new) = issued(&[HOST]);
    publish(&dir, 1, &old);
    let webhook = Arc::new(Running::start(&dir).await?);
    let both = format!("{old_ca}{new_ca}");

    // One client on a kept-alive connection, one handshaking per request: both trust both CAs,
    // as the API server does while a caBundle carries the old and the new CA.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for fresh in [false, true] {
        let (client, url, done, sent) = (webhook.client(&both, fresh)?, webhook.url(), done.clone(), sent.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                match post(&client, &url, review(&format!("{fresh}-{n}")).to_string()).await {
                    Ok((200, reply)) if reply["response"]["uid"] == format!("{fresh}-{n}") => {}
                    other => failures.push(format!("{other:?}")),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    wait_for(|| sent.load(Ordering::Relaxed) >= 20).await;
    publish(&dir, 2, &new);
    // Rotated once a client trusting only the new CA gets through.
    let only_new = webhook.client(&new_ca, true)?;
    let mut rotated = false;
    for _ in 0..250 {
        if post(&only_new, &webhook.url(), review("new").to_string()).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sent.load(Ordering::Relaxed);
    wait_for(|| sent.load(Ordering::Relaxed) >= before + 20).await;
    done.store(true, Ordering::Relaxed);
    for looping in loops {
        let failures = looping.await?;
        assert!(failures.is_empty(), "{} failed: {failures:?}", failures.len());
    }
    assert!(rotated, "the rotated certificate serves");
    // And a client trusting only the old CA no longer gets a new connection.
    assert!(post(&webhook.client(&old_ca, true)?, &webhook.url(), review("old").to_string()).await.is_err());
    let Ok(webhook) = Arc::try_unwrap(webhook) else { panic!("still shared") };
    webhook.stop().await
}

#[tokio::test]
async fn a_taken_port_fails_the_bind() -> anyhow::Result<()> {
    let taken = TcpListener::bind("127.0.0.1:0").await?;
    let dir = tempdir();
    let settings = Settings { address: taken.local_addr()?, cert_dir: dir.to_path_buf() };
    let Err(error) = Webhook::bind(&settings, Certificates::directory(&settings.cert_dir)).await else {
        anyhow::bail!("bound a taken port");
    };
    assert!(format!("{error:#}").contains("cannot listen on"), "{error:#}");
    Ok(())
}

#[test]
fn a_review_is_answered_with_its_uid_version_and_object_count() {
    let (status, reply, answered) = answer(review("u-1").to_string().as_bytes());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply.response.map(|r| r.uid), Some("u-1".to_owned()));
    assert_eq!(answered.uid.as_deref(), Some("u-1"));
    assert_eq!(answered.desired_api_version.as_deref(), Some("neurallog.io/v1"));
    assert_eq!(answered.objects, 1);
    let (status, _, answered) = answer(b"[]");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answered.failure.is_some_and(|why| why.contains("not a ConversionReview")));
}

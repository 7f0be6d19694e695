//! Network isolation enforced by a real implementation: on a real node with kube-router's
//! NetworkPolicy controller, a tenant's NetworkPolicies are proven from real pods. The OperatorHub
//! install scenario runs it while the operator's pods must stay up, on the operator OLM deployed.
//! Each probe is a TCP
//! connect (bash's `/dev/tcp`, 2 s) from a real pod's network namespace: the tenant's own pods
//! (through an ephemeral container in the server's and registry's, whose images have no shell), and
//! peers in an allowed namespace and in another. Every result is held both to what the isolation
//! promises and to what the reachability model (`src/fixtures/reachability.rs`) predicts from the
//! policies the operator wrote; the enforcer programs a change asynchronously, so a probe is
//! repeated until it holds or the deadline passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use neurallog_tenant_operator::fixtures::reachability::{Endpoint, allowed};
use serde_json::{Value, json};
use testenv::node::RealNode;
use testenv::timeline::Timeline;

use crate::on_node::{TenantImages, create_tenant, is_ready, tenant_v2, tenants, wait, wait_running};

const TENANT: &str = "acme";
const NAMESPACE: &str = "tenant-acme";
/// A namespace the tenant allows, and one it does not.
const FRIENDS: &str = "friends";
const STRANGERS: &str = "strangers";
/// What the peers' listener serves on.
const LISTENER_PORT: i32 = 8080;
const REDIS_PORT: i32 = 6379;
/// How long a probe's connect may take: a dropped SYN is never answered, an allowed connect on the
/// node's bridge answers in milliseconds.
const CONNECT_TIMEOUT_SECONDS: u32 = 2;
/// How long the enforcer may take to program a change.
const ENFORCED_WITHIN: Duration = Duration::from_secs(90);

/// The isolation's tenant and its peers, created; [`prove`](Self::prove) waits for them and probes.
pub(crate) struct Isolation<'a> {
    node: &'a RealNode,
    client: Client,
    images: TenantImages,
}

impl<'a> Isolation<'a> {
    /// Creates peers in an allowed and in another namespace, and the tenant, which allows the
    /// first, without waiting for them (the caller's own tenants come up meanwhile).
    pub(crate) async fn create(node: &'a RealNode, client: &Client, images: &TenantImages) -> anyhow::Result<Self> {
        for namespace in [FRIENDS, STRANGERS] {
            node.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))?;
            node.apply_json(&peer_pod(namespace, images))?;
        }
        let mut tenant = tenant_v2(TENANT, "Delete", images);
        tenant["spec"]["networkPolicy"] = json!({"allowedNamespaces": [FRIENDS]});
        create_tenant(client, "v2", &tenant).await?;
        Ok(Self { node, client: client.clone(), images: images.clone() })
    }

    /// Waits for the tenant and the peers, then holds each step's probes to the promise and to
    /// the model.
    pub(crate) async fn prove(&self, timeline: &mut Timeline) -> anyhow::Result<()> {
        timeline.begin("isolation", "acme allows friends; its pods Running; shells beside the server and registry");
        wait_running(&self.client, TENANT).await?;
        let world = World::find(self.node, &self.client, &self.images).await?;
        timeline.done(format!("server {}, registry {}, redis {}", world.server.ip, world.registry.ip, world.redis.ip));
        world.probe_every_rule(timeline).await
    }
}

impl World<'_> {
    /// The default isolation, then a custom ingress rule and a custom egress rule, each added and
    /// removed.
    async fn probe_every_rule(&self, timeline: &mut Timeline) -> anyhow::Result<()> {
        let world = self;
        timeline.begin("defaults", "others shut out, friends reach the HTTP ports, only the server reaches Redis");
        let (server, registry, redis) = (&world.server, &world.registry, &world.redis);
        let (friends, strangers) = (&world.friends, &world.strangers);
        let mut probes = vec![
            Probe::tcp(strangers, server, world.server_port, false),
            Probe::tcp(strangers, registry, world.registry_port, false),
            Probe::tcp(strangers, redis, REDIS_PORT, false),
            Probe::tcp(friends, server, world.server_port, true),
            Probe::tcp(friends, registry, world.registry_port, true),
            Probe::tcp(friends, redis, REDIS_PORT, false),
            Probe::tcp(server, redis, REDIS_PORT, true),
            Probe::tcp(registry, redis, REDIS_PORT, false),
            Probe::tcp(server, registry, world.registry_port, true),
            Probe::tcp(registry, server, world.server_port, true),
            Probe::tcp(redis, server, world.server_port, false),
        ];
        let checked = world.hold(&probes).await?;
        timeline.done(format!("{checked} probes as promised and as the model predicts"));

        timeline.begin(
            "custom ingress",
            "a rule opening the server's port to strangers opens that alone; removed, it closes",
        );
        let rule = json!([{
            "description": "the strangers' monitoring",
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": STRANGERS}}}],
            "ports": [{"port": world.server_port}],
        }]);
        world.set_rules("ingress", Some(rule)).await?;
        probes = vec![
            Probe::tcp(strangers, server, world.server_port, true),
            Probe::tcp(strangers, registry, world.registry_port, false),
            Probe::tcp(strangers, redis, REDIS_PORT, false),
            Probe::tcp(friends, server, world.server_port, true),
        ];
        let opened = world.hold(&probes).await?;
        world.set_rules("ingress", None).await?;
        let closed = world.hold(&[Probe::tcp(strangers, server, world.server_port, false)]).await?;
        timeline.done(format!("{opened} probes with the rule, {closed} after its removal"));

        timeline
            .begin("egress", "an egress rule limits the server to friends' port; DNS and the tenant stay reachable");
        let rule = json!([{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": FRIENDS}}}],
            "ports": [{"port": LISTENER_PORT}],
        }]);
        world.set_rules("egress", Some(rule)).await?;
        probes = vec![
            Probe::tcp(server, friends, LISTENER_PORT, true),
            Probe::tcp(server, strangers, LISTENER_PORT, false),
            Probe::tcp(server, redis, REDIS_PORT, true),
            Probe::tcp(server, registry, world.registry_port, true),
            Probe::tcp(friends, server, world.server_port, true),
            Probe::dns(server, &world.dns, true),
            // Only the server is limited.
            Probe::tcp(registry, strangers, LISTENER_PORT, true),
        ];
        let limited = world.hold(&probes).await?;
        world.set_rules("egress", None).await?;
        let lifted = world.hold(&[Probe::tcp(server, strangers, LISTENER_PORT, true)]).await?;
        timeline.done(format!("{limited} probes with the rule, {lifted} after its removal"));
        Ok(())
    }
}

/// A pod a probe starts from or goes to: where it runs, its labels (what policies select), and the
/// container to probe from.
#[derive(Debug, Clone)]
struct Peer {
    namespace: String,
    pod: String,
    ip: String,
    labels: BTreeMap<String, String>,
    shell: &'static str,
}

impl Peer {
    fn endpoint(&self) -> Endpoint {
        Endpoint { namespace: self.namespace.clone(), labels: self.labels.clone() }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// One connection attempt and what the isolation promises of it.
#[derive(Debug, Clone)]
struct Probe {
    from: Peer,
    to: Peer,
    port: i32,
    /// UDP name resolution through cluster DNS instead of a TCP connect.
    dns: bool,
    promised: bool,
}

impl Probe {
    fn tcp(from: &Peer, to: &Peer, port: i32, promised: bool) -> Self {
        Self { from: from.clone(), to: to.clone(), port, dns: false, promised }
    }

    fn dns(from: &Peer, dns: &Peer, promised: bool) -> Self {
        Self { from: from.clone(), to: dns.clone(), port: 53, dns: true, promised }
    }

    fn describe(&self) -> String {
        let what =
            if self.dns { "resolves names through".to_owned() } else { format!("connects to :{} on", self.port) };
        format!("{} {what} {}", self.from.name(), self.to.name())
    }

    /// The probe's command in the source's shell container.
    fn command(&self) -> String {
        if self.dns {
            "getent hosts kubernetes.default.svc.cluster.local".to_owned()
        } else {
            format!("timeout {CONNECT_TIMEOUT_SECONDS} bash -c '</dev/tcp/{}/{}'", self.to.ip, self.port)
        }
    }
}

/// The pods of the scenario.
struct World<'a> {
    node: &'a RealNode,
    client: Client,
    server: Peer,
    registry: Peer,
    redis: Peer,
    friends: Peer,
    strangers: Peer,
    dns: Peer,
    server_port: i32,
    registry_port: i32,
}

impl<'a> World<'a> {
    /// Finds the tenant's pods, gives the server and the registry a shell container, and waits for
    /// the peers.
    async fn find(node: &'a RealNode, client: &Client, images: &TenantImages) -> anyhow::Result<Self> {
        let (server, server_port) = tenant_pod(client, "neurallog-server").await?;
        let (registry, registry_port) = tenant_pod(client, "neurallog-registry").await?;
        let (redis, _) = tenant_pod(client, "redis").await?;
        for peer in [&server, &registry] {
            attach_shell(node, client, peer, &images.redis).await?;
        }
        let peer = async |namespace: &str| -> anyhow::Result<Peer> {
            let pods = Api::<Pod>::namespaced(client.clone(), namespace);
            let pod = wait(&format!("the peer pod in {namespace} Ready"), async || {
                Ok(pods.get_opt("peer").await?.filter(is_ready))
            })
            .await?;
            peer_of(&pod, "shell")
        };
        let dns_pods = Api::<Pod>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default().labels("k8s-app=kube-dns"))
            .await?;
        let dns = dns_pods.items.first().context("no cluster DNS pod")?;
        Ok(Self {
            node,
            client: client.clone(),
            server: Peer { shell: "probe", ..server },
            registry: Peer { shell: "probe", ..registry },
            redis: Peer { shell: "redis", ..redis },
            friends: peer(FRIENDS).await?,
            strangers: peer(STRANGERS).await?,
            dns: peer_of(dns, "coredns")?,
            server_port,
            registry_port,
        })
    }

    /// Holds every probe to its promise and to the model's prediction under the NetworkPolicies
    /// now in the cluster; returns how many were checked.
    async fn hold(&self, probes: &[Probe]) -> anyhow::Result<usize> {
        let policies: Vec<NetworkPolicy> =
            Api::<NetworkPolicy>::all(self.client.clone()).list(&ListParams::default()).await?.items;
        for probe in probes {
            let protocol = if probe.dns { "UDP" } else { "TCP" };
            let predicted = allowed(&policies, &probe.from.endpoint(), &probe.to.endpoint(), protocol, probe.port);
            ensure!(
                predicted == probe.promised,
                "the model predicts that {} is {}, the isolation promises {}",
                probe.describe(),
                verdict(predicted),
                verdict(probe.promised)
            );
        }
        let checks = probes.iter().map(|probe| async move {
            let deadline = Instant::now() + ENFORCED_WITHIN;
            loop {
                let observed = self.observe(probe).await?;
                if observed == probe.promised {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} is {} on the node after {ENFORCED_WITHIN:?}; the model and the isolation say {}",
                        probe.describe(),
                        verdict(observed),
                        verdict(probe.promised)
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        futures::future::try_join_all(checks).await?;
        Ok(probes.len())
    }

    /// Whether the probe's connection (or name resolution) succeeds now.
    async fn observe(&self, probe: &Probe) -> anyhow::Result<bool> {
        let output = tokio::process::Command::new(self.node.kubectl())
            .arg("--kubeconfig")
            .arg(self.node.admin_kubeconfig())
            .args(["-n", probe.from.namespace.as_str(), "exec", probe.from.pod.as_str(), "-c", probe.from.shell])
            .args(["--", "bash", "-c"])
            .arg(probe.command())
            .output()
            .await
            .context("cannot run kubectl exec")?;
        // 124: timed out (dropped); 1: refused or, for getent, not resolved. Anything else is the
        // probe failing, not the network.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1 | 2 | 124) => Ok(false),
            code => bail!(
                "probe {} failed ({code:?}): {}",
                probe.describe(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// Sets (or, with `None`, removes) the tenant's custom rules of `direction` (`ingress` or
    /// `egress`) and waits until the operator has reconciled that generation: every policy it
    /// writes for it (an egress rule comes with a baseline policy of its own) is in place, or gone.
    async fn set_rules(&self, direction: &str, rules: Option<Value>) -> anyhow::Result<()> {
        let wanted = rules.is_some();
        let patch = json!({"spec": {"networkPolicy": {direction: rules.unwrap_or(Value::Null)}}});
        let tenants = tenants(&self.client, "v2");
        let patched = tenants.patch(TENANT, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let generation = patched.metadata.generation.context("the patched tenant has no generation")?;
        let prefix = format!("custom-{direction}-");
        let policies = Api::<NetworkPolicy>::namespaced(self.client.clone(), NAMESPACE);
        let what = if wanted { "write" } else { "delete" };
        wait(&format!("the operator to {what} the {direction} rule's policies (generation {generation})"), async || {
            // The status is written after every child of that generation.
            let observed = tenants.get(TENANT).await?.data["status"]["observedGeneration"].as_i64();
            let names: Vec<String> = policies
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            let written = names.iter().any(|name| name.starts_with(&prefix)) == wanted;
            Ok((written && observed >= Some(generation)).then_some(()))
        })
        .await
    }
}

fn verdict(open: bool) -> &'static str {
    if open { "open" } else { "closed" }
}

/// The tenant's pod of component `app` and its first container port.
async fn tenant_pod(client: &Client, app: &str) -> anyhow::Result<(Peer, i32)> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    let pod = pods.items.into_iter().find(is_ready).with_context(|| format!("no Ready {app} pod in {NAMESPACE}"))?;
    let port = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .and_then(|container| container.ports.as_ref()?.first())
        .map(|port| port.container_port)
        .with_context(|| format!("the {app} pod declares no port"))?;
    Ok((peer_of(&pod, "")?, port))
}

fn peer_of(pod: &Pod, shell: &'static str) -> anyhow::Result<Peer> {
    Ok(Peer {
        namespace: pod.metadata.namespace.clone().context("a pod without a namespace")?,
        pod: pod.metadata.name.clone().context("a pod without a name")?,
        ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()).context("a pod without an address")?,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        shell,
    })
}

/// A peer: a listener on [`LISTENER_PORT`] (the registry stand-in) and a shell to probe from.
fn peer_pod(namespace: &str, images: &TenantImages) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "peer", "namespace": namespace, "labels": {"app": "peer"}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "listener", "image": images.registry, "env": [{"name": "PORT", "value": LISTENER_PORT.to_string()}],
                 "ports": [{"containerPort": LISTENER_PORT}],
                 "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}},
                {"name": "shell", "image": images.redis, "command": ["sleep", "infinity"],
                 "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}},
            ],
        },
    })
}

/// An ephemeral container `probe` with a shell (the Redis image's) in `peer`'s pod, sharing its
/// network namespace, running once this returns.
async fn attach_shell(node: &RealNode, client: &Client, peer: &Peer, image: &str) -> anyhow::Result<()> {
    let output = node
        .kubectl_command(&["-n", &peer.namespace, "debug", &peer.pod, "--image", image, "--container", "probe"])
        .args(["--profile", "restricted", "--", "sleep", "infinity"])
        .output()?;
    ensure!(
        output.status.success(),
        "kubectl debug {} failed: {}",
        peer.name(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &peer.namespace);
    wait(&format!("the probe container in {} running", peer.name()), async || {
        let pod = pods.get(&peer.pod).await?;
        let running = pod
            .status
            .and_then(|s| s.ephemeral_container_statuses)
            .into_iter()
            .flatten()
            .any(|status| status.name == "probe" && status.state.and_then(|s| s.running).is_some());
        Ok(running.then_some(()))
    })
    .await
}

//! `make run OLM=1`: the operator installed the way users install it, from the catalog through
//! OLM on a simulated cluster, with the sample tenant, the Auth stand-in and Jaeger; with a
//! released version first when asked (`FROM=0.1.0`), so that the upgrade to this checkout's bundle
//! can be watched and approved by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject};

use crate::auth::AuthStandIn;
use crate::operatorhub::{
    CRD, Entry, Env, INSTALL_NAMESPACE, INSTALL_PLAN_RETRY, head_csv, json_of, read_yaml, released_binary,
    released_csv, text,
};

/// What to run.
pub struct Options {
    /// Where the logs and kubeconfigs go (emptied first).
    pub dir: PathBuf,
    /// This checkout's `tenant-operator` binary.
    pub operator: PathBuf,
    /// A released version to install first, then upgrade from by hand.
    pub from: Option<String>,
    /// Stop once the sample tenant runs (and, with `from`, after approving the upgrade itself).
    pub once: bool,
}

/// Runs until Ctrl-C or SIGTERM (or, with [`Options::once`], until everything was shown once);
/// everything started is stopped on the way out.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let auth = AuthStandIn::start().await.context("starting the Auth stand-in")?;
    let head = head_csv()?;
    let entries = match &options.from {
        Some(version) => vec![Entry::released(version), Entry::head(Some(version))?],
        None => vec![Entry::head(None)?],
    };
    let mut env = Env::start("make run OLM=1", &options.dir, 6, &entries, INSTALL_PLAN_RETRY).await?;
    let outcome = walk_through(&mut env, &options, &head, &auth).await;
    env.end(outcome).await
}

async fn walk_through(env: &mut Env, options: &Options, head: &str, auth: &AuthStandIn) -> anyhow::Result<()> {
    // The operator's settings, as an OLM user gives them: the Subscription's config.
    let settings = [("TENANT_OPERATOR_AUTH_URL", auth.url())];
    let kubeconfig = env.cluster.kubeconfig().display().to_string();
    let kubectl = format!("{} --kubeconfig {kubeconfig}", env.cluster.kubectl().display());
    let root = crate::repo_root();

    match &options.from {
        Some(version) => {
            let old = released_csv(version);
            env.begin("install", &format!("Subscription (Manual, startingCSV {old}), approved"));
            env.subscribe_with_env(Some(&old), "Manual", &settings).await?;
            env.approve(&old).await?;
            env.wait_installed(&old).await?;
            wait_configured(env, &settings).await?;
            env.start_operator(&format!("operator-{version}"), &released_binary(version)?).await?;
            env.done(format!("{old} Succeeded, its own binary running"));
        }
        None => {
            env.begin("install", "Subscription (Automatic) to this checkout's bundle");
            env.subscribe_with_env(None, "Automatic", &settings).await?;
            env.wait_installed(head).await?;
            wait_configured(env, &settings).await?;
            env.start_operator("operator", &options.operator).await?;
            env.wait_settled(head).await?;
            env.done(format!("{head} Succeeded and running"));
        }
    }

    // The sample in the newest version the installed release serves.
    let sample = if options.from.is_some() {
        "config/samples/v1/neurallog_v1_tenant.yaml"
    } else {
        "config/samples/neurallog_v2_tenant.yaml"
    };
    env.begin("tenant", &format!("{sample} reaches Running and registers with Auth"));
    let manifest = read_yaml(&root.join(sample))?;
    let version = text(&manifest, "/apiVersion").rsplit('/').next().unwrap_or("v2").to_owned();
    let tenant: DynamicObject = serde_json::from_value(manifest)?;
    let name = tenant.metadata.name.clone().unwrap_or_default();
    env.create(&env.tenants(&version), &tenant).await?;
    let tenants = env.tenants(&version);
    env.wait(&format!("tenant {name} to be Running"), async || {
        Ok((text(&json_of(&tenants.get(&name).await?), "/status/phase") == "Running").then_some(()))
    })
    .await?;
    env.wait(&format!("tenant {name} to be registered with Auth"), async || {
        Ok(auth.registered().contains(&name).then_some(()))
    })
    .await?;
    env.done(format!("{name} Running and registered"));

    if let Some(version) = &options.from {
        let plan = env
            .wait(&format!("the InstallPlan of {head}"), async || {
                Ok(env.plans_of(head).await?.into_iter().next().map(|plan| text(&plan, "/metadata/name").to_owned()))
            })
            .await?;
        println!(
            "\n{head} is waiting for approval in InstallPlan {plan}. Look at it, then approve it:\n  \
             {kubectl} -n {INSTALL_NAMESPACE} get installplan,csv,subscription\n  \
             {kubectl} -n {INSTALL_NAMESPACE} patch installplan {plan} --type merge -p '{{\"spec\":{{\"approved\":true}}}}'\n\
             The operator is upgraded once OLM has rolled its Deployment (docs/upgrading.md says what to watch).\n"
        );
        if options.once {
            env.approve(head).await?;
        }
        env.begin("upgrade", &format!("waiting for {head} to be approved and installed"));
        if !installed_unless_stopped(env, head).await? {
            return Ok(());
        }
        wait_configured(env, &settings).await?;
        env.stop_operator(&format!("operator-{version}")).await?;
        env.start_operator("operator", &options.operator).await?;
        env.wait_settled(head).await?;
        let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
        env.wait("the storage migration to trim storedVersions to [v2]", async || {
            let crd = crds.get(CRD).await?;
            Ok((crd.status.and_then(|s| s.stored_versions).unwrap_or_default() == ["v2"]).then_some(()))
        })
        .await?;
        env.done(format!("{version} upgraded to {head}; every tenant stored as v2"));
    }

    println!(
        "\nThe operator runs as OLM installed it ({INSTALL_NAMESPACE}/neurallog-tenant-operator, its ServiceAccount's \
         token, OLM's webhook certificate behind OLM's Service); KWOK simulates the pods.\n\
         Use the cluster:\n  export KUBECONFIG={kubeconfig}\n  {kubectl} get tenants,csv -A\n  \
         {kubectl} get tenants.v1.neurallog.io {name} -o yaml\n  \
         {kubectl} delete tenant {name}\n\
         Traces: curl -s '{}/api/traces?service=neurallog-tenant-operator&limit=5'\n\
         Logs of every component: {}\n",
        env.jaeger.query_url(),
        env.dir.display()
    );
    if options.once {
        return Ok(());
    }
    println!("Press Ctrl-C to stop everything.");
    shutdown_signal().await
}

/// Waits until OLM has put the Subscription's `config.env` into the operator's Deployment (it may
/// update the Deployment again after it first reports it available).
async fn wait_configured(env: &Env, settings: &[(&str, String)]) -> anyhow::Result<()> {
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), INSTALL_NAMESPACE);
    env.wait("the Subscription's settings in the operator's Deployment", async || {
        let deployment = deployments.get("neurallog-tenant-operator").await?;
        let containers =
            deployment.spec.and_then(|spec| spec.template.spec).map(|pod| pod.containers).unwrap_or_default();
        let env_vars: Vec<_> = containers.iter().flat_map(|c| c.env.iter().flatten()).collect();
        let configured = settings.iter().all(|(name, value)| {
            env_vars.iter().any(|var| var.name == *name && var.value.as_deref() == Some(value.as_str()))
        });
        Ok(configured.then_some(()))
    })
    .await?;
    // And rolled out again with them.
    env.wait_installed(&current_csv(env).await?).await
}

/// The CSV that owns the operator's Deployment now.
async fn current_csv(env: &Env) -> anyhow::Result<String> {
    let deployment =
        Api::<Deployment>::namespaced(env.client.clone(), INSTALL_NAMESPACE).get("neurallog-tenant-operator").await?;
    Ok(deployment.labels().get("olm.owner").cloned().unwrap_or_default())
}

/// Waits, for as long as it takes a person to approve it, until CSV `csv` has succeeded and OLM has
/// rolled the Deployment; `false` when stopped (Ctrl-C or SIGTERM) first.
async fn installed_unless_stopped(env: &Env, csv: &str) -> anyhow::Result<bool> {
    let csvs = env.olm_api("ClusterServiceVersion", "clusterserviceversions");
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let phase = csvs.get_opt(csv).await?.map(|found| text(&json_of(&found), "/status/phase").to_owned());
        if phase.as_deref() == Some("Succeeded") {
            env.wait_installed(csv).await?;
            return Ok(true);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            stopped = &mut stop => return stopped.map(|()| false),
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    Ok(())
}

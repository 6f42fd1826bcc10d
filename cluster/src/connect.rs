//! Finding the cluster: `KUBECONFIG` when it is set, else the pod's in-cluster config, else
//! `~/.kube/config`; every failure says which of them was tried and what was wrong with it.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the cluster this process should serve, and its API server's URL.
pub async fn client() -> Result<(Client, String), String> {
    let config = config().await?;
    let url = config.cluster_url.to_string();
    let client =
        Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    Ok((client, url))
}

async fn config() -> Result<Config, String> {
    if let Some(paths) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&paths).collect();
        for path in &paths {
            if !path.is_file() {
                return Err(format!(
                    "KUBECONFIG names {}, which is not a readable file",
                    path.display()
                ));
            }
        }
        let merged = Kubeconfig::from_env()
            .map_err(|e| format!("KUBECONFIG: {}", chain(&e)))?
            .ok_or("KUBECONFIG is set but names no file")?;
        return from_kubeconfig(merged, "KUBECONFIG").await;
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Config::incluster().map_err(|e| {
            format!(
                "in-cluster Kubernetes config (the pod's service account): {}",
                chain(&e)
            )
        });
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = home.join(".kube").join("config");
    if path.is_file() {
        let kubeconfig = Kubeconfig::read_from(&path)
            .map_err(|e| format!("{}: {}", path.display(), chain(&e)))?;
        return from_kubeconfig(kubeconfig, &path.display().to_string()).await;
    }
    Err(format!(
        "no Kubernetes configuration: KUBECONFIG is not set, this is not a pod (KUBERNETES_SERVICE_HOST is not set), and {} does not exist",
        path.display()
    ))
}

async fn from_kubeconfig(kubeconfig: Kubeconfig, from: &str) -> Result<Config, String> {
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{from}: {}", chain(&e)))
}

/// An error and its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

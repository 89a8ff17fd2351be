//! HTTP access to the admin API. Reads go to every `--api` node at once and the first
//! answer wins (any node answers reads), so a dead or unreachable node costs nothing.
//! Writes try each node in turn and follow leader redirects (`409` with `leader_admin`).

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Redirects followed per request before giving up.
const MAX_REDIRECTS: usize = 3;

/// No node given with `--api` answered at all (connection refused, timeout, not HTTP):
/// `cmactl` exits with [`super::EXIT_UNREACHABLE`].
#[derive(Debug, thiserror::Error)]
#[error("no admin API reachable: {0}")]
pub struct Unreachable(pub String);

/// The admin API client.
pub struct Api {
    bases: Vec<String>,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client for the nodes given on the command line.
    pub fn new(cli: &super::Cli) -> anyhow::Result<Api> {
        let bases: Vec<String> = cli
            .api
            .iter()
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            bail!("no --api given");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cli.timeout.max(1)))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            bases,
            token: cli.token.clone(),
            http,
        })
    }

    /// GET from every node at once; the first that answers wins.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        use futures::stream::{FuturesUnordered, StreamExt};
        if self.bases.len() == 1 {
            return self.send::<(), T>(reqwest::Method::GET, path, None).await;
        }
        let mut calls: FuturesUnordered<_> = self
            .bases
            .iter()
            .map(|base| async move {
                let outcome = self
                    .once::<()>(&reqwest::Method::GET, base, path, None)
                    .await;
                (base, outcome)
            })
            .collect();
        let mut errors = Vec::new();
        while let Some((base, outcome)) = calls.next().await {
            match outcome {
                Ok(Outcome::Done(value)) => {
                    return serde_json::from_value(value)
                        .with_context(|| format!("unexpected answer from {base}{path}"))
                }
                Ok(Outcome::Redirect(_)) => errors.push(format!("{base}: redirected")),
                Ok(Outcome::Failed(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("{base}: {e:#}")),
            }
        }
        Err(anyhow!("no admin API reachable: {}", errors.join("; ")))
    }

    /// POST to the leader (found by redirect).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut errors = Vec::new();
        for base in &self.bases {
            let mut base = base.clone();
            for _ in 0..=MAX_REDIRECTS {
                match self.once(&method, &base, path, body).await {
                    Ok(Outcome::Done(value)) => {
                        return serde_json::from_value(value)
                            .with_context(|| format!("unexpected answer from {base}{path}"))
                    }
                    Ok(Outcome::Redirect(leader)) => base = format!("http://{leader}"),
                    Ok(Outcome::Failed(e)) => return Err(e),
                    Err(e) => {
                        errors.push(format!("{base}: {e:#}"));
                        break;
                    }
                }
            }
        }
        Err(Unreachable(errors.join("; ")).into())
    }

    /// GET from one node only (no fail-over, no redirects): the status screen asks every
    /// member for its own view.
    pub async fn get_at<T: DeserializeOwned>(&self, base: &str, path: &str) -> anyhow::Result<T> {
        let base = base.trim_end_matches('/');
        match self
            .once::<()>(&reqwest::Method::GET, base, path, None)
            .await?
        {
            Outcome::Done(value) => serde_json::from_value(value)
                .with_context(|| format!("unexpected answer from {base}{path}")),
            Outcome::Redirect(_) => Err(anyhow!("{base}{path}: redirected")),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// The scheme of the `--api` URLs (`http` or `https`), to reach members by their
    /// advertised admin address.
    pub fn scheme(&self) -> &str {
        match self.bases.first() {
            Some(b) if b.starts_with("https://") => "https",
            _ => "http",
        }
    }

    async fn once<B: Serialize>(
        &self,
        method: &reqwest::Method,
        base: &str,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Outcome> {
        let mut request = self.http.request(method.clone(), format!("{base}{path}"));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{base}{path} answered {status} without JSON"))?;
        if status.is_success() {
            return Ok(Outcome::Done(value));
        }
        if status == reqwest::StatusCode::CONFLICT {
            if let Some(leader) = value.get("leader_admin").and_then(|v| v.as_str()) {
                return Ok(Outcome::Redirect(leader.to_string()));
            }
        }
        let message = value
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("no error message");
        Ok(Outcome::Failed(anyhow!(
            "{base}{path}: {status}: {message}"
        )))
    }
}

enum Outcome {
    Done(serde_json::Value),
    Redirect(String),
    Failed(anyhow::Error),
}

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
        // A current answer (the leader's, past its read barrier) wins at once; otherwise
        // the freshest of the others once all have answered.
        let mut best: Option<(u64, &String, serde_json::Value)> = None;
        while let Some((base, outcome)) = calls.next().await {
            match outcome {
                Ok(Outcome::Done(value)) => match stale_rank(&value) {
                    None => {
                        return serde_json::from_value(value)
                            .with_context(|| format!("unexpected answer from {base}{path}"))
                    }
                    Some(applied) => {
                        if best.as_ref().is_none_or(|(b, _, _)| applied > *b) {
                            best = Some((applied, base, value));
                        }
                    }
                },
                Ok(Outcome::Redirect(_)) => errors.push(format!("{base}: redirected")),
                Ok(Outcome::Failed(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("{base}: {e:#}")),
            }
        }
        if let Some((_, base, value)) = best {
            return serde_json::from_value(value)
                .with_context(|| format!("unexpected answer from {base}{path}"));
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

/// `None` when an answer is current (or says nothing of its freshness: a node of an
/// earlier version); otherwise the index it has applied, to pick the freshest.
fn stale_rank(value: &serde_json::Value) -> Option<u64> {
    let freshness = value.get("freshness")?;
    match serde_json::from_value::<api::cluster::Freshness>(freshness.clone()) {
        Ok(f) if f.is_current() => None,
        Ok(
            api::cluster::Freshness::Follower { applied_index, .. }
            | api::cluster::Freshness::Unconfirmed { applied_index }
            | api::cluster::Freshness::NoQuorum { applied_index, .. },
        ) => Some(applied_index),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::stale_rank;

    #[test]
    fn a_current_answer_ranks_first_and_stale_ones_by_applied_index() {
        let current = serde_json::json!({"freshness": {"kind": "current", "applied_index": 5}});
        let follower = serde_json::json!({"freshness": {"kind": "follower", "applied_index": 9,
            "leader_id": 1, "leader_commit": 10, "heard_ms_ago": 40}});
        let cut_off = serde_json::json!({"freshness": {"kind": "no_quorum", "applied_index": 3,
            "leader_commit": null, "heard_ms_ago": null}});
        assert_eq!(stale_rank(&current), None);
        assert_eq!(stale_rank(&follower), Some(9));
        assert_eq!(stale_rank(&cut_off), Some(3));
        assert_eq!(stale_rank(&serde_json::json!({"node_id": 1})), None);
    }
}

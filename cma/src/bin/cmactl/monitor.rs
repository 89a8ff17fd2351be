//! `cmactl status | hosts | rings | failures | events`: the monitoring views, read from any
//! node's replica (the answer says which node answered and whether it leads).

use super::api::Api;
use anyhow::Context;
use cma::admin::ClusterStatus;
use cma::sinks::Event;
use cma::worker::api::{Answer, ProbeAnswer, ProbeRequest};
use cma::worker::views::{FailureRow, HostRow, RingRow, WorkerStatus};
use std::time::Duration;

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn source_line<T>(a: &Answer<T>) -> String {
    format!(
        "(answered by node {}{}, applied index {})",
        a.node_id,
        if a.is_leader {
            ", leader"
        } else {
            ", follower"
        },
        a.applied_index
    )
}

/// Host ids as `1,2,3`.
fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn time(us: u64) -> String {
    // Seconds since the epoch with milliseconds: unambiguous and sortable without a
    // time-zone database.
    format!("{}.{:03}", us / 1_000_000, (us / 1000) % 1000)
}

/// `cmactl status`: cluster members, leader, lag, queue depth, worker progress.
pub async fn status(api: &Api, json: bool) -> anyhow::Result<()> {
    let cluster: ClusterStatus = api.get("/cluster/status").await?;
    let worker: Answer<WorkerStatus> = api.get("/v1/status").await?;
    if json {
        return print_json(&serde_json::json!({ "cluster": cluster, "worker": worker }));
    }
    println!("{}", serde_json::to_string_pretty(&cluster)?);
    let w = &worker.data;
    println!(
        "worker: offset {} of {} (backlog {}), hosts up {} dead {} left {}, open failures {} {}",
        w.offset,
        w.queue_next,
        w.backlog,
        w.hosts_up,
        w.hosts_dead,
        w.hosts_left,
        w.open_failures,
        source_line(&worker)
    );
    Ok(())
}

/// `cmactl hosts`.
pub async fn hosts(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer: Answer<Vec<HostRow>> = api.get("/v1/hosts").await?;
    if json {
        return print_json(&answer.data);
    }
    println!(
        "{:<8} {:<20} {:<22} {:<10} {:<8} {:<16} WATCHERS",
        "ID", "HOSTNAME", "ADDRESS", "SWITCH", "STATUS", "SINCE"
    );
    for h in &answer.data {
        println!(
            "{:<8} {:<20} {:<22} {:<10} {:<8} {:<16} {}",
            h.id,
            h.hostname,
            h.addr,
            h.switch.as_deref().unwrap_or("-"),
            h.status,
            time(h.since_us),
            id_list(&h.watchers)
        );
    }
    println!("{}", source_line(&answer));
    Ok(())
}

/// `cmactl rings`.
pub async fn rings(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer: Answer<Vec<RingRow>> = api.get("/v1/rings").await?;
    if json {
        return print_json(&answer.data);
    }
    for r in &answer.data {
        let members: Vec<String> = r.members.iter().map(u64::to_string).collect();
        let ring = if members.len() > 1 {
            format!("{} -> {}", members.join(" -> "), members[0])
        } else {
            members.join("")
        };
        println!("{:<16} {:<7} {ring}", r.name, r.kind);
    }
    println!("{}", source_line(&answer));
    Ok(())
}

/// `cmactl failures [--all]`.
pub async fn failures(api: &Api, all: bool, json: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/failures?all=true"
    } else {
        "/v1/failures"
    };
    let answer: Answer<Vec<FailureRow>> = api.get(path).await?;
    if json {
        return print_json(&answer.data);
    }
    println!(
        "{:<6} {:<18} {:<12} {:<7} {:<16} {:<20} SUMMARY",
        "ID", "KIND", "SUBJECT", "STATE", "AT", "HOSTS"
    );
    for f in &answer.data {
        println!(
            "{:<6} {:<18} {:<12} {:<7} {:<16} {:<20} {}",
            f.id,
            f.kind,
            f.subject,
            f.state,
            time(f.at_us),
            id_list(&f.hosts),
            f.summary
        );
    }
    println!("{}", source_line(&answer));
    Ok(())
}

fn print_event(e: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!(
            "{:<6} {:<16} {:<22} {}",
            e.id,
            time(e.at_us),
            e.kind,
            e.summary
        );
    }
    Ok(())
}

/// `cmactl events [--since ID] [--follow]`.
pub async fn events(api: &Api, since: u64, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut since = since;
    loop {
        let answer: Answer<Vec<Event>> = api
            .get(&format!("/v1/events?since={since}&limit=1000"))
            .await
            .context("reading events")?;
        for e in &answer.data {
            print_event(e, json)?;
            since = since.max(e.id);
        }
        if !follow {
            return Ok(());
        }
        if answer.data.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `cmactl probe HOST`: exits non-zero when the host does not answer.
pub async fn probe(api: &Api, host: u64, timeout_ms: u64, json: bool) -> anyhow::Result<()> {
    let request = ProbeRequest {
        host,
        timeout_ms: Some(timeout_ms),
    };
    let answer: Answer<ProbeAnswer> = api.post("/v1/probe", &request).await?;
    let a = &answer.data;
    if json {
        print_json(a)?;
    } else {
        match a.rtt_us {
            Some(rtt) => println!(
                "host {} at {}: reachable, rtt {:.2} ms {}",
                a.host,
                a.addr,
                rtt as f64 / 1000.0,
                source_line(&answer)
            ),
            None => println!(
                "host {} at {}: {} {}",
                a.host,
                a.addr,
                a.outcome,
                source_line(&answer)
            ),
        }
    }
    if a.outcome != "reachable" {
        anyhow::bail!("host {host} did not answer within {timeout_ms} ms");
    }
    Ok(())
}

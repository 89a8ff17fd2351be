//! `cmactl status | watch | hosts | rings | topology | failures | events | probe`: reads the
//! monitoring views from any node's replica (the answer says which node answered and
//! whether it leads) and prints them through [`super::views`]. The clock and the time
//! zone are read here, once per screen, and handed to the pure formatters.

use super::api::Api;
use super::render::Style;
use super::views::{self, MemberAnswer, StatusView};
use super::{Health, WatchArgs};
use anyhow::Context;
use api::cluster::ClusterStatus;
use api::probe::{ProbeAnswer, ProbeRequest};
use api::views::{Answer, FailureRow, HostRow, RingRow, WorkerStatus};
use api::Event;
use std::io::Write;
use std::time::Duration;

/// How long the status screen waits for each member's own answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// How to print.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`.
    pub json: bool,
    /// Colours or not.
    pub style: Style,
    /// Stdout is a terminal (live mode clears the screen).
    pub terminal: bool,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `--json` rows: the rows on stdout, unchanged in shape; when they may be old, one JSON
/// line on stderr saying how (`{"stale": {...}, "answered_by": N}`).
fn print_rows<T: serde::Serialize>(answer: &Answer<T>) -> anyhow::Result<()> {
    note_stale(answer);
    print_json(&answer.data)
}

fn note_stale<T>(answer: &Answer<T>) {
    if let Some(f) = answer.freshness.filter(|f| !f.is_current()) {
        eprintln!(
            "{}",
            serde_json::json!({ "stale": f, "answered_by": answer.node_id })
        );
    }
}

/// The status screen's exit status: no quorum first (nothing it shows can be trusted),
/// then open failures.
fn health(view: &StatusView) -> Health {
    if view.no_quorum() {
        Health::NoQuorum
    } else if view
        .open_failures
        .iter()
        .any(|f| f.state == api::views::FailureState::Open)
    {
        Health::OpenFailures
    } else {
        Health::Ok
    }
}

/// Everything on the status screen, read from the cluster.
async fn fetch_status(api: &Api) -> anyhow::Result<StatusView> {
    let cluster: ClusterStatus = api.get("/cluster/status").await?;
    let worker: Answer<WorkerStatus> = api.get("/v1/status").await?;
    let failures: Answer<Vec<FailureRow>> = api.get("/v1/failures").await?;
    let scheme = api.scheme();
    let asks =
        cluster.nodes.iter().map(|(id, addr)| async move {
            let base = format!("{scheme}://{}", addr.admin);
            let answer: MemberAnswer =
                match tokio::time::timeout(MEMBER_TIMEOUT, api.get_at(&base, "/cluster/status"))
                    .await
                {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err(format!("no answer in {} s", MEMBER_TIMEOUT.as_secs())),
                };
            (*id, answer)
        });
    let answers = futures::future::join_all(asks).await;
    Ok(views::status_view(
        &cluster,
        &answers,
        &worker,
        &failures.data,
    ))
}

/// One frame of a live view: its text, what must change for a redraw when stdout is not
/// a terminal (the data, not the ages), and the exit status it implies.
struct Frame {
    text: String,
    key: String,
    outcome: anyhow::Result<Health>,
}

async fn status_frame(api: &Api, out: Output) -> Frame {
    match fetch_status(api).await {
        Ok(view) => {
            let key = serde_json::to_string(&view).unwrap_or_default();
            let text = if out.json {
                key.clone() + "\n"
            } else {
                views::render_status(&view, now_us(), &chrono::Local, out.style)
            };
            Frame {
                text,
                key,
                outcome: Ok(health(&view)),
            }
        }
        Err(e) => error_frame(e, out),
    }
}

async fn failures_frame(api: &Api, all: bool, out: Output) -> Frame {
    let path = if all {
        "/v1/failures?all=true"
    } else {
        "/v1/failures"
    };
    match api.get::<Answer<Vec<FailureRow>>>(path).await {
        Ok(answer) => {
            let key = serde_json::to_string(&answer.data).unwrap_or_default();
            let text = if out.json {
                note_stale(&answer);
                key.clone() + "\n"
            } else {
                views::render_failures(&answer, now_us(), &chrono::Local, out.style)
            };
            // Listing failures is not a health check: it succeeds whatever it lists
            // (scripts parse `failures --json`); `status` is the check.
            Frame {
                text,
                key,
                outcome: Ok(Health::Ok),
            }
        }
        Err(e) => error_frame(e, out),
    }
}

fn error_frame(e: anyhow::Error, out: Output) -> Frame {
    let message = format!("cmactl: {e:#}");
    let text = if out.json {
        serde_json::json!({ "error": message }).to_string() + "\n"
    } else {
        views::error_screen(&message, out.style)
    };
    Frame {
        key: message,
        text,
        outcome: Err(e),
    }
}

/// Live mode: refreshes every `interval` seconds and redraws when the frame changed (on a
/// terminal: anything, ages included, after clearing the screen; otherwise: the data,
/// appended, so the output can be logged). Stops on Ctrl-C or after `count` refreshes;
/// the exit status is the last frame's.
async fn live<F, Fut>(args: WatchArgs, out: Output, mut next: F) -> anyhow::Result<Health>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Frame>,
{
    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval.clamp(1, 60)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<String> = None;
    let mut outcome = Ok(Health::Ok);
    let mut refreshes = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let frame = next().await;
        let changed_by = if out.terminal && !out.json {
            &frame.text
        } else {
            &frame.key
        };
        if last.as_deref() != Some(changed_by.as_str()) {
            last = Some(changed_by.clone());
            let mut stdout = std::io::stdout().lock();
            if out.json {
                write!(stdout, "{}", frame.text)?;
            } else {
                let header = format!(
                    "Every {} s (Ctrl-C quits)    {}",
                    args.interval,
                    super::render::date_time(now_us(), &chrono::Local)
                );
                if out.terminal {
                    // Home and clear: redraw in place, as crm_mon does.
                    write!(stdout, "\x1b[H\x1b[2J")?;
                }
                writeln!(stdout, "{header}\n\n{}", frame.text)?;
            }
            stdout.flush()?;
        }
        outcome = frame.outcome;
        refreshes += 1;
        if args.count.is_some_and(|c| refreshes >= c) {
            break;
        }
    }
    outcome
}

/// `cmactl status [--watch]` and `cmactl watch`.
pub async fn status(api: &Api, watch: WatchArgs, out: Output) -> anyhow::Result<Health> {
    if watch.watch {
        return live(watch, out, || status_frame(api, out)).await;
    }
    let view = fetch_status(api).await?;
    if out.json {
        print_json(&view)?;
    } else {
        print!(
            "{}",
            views::render_status(&view, now_us(), &chrono::Local, out.style)
        );
    }
    Ok(health(&view))
}

/// `cmactl failures [--all] [--watch]`.
pub async fn failures(
    api: &Api,
    all: bool,
    watch: WatchArgs,
    out: Output,
) -> anyhow::Result<Health> {
    if watch.watch {
        return live(watch, out, || failures_frame(api, all, out)).await;
    }
    let path = if all {
        "/v1/failures?all=true"
    } else {
        "/v1/failures"
    };
    let answer: Answer<Vec<FailureRow>> = api.get(path).await?;
    if out.json {
        print_rows(&answer)?;
    } else {
        print!(
            "{}",
            views::render_failures(&answer, now_us(), &chrono::Local, out.style)
        );
    }
    Ok(Health::Ok)
}

/// `cmactl hosts`.
pub async fn hosts(api: &Api, out: Output) -> anyhow::Result<()> {
    let answer: Answer<Vec<HostRow>> = api.get("/v1/hosts").await?;
    if out.json {
        return print_rows(&answer);
    }
    print!(
        "{}",
        views::render_hosts(&answer, now_us(), &chrono::Local, out.style)
    );
    Ok(())
}

/// `cmactl rings`.
pub async fn rings(api: &Api, out: Output) -> anyhow::Result<()> {
    let answer: Answer<Vec<RingRow>> = api.get("/v1/rings").await?;
    if out.json {
        return print_rows(&answer);
    }
    print!("{}", views::render_rings(&answer, out.style));
    Ok(())
}

/// `cmactl topology`.
pub async fn topology(api: &Api, out: Output) -> anyhow::Result<()> {
    let answer: Answer<api::topology::TopologyView> = api.get("/v1/topology").await?;
    if out.json {
        return print_rows(&answer);
    }
    print!("{}", views::render_topology(&answer, out.style));
    Ok(())
}

/// `cmactl events [--since ID] [--follow]`: one line per event (JSON lines with
/// `--json`).
pub async fn events(api: &Api, since: u64, follow: bool, out: Output) -> anyhow::Result<()> {
    let mut since = since;
    // In follow mode a stale source is said once, and again only when it changes kind.
    let mut last_kind = None;
    loop {
        let answer: Answer<Vec<Event>> = api
            .get(&format!("/v1/events?since={since}&limit=1000"))
            .await
            .context("reading events")?;
        let now = now_us();
        let kind = answer.freshness.as_ref().map(std::mem::discriminant);
        if let Some(w) = answer.stale_warning().filter(|_| kind != last_kind) {
            if out.json {
                note_stale(&answer);
            } else {
                eprintln!("{w}");
            }
        }
        last_kind = kind;
        for e in &answer.data {
            if out.json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", views::render_event(e, now, &chrono::Local, out.style));
            }
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
pub async fn probe(api: &Api, host: u64, timeout_ms: u64, out: Output) -> anyhow::Result<()> {
    let request = ProbeRequest {
        host,
        timeout_ms: Some(timeout_ms),
    };
    let answer: Answer<ProbeAnswer> = api.post("/v1/probe", &request).await?;
    let a = &answer.data;
    if out.json {
        print_json(a)?;
    } else {
        match a.rtt_us {
            Some(rtt) => println!(
                "host {} at {}: reachable, rtt {:.2} ms {}",
                a.host,
                a.addr,
                rtt as f64 / 1000.0,
                views::source_line(&answer)
            ),
            None => println!(
                "host {} at {}: {} {}",
                a.host,
                a.addr,
                a.outcome,
                views::source_line(&answer)
            ),
        }
    }
    if a.outcome != "reachable" {
        anyhow::bail!("host {host} did not answer within {timeout_ms} ms");
    }
    Ok(())
}

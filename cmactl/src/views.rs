//! What each command shows, as pure functions: the status screen's data
//! ([`StatusView`], also its `--json` form) and the text of every view, given the rows,
//! "now", the time zone and the [`Style`].

use super::render::{paint, table, when, Cell, Style, Tone};
use api::cluster::{ClusterStatus, Freshness};
use api::topology::TopologyView;
use api::views::Answer;
use api::views::{evidence_brief, FailureRow, FailureState, HostRow, RingRow, WorkerStatus};
use api::Event;
use chrono::TimeZone;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One cluster member as the status screen shows it (`members[]` in `status --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// `voter` or `learner`.
    pub role: String,
    /// Its own Raft state (`Leader`, `Follower`, `Candidate`, `Learner`), or `unreachable`
    /// when its admin API did not answer.
    pub state: String,
    /// Raft address.
    pub raft: String,
    /// Admin API address.
    pub admin: String,
    /// Its applied log index, when it answered.
    pub applied_index: Option<u64>,
    /// Log entries it has not applied yet, behind the newest log index any member reported.
    pub lag: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// `cmactl status --json`: everything on the status screen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The node whose replica answered.
    pub answered_by: u64,
    /// The leader, if known.
    pub leader_id: Option<u64>,
    /// The answering node's Raft term.
    pub term: u64,
    /// Every member, with its own view of its progress.
    pub members: Vec<MemberView>,
    /// Queue offsets and depth (packets stored and not yet trimmed).
    pub queue: QueueView,
    /// Worker progress and host counts.
    pub worker: WorkerStatus,
    /// Open failures, oldest first.
    pub open_failures: Vec<FailureRow>,
    /// How fresh the answering node's state is (absent from nodes of earlier versions).
    pub freshness: Option<Freshness>,
}

impl StatusView {
    /// Whether the answering node said it reaches no quorum.
    pub fn no_quorum(&self) -> bool {
        matches!(self.freshness, Some(Freshness::NoQuorum { .. }))
    }
}

/// `body` with a warning line above it when the answer may be old.
fn with_warning(warning: Option<String>, body: String, style: Style) -> String {
    match warning {
        Some(w) => format!("{}\n{body}", paint(style, Tone::Bad, &w)),
        None => body,
    }
}

/// Queue figures of the status screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    /// Lowest offset still stored.
    pub first_offset: u64,
    /// Offset the next packet gets.
    pub next_offset: u64,
    /// Packets stored.
    pub depth: u64,
}

/// A member's own answer to `GET /cluster/status`, or why there was none.
pub type MemberAnswer = Result<ClusterStatus, String>;

/// Builds the status screen's data from the answering node's view, each member's own
/// answer (in the order of `cluster.nodes`), the worker status and the failures.
pub fn status_view(
    cluster: &ClusterStatus,
    answers: &[(u64, MemberAnswer)],
    worker: &Answer<WorkerStatus>,
    failures: &[FailureRow],
) -> StatusView {
    let newest = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok().map(|s| s.last_log_index))
        .chain(std::iter::once(cluster.last_log_index))
        .max()
        .unwrap_or(0);
    let members = cluster
        .nodes
        .iter()
        .map(|(id, addr)| {
            let role = if cluster.voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            let answer = answers.iter().find(|(a, _)| a == id).map(|(_, a)| a);
            let (state, applied, error) = match answer {
                Some(Ok(s)) => (s.state.clone(), Some(s.applied_index), None),
                Some(Err(e)) => ("unreachable".to_string(), None, Some(e.clone())),
                None => ("unknown".to_string(), None, None),
            };
            MemberView {
                id: *id,
                role: role.to_string(),
                state,
                raft: addr.raft.clone(),
                admin: addr.admin.clone(),
                applied_index: applied,
                lag: applied.map(|a| newest.saturating_sub(a)),
                error,
            }
        })
        .collect();
    let mut open: Vec<FailureRow> = failures
        .iter()
        .filter(|f| f.state == FailureState::Open)
        .cloned()
        .collect();
    open.sort_by_key(|f| (f.at_us, f.id));
    StatusView {
        answered_by: cluster.node_id,
        leader_id: cluster.leader_id,
        term: cluster.term,
        members,
        queue: QueueView {
            first_offset: cluster.queue.first_offset,
            next_offset: cluster.queue.next_offset,
            depth: cluster.queue.depth,
        },
        worker: worker.data.clone(),
        open_failures: open,
        freshness: cluster.freshness,
    }
}

/// Host ids as `1,2,3`.
pub fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn state_tone(state: &str) -> Tone {
    match state {
        "Leader" => Tone::Good,
        "Follower" | "Learner" => Tone::Plain,
        "up" => Tone::Good,
        "suspect" | "Candidate" => Tone::Warn,
        "dead" | "unreachable" | "open" => Tone::Bad,
        "left" | "closed" | "unknown" => Tone::Dim,
        _ => Tone::Plain,
    }
}

/// `(answered by node 1, leader, applied index 42)`.
pub fn source_line<T>(a: &Answer<T>) -> String {
    format!(
        "(answered by node {}, {}, applied index {})",
        a.node_id,
        if a.is_leader { "leader" } else { "follower" },
        a.applied_index
    )
}

/// The status screen.
pub fn render_status<Tz: TimeZone>(v: &StatusView, now_us: u64, tz: &Tz, style: Style) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut out = v
        .freshness
        .and_then(|f| f.warning(v.answered_by))
        .map(|w| format!("{}\n", paint(style, Tone::Bad, &w)))
        .unwrap_or_default();
    let leader = match v.leader_id {
        Some(l) if !v.no_quorum() => paint(style, Tone::Good, &format!("node {l}")),
        Some(l) => paint(
            style,
            Tone::Bad,
            &format!("node {l}, NOT CONFIRMED (no quorum)"),
        ),
        None => paint(style, Tone::Bad, "NONE (no quorum?)"),
    };
    let reachable = v
        .members
        .iter()
        .filter(|m| m.state != "unreachable")
        .count();
    let _ = writeln!(
        out,
        "{}  leader {leader}, term {}, {reachable}/{} members answering",
        paint(style, Tone::Bold, "Cluster"),
        v.term,
        v.members.len()
    );
    let rows: Vec<Vec<Cell>> = v
        .members
        .iter()
        .map(|m| {
            let id = if Some(m.id) == v.leader_id {
                format!("{}*", m.id)
            } else {
                m.id.to_string()
            };
            let lag = match m.lag {
                Some(0) => Cell::toned("0", Tone::Good),
                Some(l) => Cell::toned(l.to_string(), Tone::Warn),
                None => Cell::plain("-"),
            };
            vec![
                Cell::plain(id),
                Cell::plain(m.role.clone()),
                Cell::toned(m.state.clone(), state_tone(&m.state)),
                Cell::plain(m.raft.clone()),
                Cell::plain(m.admin.clone()),
                Cell::plain(m.applied_index.map_or("-".into(), |a| a.to_string())),
                lag,
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ROLE", "STATE", "RAFT", "ADMIN", "APPLIED", "LAG"],
        &rows,
        style,
    ));
    for m in &v.members {
        if let Some(e) = &m.error {
            let _ = writeln!(
                out,
                "{}",
                paint(style, Tone::Dim, &format!("node {}: {e}", m.id))
            );
        }
    }
    let w = &v.worker;
    let backlog = if w.backlog == 0 {
        paint(style, Tone::Good, "0")
    } else {
        paint(style, Tone::Warn, &w.backlog.to_string())
    };
    let _ = writeln!(
        out,
        "\n{}    depth {}, offsets {}..{}; worker at {} (backlog {backlog})",
        paint(style, Tone::Bold, "Queue"),
        v.queue.depth,
        v.queue.first_offset,
        v.queue.next_offset,
        w.offset
    );
    let dead = if w.hosts_dead == 0 {
        paint(style, Tone::Good, "0 dead")
    } else {
        paint(style, Tone::Bad, &format!("{} dead", w.hosts_dead))
    };
    let agents = if w.hosts_agent_down == 0 {
        String::new()
    } else {
        format!(
            ", {}",
            paint(
                style,
                Tone::Bad,
                &format!("{} agent down", w.hosts_agent_down)
            )
        )
    };
    let _ = writeln!(
        out,
        "{}    {} up{agents}, {dead}, {} left",
        paint(style, Tone::Bold, "Hosts"),
        w.hosts_up,
        w.hosts_left
    );
    if v.open_failures.is_empty() {
        let _ = writeln!(out, "\n{}", paint(style, Tone::Good, "No open failures."));
    } else {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                style,
                Tone::Bad,
                &format!("Open failures: {}", v.open_failures.len())
            )
        );
        out.push_str(&failure_table(&v.open_failures, now_us, tz, style, false));
    }
    let _ = writeln!(
        out,
        "{}",
        paint(
            style,
            Tone::Dim,
            &format!(
                "(answered by node {}; {})",
                v.answered_by,
                super::render::date_time(now_us, tz)
            )
        )
    );
    out
}

/// The failures table; `with_state` adds the STATE and CLOSED columns.
pub fn failure_table<Tz: TimeZone>(
    rows: &[FailureRow],
    now_us: u64,
    tz: &Tz,
    style: Style,
    with_state: bool,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut headers = vec!["ID", "KIND", "SUBJECT", "HOSTS", "SINCE"];
    if with_state {
        headers.extend(["STATE", "CLOSED"]);
    }
    headers.extend(["ROOT CAUSE", "EVIDENCE"]);
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|f| {
            let tone = if f.state == FailureState::Open {
                Tone::Bad
            } else {
                Tone::Dim
            };
            let mut row = vec![
                Cell::plain(f.id.to_string()),
                Cell::toned(f.kind.as_str(), tone),
                Cell::plain(f.subject.clone()),
                Cell::plain(id_list(&f.hosts)),
                Cell::plain(when(f.at_us, now_us, tz)),
            ];
            if with_state {
                row.push(Cell::toned(f.state.as_str(), state_tone(f.state.as_str())));
                row.push(Cell::plain(
                    f.closed_us
                        .map_or("-".to_string(), |c| super::render::age(now_us, c)),
                ));
            }
            row.push(Cell::plain(f.summary.clone()));
            row.push(Cell::plain(evidence_brief(&f.evidence)));
            row
        })
        .collect();
    table(&headers, &cells, style)
}

/// `cmactl failures`.
pub fn render_failures<Tz: TimeZone>(
    a: &Answer<Vec<FailureRow>>,
    now_us: u64,
    tz: &Tz,
    style: Style,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let open = a
        .data
        .iter()
        .filter(|f| f.state == FailureState::Open)
        .count();
    let mut out = if a.data.is_empty() {
        "No failures recorded.\n".to_string()
    } else {
        failure_table(&a.data, now_us, tz, style, true)
    };
    let summary = if open == 0 {
        paint(style, Tone::Good, "0 open")
    } else {
        paint(style, Tone::Bad, &format!("{open} open"))
    };
    let _ = writeln!(
        out,
        "{summary}, {} closed {}",
        a.data.len() - open,
        paint(style, Tone::Dim, &source_line(a))
    );
    with_warning(a.stale_warning(), out, style)
}

/// `cmactl hosts`.
pub fn render_hosts<Tz: TimeZone>(
    a: &Answer<Vec<HostRow>>,
    now_us: u64,
    tz: &Tz,
    style: Style,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let rows: Vec<Vec<Cell>> = a
        .data
        .iter()
        .map(|h| {
            vec![
                Cell::plain(h.id.to_string()),
                Cell::plain(h.hostname.clone()),
                Cell::plain(h.addr.to_string()),
                Cell::plain(h.switch.clone().unwrap_or_else(|| "-".into())),
                Cell::toned(h.status.as_str(), state_tone(h.status.as_str())),
                Cell::plain(when(h.since_us, now_us, tz)),
                Cell::plain(id_list(&h.watchers)),
                Cell::plain(h.version.clone()),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID", "HOSTNAME", "ADDRESS", "SWITCH", "STATUS", "SINCE", "WATCHERS", "VERSION",
        ],
        &rows,
        style,
    );
    let _ = writeln!(out, "{}", paint(style, Tone::Dim, &source_line(a)));
    with_warning(a.stale_warning(), out, style)
}

/// `cmactl rings`.
pub fn render_rings(a: &Answer<Vec<RingRow>>, style: Style) -> String {
    let rows: Vec<Vec<Cell>> = a
        .data
        .iter()
        .map(|r| {
            let members: Vec<String> = r.members.iter().map(u64::to_string).collect();
            let ring = if members.len() > 1 {
                format!("{} -> {}", members.join(" -> "), members[0])
            } else {
                members.join("")
            };
            vec![
                Cell::plain(r.name.clone()),
                Cell::plain(r.kind.as_str()),
                Cell::plain(ring),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "KIND", "RING"], &rows, style);
    let _ = writeln!(out, "{}", paint(style, Tone::Dim, &source_line(a)));
    with_warning(a.stale_warning(), out, style)
}

/// `cmactl topology`: one row per switch (address, router, hosts with their sources),
/// then the routers, then the hosts of unknown switch.
pub fn render_topology(a: &Answer<TopologyView>, style: Style) -> String {
    let src = |s: Option<api::topology::Source>| s.map_or("-", |s| s.as_str());
    let rows: Vec<Vec<Cell>> = a
        .data
        .switches
        .iter()
        .map(|sw| {
            let hosts: Vec<String> = sw
                .hosts
                .iter()
                .map(|h| format!("{} ({})", h.host, h.source.as_str()))
                .collect();
            vec![
                Cell::plain(sw.name.clone()),
                Cell::plain(sw.address.map_or("-".to_string(), |a| {
                    format!("{a} ({})", src(sw.address_source))
                })),
                Cell::plain(sw.router.as_ref().map_or("-".to_string(), |r| {
                    format!("{r} ({})", src(sw.router_source))
                })),
                Cell::plain(hosts.join(", ")),
            ]
        })
        .collect();
    let mut out = table(&["SWITCH", "ADDRESS", "ROUTER", "HOSTS"], &rows, style);
    let rows: Vec<Vec<Cell>> = a
        .data
        .routers
        .iter()
        .map(|r| {
            vec![
                Cell::plain(r.name.clone()),
                Cell::plain(r.address.map_or("-".to_string(), |a| a.to_string())),
                Cell::plain(r.source.as_str()),
                Cell::plain(r.switches.join(", ")),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["ROUTER", "ADDRESS", "SOURCE", "SWITCHES"],
        &rows,
        style,
    ));
    if !a.data.unplaced.is_empty() {
        let hosts: Vec<String> = a.data.unplaced.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "\nhosts of unknown switch (flat ring): {}",
            hosts.join(", ")
        );
    }
    let _ = writeln!(out, "{}", paint(style, Tone::Dim, &source_line(a)));
    with_warning(a.stale_warning(), out, style)
}

/// One line of `cmactl events`.
pub fn render_event<Tz: TimeZone>(e: &Event, now_us: u64, tz: &Tz, style: Style) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let tone = if e.kind.starts_with("verdict.") {
        Tone::Warn
    } else if e.kind == "failure.closed" {
        Tone::Good
    } else {
        Tone::Plain
    };
    // Fixed widths: events stream with --follow, so columns cannot be measured first.
    let kind = format!("{:<18}", e.kind);
    format!(
        "{:>6}  {:<32}  {} {}",
        e.id,
        when(e.at_us, now_us, tz),
        paint(style, tone, &kind),
        e.summary
    )
}

/// What a live view shows while the cluster does not answer.
pub fn error_screen(message: &str, style: Style) -> String {
    format!("{}\n", paint(style, Tone::Bad, message))
}

/// `cmactl cluster status`.
pub fn render_cluster(s: &ClusterStatus, style: Style) -> String {
    let mut out = String::new();
    let leader = s
        .leader_id
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "node {} is {} in term {}, leader {leader}",
        s.node_id, s.state, s.term
    );
    let _ = writeln!(
        out,
        "log: last {} applied {} snapshot {} purged {}",
        s.last_log_index, s.applied_index, s.snapshot_index, s.purged_index
    );
    let _ = writeln!(
        out,
        "queue: offsets {}..{} depth {} consumers {}",
        s.queue.first_offset,
        s.queue.next_offset,
        s.queue.depth,
        s.queue.consumers.len()
    );
    let rows: Vec<Vec<Cell>> = s
        .nodes
        .iter()
        .map(|(id, addr)| {
            let role = if s.voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            let mark = if Some(*id) == s.leader_id { "*" } else { "" };
            vec![
                Cell::plain(format!("{id}{mark}")),
                Cell::plain(role),
                Cell::plain(addr.raft.clone()),
                Cell::plain(addr.admin.clone()),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "ROLE", "RAFT", "ADMIN"], &rows, style));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::cluster::{NodeAddr, StateSummary};
    use chrono::Utc;
    use std::collections::{BTreeMap, BTreeSet};

    const NOW: u64 = 1_796_145_793_000_000;

    fn cluster(node_id: u64, state: &str, applied: u64, last: u64) -> ClusterStatus {
        let nodes: BTreeMap<u64, NodeAddr> = (1..=3)
            .map(|i| {
                (
                    i,
                    NodeAddr {
                        raft: format!("127.0.0.{i}:7400"),
                        admin: format!("127.0.0.{i}:7480"),
                    },
                )
            })
            .collect();
        ClusterStatus {
            node_id,
            state: state.into(),
            term: 4,
            leader_id: Some(1),
            last_log_index: last,
            applied_index: applied,
            snapshot_index: 0,
            purged_index: 0,
            voters: BTreeSet::from([1, 2, 3]),
            learners: BTreeSet::new(),
            nodes,
            replication: BTreeMap::new(),
            queue: StateSummary {
                first_offset: 10,
                next_offset: 25,
                depth: 15,
                ..StateSummary::default()
            },
            snapshots_installed: 0,
            snapshots_built: 0,
            freshness: None,
        }
    }

    fn failure(id: u64, state: &str, at_us: u64) -> FailureRow {
        FailureRow {
            id,
            kind: api::views::FailureKind::Dead,
            subject: "5".into(),
            hosts: vec![5],
            state: serde_json::from_value(serde_json::json!(state)).unwrap(),
            at_us,
            closed_us: (state == "closed").then_some(at_us + 1_000_000),
            summary: "host 5 is dead".into(),
            evidence: serde_json::from_value(serde_json::json!([
                { "Report": { "about": 5, "at": 1, "kind": "Dead", "reporter": 6 } },
                { "Report": { "about": 5, "at": 2, "kind": "Dead", "reporter": 4 } },
                { "Probe": { "probe_id": 3, "from": 4, "target": { "Host": 5 }, "reachable": null } }
            ]))
            .unwrap(),
        }
    }

    fn worker() -> Answer<WorkerStatus> {
        Answer {
            node_id: 1,
            is_leader: true,
            leader_id: Some(1),
            applied_index: 100,
            freshness: None,
            data: WorkerStatus {
                offset: 25,
                queue_next: 25,
                backlog: 0,
                hosts_up: 6,
                hosts_dead: 1,
                hosts_left: 1,
                hosts_agent_down: 0,
                open_failures: 1,
            },
        }
    }

    #[test]
    fn event_lines_keep_their_columns_whatever_the_age() {
        let event = |id: u64, at_us: u64| Event {
            id,
            at_us,
            kind: "verdict.dead".into(),
            summary: "host 5 is dead".into(),
            data: serde_json::Value::Null,
        };
        let a = render_event(&event(9, NOW - 5_000_000), NOW, &Utc, Style::default());
        let b = render_event(&event(10, NOW - 15_000_000), NOW, &Utc, Style::default());
        assert_eq!(a.find("verdict.dead"), b.find("verdict.dead"), "{a}\n{b}");
        assert!(a.ends_with("host 5 is dead"));
    }

    #[test]
    fn evidence_reads_as_one_line() {
        let f = failure(1, "open", NOW);
        assert_eq!(
            evidence_brief(&f.evidence),
            "reported dead by 4,6; probe 4 -> host 5: no answer"
        );
        assert_eq!(evidence_brief(&[]), "");
    }

    #[test]
    fn status_view_computes_lag_and_unreachable_members() {
        let answers = vec![
            (1, Ok(cluster(1, "Leader", 100, 100))),
            (2, Ok(cluster(2, "Follower", 97, 100))),
            (3, Err("connection refused".to_string())),
        ];
        let failures = vec![failure(2, "open", NOW - 5_000_000), failure(1, "closed", 0)];
        let leader = cluster(1, "Leader", 100, 100);
        let v = status_view(&leader, &answers, &worker(), &failures);
        let lags: Vec<Option<u64>> = v.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, vec![Some(0), Some(3), None]);
        assert_eq!(v.members[2].state, "unreachable");
        assert_eq!(v.open_failures.len(), 1);
        assert_eq!(v.queue.depth, 15);

        let text = render_status(&v, NOW, &Utc, Style::default());
        assert!(
            text.contains("leader node 1, term 4, 2/3 members answering"),
            "{text}"
        );
        assert!(text.contains("3   voter  unreachable"), "{text}");
        assert!(text.contains("node 3: connection refused"), "{text}");
        assert!(text.contains("Queue    depth 15, offsets 10..25; worker at 25 (backlog 0)"));
        assert!(text.contains("Hosts    6 up, 1 dead, 1 left"));
        assert!(text.contains("Open failures: 1"));
        assert!(text.contains("2026-12-01 17:23:08 (5 s ago)"), "{text}");
        assert!(
            text.contains("host 5 is dead  reported dead by 4,6"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        // The JSON form carries the same fields.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["members"][1]["lag"], 3);
        assert_eq!(json["open_failures"][0]["id"], 2);
    }

    #[test]
    fn status_without_failures_says_so() {
        let c = cluster(1, "Leader", 100, 100);
        let answers = vec![(1, Ok(cluster(1, "Leader", 100, 100)))];
        let v = status_view(&c, &answers, &worker(), &[]);
        let text = render_status(&v, NOW, &Utc, Style::default());
        assert!(text.contains("No open failures."));
        // Members that were not asked are "unknown", not "unreachable".
        assert_eq!(v.members[1].state, "unknown");
    }

    #[test]
    fn topology_shows_each_fact_with_its_source() {
        use api::topology::{HostPlacementView, RouterView, Source, SwitchView, TopologyView};
        let a = Answer {
            node_id: 1,
            is_leader: true,
            leader_id: Some(1),
            applied_index: 9,
            freshness: None,
            data: TopologyView {
                switches: vec![SwitchView {
                    name: "lldp-sw1".into(),
                    address: Some("198.18.1.254".parse().unwrap()),
                    address_source: Some(Source::Lldp),
                    router: Some("198.18.1.1".into()),
                    router_source: Some(Source::Gateway),
                    hosts: vec![
                        HostPlacementView {
                            host: 11,
                            source: Source::Lldp,
                        },
                        HostPlacementView {
                            host: 12,
                            source: Source::Declared,
                        },
                    ],
                }],
                routers: vec![RouterView {
                    name: "198.18.1.1".into(),
                    address: Some("198.18.1.1".parse().unwrap()),
                    source: Source::Gateway,
                    switches: vec!["lldp-sw1".into()],
                }],
                unplaced: vec![7],
            },
        };
        let text = render_topology(&a, Style::default());
        assert!(text.contains("lldp-sw1"), "{text}");
        assert!(text.contains("198.18.1.254 (lldp)"), "{text}");
        assert!(text.contains("198.18.1.1 (gateway)"), "{text}");
        assert!(text.contains("11 (lldp), 12 (declared)"), "{text}");
        assert!(
            text.contains("hosts of unknown switch (flat ring): 7"),
            "{text}"
        );
    }

    #[test]
    fn failures_table_shows_ages_and_state() {
        let a = Answer {
            node_id: 2,
            is_leader: false,
            leader_id: Some(1),
            applied_index: 7,
            freshness: None,
            data: vec![
                failure(1, "closed", NOW - 120_000_000),
                failure(2, "open", NOW - 3_000_000),
            ],
        };
        let text = render_failures(&a, NOW, &Utc, Style::default());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID  KIND  SUBJECT  HOSTS  SINCE"),
            "{text}"
        );
        assert!(
            lines[1].contains("(2 min ago)  closed  1 min ago"),
            "{text}"
        );
        assert!(lines[2].contains("(3 s ago)    open    -"), "{text}");
        assert_eq!(
            lines[3],
            "1 open, 1 closed (answered by node 2, follower, applied index 7)"
        );
    }

    #[test]
    fn a_stale_answer_says_so_above_the_table() {
        let mut a = Answer {
            node_id: 2,
            is_leader: false,
            leader_id: Some(1),
            applied_index: 7,
            freshness: Some(Freshness::Follower {
                applied_index: 7,
                leader_id: 1,
                leader_commit: 9,
                heard_ms_ago: 120,
            }),
            data: vec![failure(2, "open", NOW - 3_000_000)],
        };
        let text = render_failures(&a, NOW, &Utc, Style::default());
        assert_eq!(
            text.lines().next(),
            Some(
                "stale: answered by follower 2 from its copy (applied index 7; leader 1 had \
                 committed 9, heard 0.1 s ago)"
            ),
            "{text}"
        );
        a.freshness = Some(Freshness::NoQuorum {
            applied_index: 7,
            leader_commit: Some(9),
            heard_ms_ago: Some(12_300),
        });
        let text = render_failures(&a, NOW, &Utc, Style::default());
        assert!(
            text.starts_with("NO QUORUM: node 2 reaches no quorum; its state is as of applied index 7, last commit index heard 9, leader last heard 12.3 s ago"),
            "{text}"
        );
        a.freshness = Some(Freshness::Unconfirmed { applied_index: 7 });
        let text = render_failures(&a, NOW, &Utc, Style::default());
        assert!(
            text.starts_with("unconfirmed: leader 2 could not confirm its state in time (busy, or still applying its log); applied index 7"),
            "{text}"
        );
        a.freshness = Some(Freshness::Current { applied_index: 7 });
        let text = render_failures(&a, NOW, &Utc, Style::default());
        assert!(text.starts_with("ID  KIND"), "{text}");
    }

    #[test]
    fn a_node_without_quorum_does_not_look_healthy_on_the_status_screen() {
        let mut c = cluster(2, "Follower", 40, 40);
        c.freshness = Some(Freshness::NoQuorum {
            applied_index: 40,
            leader_commit: Some(42),
            heard_ms_ago: Some(9_000),
        });
        let v = status_view(&c, &[], &worker(), &[]);
        assert!(v.no_quorum());
        let text = render_status(&v, NOW, &Utc, Style::default());
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("NO QUORUM: node 2"), "{text}");
        assert!(text.contains("NOT CONFIRMED (no quorum)"), "{text}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["freshness"]["kind"], "no_quorum");
    }
}

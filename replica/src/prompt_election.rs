//! Prompt elections: the follower best placed to win calls the election as soon as its
//! leader's lease has run out, instead of waiting for its randomised election timer.
//!
//! openraft 0.9 makes a voter refuse any vote while its leader's lease (as long as
//! `election_timeout_max`) runs, and a follower's own timer fires only a random election
//! timeout *after* the lease: 1.2-1.6 s after the last heartbeat with the defaults. Worse,
//! when the follower whose timer fires first has the shorter log, the other refuses it, the
//! two split their votes, and the cluster waits for further timeouts (measured: 2.6 s).
//!
//! So every voter runs [`run`]: once it has heard nothing from its leader for a whole lease,
//! it asks the other voters (a [`LeaseView`] each, over the node-to-node connection) and
//! [`decide`]s. It calls the election only if a quorum of voters (itself included) has also
//! heard nothing for a lease (their leases have run out, so they can grant), nobody answers
//! as a live leader or with a newer term, and its log is the greatest among them (ties: the
//! lowest id), so the others grant the vote at once. The rest wait; openraft's own timers
//! remain the fallback. A follower that was only starved of CPU gets an answer from the
//! live leader, or from a follower that still hears it, and does nothing: this path adds
//! no disruptive election.

use super::log_store::LastLogId;
pub use super::peer::LeaseView;
use super::peer::{NodeReply, NodeRequest, PeerConnection, PeerReply, PeerRequest};
use super::{NodeId, Raft};
use openraft::{ServerState, Vote};
use prometheus_client::metrics::counter::Counter;
use queue::rpc::CallError;
use queue::wire::WireError;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a probe (connect + answer) may take. A dead leader's port refuses at once; a
/// dead host costs this much before the decision.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// Pause between probe rounds while the leases of the others have not run out yet.
pub const PROBE_PAUSE: Duration = Duration::from_millis(20);
/// How often a leader (or a node without a committed vote) looks again.
const IDLE_PAUSE: Duration = Duration::from_millis(250);

/// What came of probing one voter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It answered.
    Answered(LeaseView),
    /// Its port refused or reset the connection: the process is not running.
    Unreachable,
    /// No answer in time on an open connection, or the connect timed out: it may be a
    /// dead host, or a live node too busy to answer.
    NoAnswer,
}

/// What a voter should do, by [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Call the election now.
    Elect,
    /// The lease has not run out here yet, or someone else should call it, or an election
    /// is under way.
    Wait(WaitReason),
}

/// Why a voter does not call the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// This node leads, follows no committed leader, or still hears its leader.
    LeaseRunning,
    /// A node answered as the live leader, or with a newer term.
    LeaderOrNewerTerm,
    /// The leader did not answer, but did not refuse either: it may only be busy. The
    /// election is left to openraft's timers.
    LeaderMaybeAlive,
    /// Fewer than a quorum of voters have stopped hearing the leader.
    NoQuorum,
    /// Another silent voter has a greater log (or an equal one and a lower id).
    OtherCandidate,
}

/// Decides whether voter `me` calls an election now. `probes` are the other voters'
/// answers; `lease` is the leader lease (`election_timeout_max`). Only a leader known not
/// to run (its port refuses) or known to have stepped down lets a prompt election go: a
/// leader that is merely slow to answer, or a dead host, is left to openraft's timers.
pub fn decide(
    me: NodeId,
    mine: &LeaseView,
    probes: &[(NodeId, Probe)],
    voters: &BTreeSet<NodeId>,
    lease: Duration,
) -> Decision {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let lease_over = |v: &LeaseView| v.silent_ms.is_some_and(|s| s >= lease_ms);
    if mine.is_leader || !mine.vote.is_committed() || !lease_over(mine) {
        return Decision::Wait(WaitReason::LeaseRunning);
    }
    let answers: Vec<(NodeId, LeaseView)> = probes
        .iter()
        .filter_map(|(id, p)| match p {
            Probe::Answered(v) => Some((*id, v.clone())),
            _ => None,
        })
        .collect();
    if answers
        .iter()
        .any(|(_, v)| v.is_leader || v.vote.leader_id().term > mine.vote.leader_id().term)
    {
        return Decision::Wait(WaitReason::LeaderOrNewerTerm);
    }
    let leader = mine.vote.leader_id().voted_for();
    let leader_gone = probes
        .iter()
        .any(|(id, p)| Some(*id) == leader && matches!(p, Probe::Unreachable | Probe::Answered(_)));
    if leader.is_some_and(|l| l != me) && !leader_gone {
        return Decision::Wait(WaitReason::LeaderMaybeAlive);
    }
    // Voters that would grant a vote now: their lease ran out too, and they have not voted
    // in a newer term (checked above).
    let silent: Vec<(NodeId, &LeaseView)> = std::iter::once((me, mine))
        .chain(
            answers
                .iter()
                .filter(|(id, v)| *id != me && voters.contains(id) && lease_over(v))
                .map(|(id, v)| (*id, v)),
        )
        .filter(|(id, _)| voters.contains(id))
        .collect();
    if silent.len() < voters.len() / 2 + 1 {
        return Decision::Wait(WaitReason::NoQuorum);
    }
    // The greatest log wins, as in a vote; the lowest id breaks ties.
    let best = silent
        .iter()
        .max_by(|(a_id, a), (b_id, b)| {
            a.last_log_id
                .cmp(&b.last_log_id)
                .then_with(|| b_id.cmp(a_id))
        })
        .map(|(id, _)| *id);
    if best == Some(me) {
        Decision::Elect
    } else {
        Decision::Wait(WaitReason::OtherCandidate)
    }
}

/// This node's own view, read from the Raft core, and the time its lease was renewed.
pub async fn local_view(raft: &Raft, last_log: &LastLogId) -> Option<(LeaseView, Option<Instant>)> {
    let (vote, utime, state) = raft
        .with_raft_state(|st| (*st.vote_ref(), st.vote_last_modified(), st.server_state))
        .await
        .ok()?;
    let view = LeaseView {
        vote,
        is_leader: state == ServerState::Leader,
        silent_ms: utime.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        last_log_id: last_log.get(),
    };
    Some((view, utime))
}

/// Probes one peer.
async fn probe(
    connections: &tokio::sync::Mutex<HashMap<NodeId, Arc<PeerConnection>>>,
    id: NodeId,
    addr: SocketAddr,
    secret: &[u8; 32],
) -> Probe {
    let work = async {
        let existing = connections
            .lock()
            .await
            .get(&id)
            .filter(|c| !c.is_closed())
            .cloned();
        let connection = match existing {
            Some(c) => c,
            None => match PeerConnection::open(addr, secret, PROBE_TIMEOUT).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    connections.lock().await.insert(id, c.clone());
                    c
                }
                Err(CallError::Wire(WireError::Io(e)))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Probe::Unreachable;
                }
                Err(_) => return Probe::NoAnswer,
            },
        };
        match connection
            .call(NodeRequest::Peer(PeerRequest::LeaseProbe), PROBE_TIMEOUT)
            .await
        {
            Ok(NodeReply::Peer(PeerReply::LeaseProbe(view))) => Probe::Answered(view),
            // The connection broke (reset, closed by the peer): the process went away.
            Err(CallError::Wire(_)) => Probe::Unreachable,
            _ => Probe::NoAnswer,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .unwrap_or(Probe::NoAnswer)
}

/// Runs the prompt election of node `me` until Raft stops. `elections` counts the
/// elections it called.
pub async fn run(
    raft: Raft,
    me: NodeId,
    last_log: LastLogId,
    secret: [u8; 32],
    lease: Duration,
    elections: Counter,
) {
    let connections = tokio::sync::Mutex::new(HashMap::new());
    // The vote an election was last called from: at most one call per silent term.
    let mut called_from: Option<Vote<NodeId>> = None;
    loop {
        let Some((mine, utime)) = local_view(&raft, &last_log).await else {
            return; // Raft stopped.
        };
        let renewed = match utime {
            Some(t) if !mine.is_leader && mine.vote.is_committed() => t,
            _ => {
                tokio::time::sleep(IDLE_PAUSE).await;
                continue;
            }
        };
        if renewed.elapsed() < lease {
            // Heartbeats move the renewal on; this wakes about once a lease.
            tokio::time::sleep_until(renewed + lease).await;
            continue;
        }
        if called_from == Some(mine.vote) {
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        }
        let (voters, peers) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let peers: Vec<(NodeId, SocketAddr)> = voters
                .iter()
                .filter(|id| **id != me)
                .filter_map(|id| Some((*id, membership.get_node(id)?.raft_addr()?)))
                .collect();
            (voters, peers)
        };
        if !voters.contains(&me) {
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        }
        let probes: Vec<(NodeId, Probe)> = futures::future::join_all(
            peers
                .iter()
                .map(|(id, addr)| async { (*id, probe(&connections, *id, *addr, &secret).await) }),
        )
        .await;
        // Decide on a fresh view of our own: the probes took time.
        let Some((mine, _)) = local_view(&raft, &last_log).await else {
            return;
        };
        match decide(me, &mine, &probes, &voters, lease) {
            Decision::Elect => {
                tracing::info!(
                    vote = %mine.vote,
                    silent_ms = ?mine.silent_ms,
                    "leader silent for a whole lease; calling the election (prompt election)"
                );
                called_from = Some(mine.vote);
                elections.inc();
                if raft.trigger().elect().await.is_err() {
                    return;
                }
            }
            Decision::Wait(reason) => {
                tracing::debug!(?reason, "prompt election: waiting");
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    const LEASE: Duration = Duration::from_millis(800);

    /// A follower of leader 1 in term 5, silent for `silent_ms`, with last log (5, index).
    fn follower(silent_ms: u64, index: u64) -> LeaseView {
        LeaseView {
            vote: Vote::new_committed(5, 1),
            is_leader: false,
            silent_ms: Some(silent_ms),
            last_log_id: Some(LogId::new(CommittedLeaderId::new(5, 1), index)),
        }
    }

    fn voters(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// Probes: the dead leader 1 refuses, the others answer with `views`.
    fn probes(views: &[(NodeId, LeaseView)]) -> Vec<(NodeId, Probe)> {
        std::iter::once((1, Probe::Unreachable))
            .chain(
                views
                    .iter()
                    .map(|(id, v)| (*id, Probe::Answered(v.clone()))),
            )
            .collect()
    }

    /// What followers 2 and 3 of the dead leader 1 each decide, seeing each other.
    fn both_decide(two: LeaseView, three: LeaseView) -> (Decision, Decision) {
        let v = voters(&[1, 2, 3]);
        (
            decide(2, &two, &probes(&[(3, three.clone())]), &v, LEASE),
            decide(3, &three, &probes(&[(2, two)]), &v, LEASE),
        )
    }

    #[test]
    fn the_follower_with_the_greater_log_calls_it_and_the_other_waits() {
        assert_eq!(
            both_decide(follower(850, 100), follower(830, 90)),
            (Decision::Elect, Decision::Wait(WaitReason::OtherCandidate))
        );
    }

    #[test]
    fn equal_logs_go_to_the_lowest_id() {
        assert_eq!(
            both_decide(follower(900, 100), follower(900, 100)),
            (Decision::Elect, Decision::Wait(WaitReason::OtherCandidate))
        );
    }

    #[test]
    fn nothing_happens_while_this_node_still_hears_its_leader() {
        let v = voters(&[1, 2, 3]);
        assert_eq!(
            decide(
                2,
                &follower(799, 100),
                &probes(&[(3, follower(900, 1))]),
                &v,
                LEASE
            ),
            Decision::Wait(WaitReason::LeaseRunning)
        );
        let mut leader = follower(900, 100);
        leader.is_leader = true;
        assert_eq!(
            decide(1, &leader, &[], &v, LEASE),
            Decision::Wait(WaitReason::LeaseRunning)
        );
        let mut candidate = follower(900, 100);
        candidate.vote = Vote::new(6, 2);
        assert_eq!(
            decide(2, &candidate, &[], &v, LEASE),
            Decision::Wait(WaitReason::LeaseRunning)
        );
    }

    #[test]
    fn a_starved_follower_does_not_disrupt_a_live_leader() {
        let v = voters(&[1, 2, 3]);
        // The leader itself answers.
        let mut leader = follower(0, 100);
        leader.is_leader = true;
        let answered = vec![(1, Probe::Answered(leader)), (3, Probe::NoAnswer)];
        assert_eq!(
            decide(2, &follower(2000, 100), &answered, &v, LEASE),
            Decision::Wait(WaitReason::LeaderOrNewerTerm)
        );
        // The other follower still hears it.
        assert_eq!(
            decide(
                2,
                &follower(2000, 100),
                &probes(&[(3, follower(50, 100))]),
                &v,
                LEASE
            ),
            Decision::Wait(WaitReason::NoQuorum)
        );
    }

    #[test]
    fn a_leader_that_is_only_slow_to_answer_is_left_to_the_timers() {
        let v = voters(&[1, 2, 3]);
        let busy = vec![
            (1, Probe::NoAnswer),
            (3, Probe::Answered(follower(900, 90))),
        ];
        assert_eq!(
            decide(2, &follower(900, 100), &busy, &v, LEASE),
            Decision::Wait(WaitReason::LeaderMaybeAlive)
        );
    }

    #[test]
    fn no_call_without_a_quorum_of_silent_voters_or_during_a_newer_term() {
        // Five voters: only two silent ones answered (two others did not).
        let v = voters(&[1, 2, 3, 4, 5]);
        assert_eq!(
            decide(
                2,
                &follower(900, 100),
                &probes(&[(3, follower(900, 90))]),
                &v,
                LEASE
            ),
            Decision::Wait(WaitReason::NoQuorum)
        );
        assert_eq!(
            decide(
                2,
                &follower(900, 100),
                &probes(&[(3, follower(900, 90)), (4, follower(900, 80))]),
                &v,
                LEASE
            ),
            Decision::Elect
        );
        // Answers from non-voters (learners) do not count.
        assert_eq!(
            decide(
                2,
                &follower(900, 100),
                &probes(&[(3, follower(900, 90)), (9, follower(900, 80))]),
                &v,
                LEASE
            ),
            Decision::Wait(WaitReason::NoQuorum)
        );
        let mut newer = follower(900, 90);
        newer.vote = Vote::new(6, 3);
        assert_eq!(
            decide(
                2,
                &follower(900, 100),
                &probes(&[(3, newer)]),
                &voters(&[1, 2, 3]),
                LEASE
            ),
            Decision::Wait(WaitReason::LeaderOrNewerTerm)
        );
    }

    #[test]
    fn a_log_from_a_newer_term_beats_a_longer_older_one() {
        let v = voters(&[1, 2, 3]);
        let mut newer = follower(900, 50);
        newer.last_log_id = Some(LogId::new(CommittedLeaderId::new(5, 1), 50));
        let mut older = follower(900, 100);
        older.last_log_id = Some(LogId::new(CommittedLeaderId::new(4, 2), 100));
        assert_eq!(
            decide(3, &newer, &probes(&[(2, older)]), &v, LEASE),
            Decision::Elect
        );
    }
}

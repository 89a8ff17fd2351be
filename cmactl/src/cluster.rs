//! `cmactl cluster ...`: bootstrap, membership changes and status.

use super::api::Api;
use super::monitor::Output;
use anyhow::{bail, Context};
use api::cluster::{ClusterStatus, IdRequest, InitRequest, MemberSpec, StateDigest};
use clap::Subcommand;

/// `cmactl cluster` subcommands.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Bootstrap a new cluster on the first `--api` node.
    Init {
        /// Initial voter `ID=RAFT_ADDR,ADMIN_ADDR` (repeat); none: the node alone.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add a node as a learner and wait until it has caught up.
    AddLearner {
        /// Node id.
        #[arg(long)]
        id: u64,
        /// Its Raft/client address (ip:port).
        #[arg(long)]
        raft: String,
        /// Its admin address (ip:port).
        #[arg(long)]
        admin: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Node id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Node id.
        #[arg(long)]
        id: u64,
    },
    /// Show the answering node's view of the cluster.
    Status,
    /// A digest of the answering node's replicated state at its applied index: nodes at
    /// the same applied index must show the same digest.
    Digest,
}

fn parse_member(text: &str) -> anyhow::Result<MemberSpec> {
    let (id, addrs) = text
        .split_once('=')
        .with_context(|| format!("member {text:?}: expected ID=RAFT,ADMIN"))?;
    let (raft, admin) = addrs
        .split_once(',')
        .with_context(|| format!("member {text:?}: expected ID=RAFT,ADMIN"))?;
    Ok(MemberSpec {
        id: id
            .trim()
            .parse()
            .with_context(|| format!("member {text:?}: bad id"))?,
        raft: raft.trim().to_string(),
        admin: admin.trim().to_string(),
    })
}

/// Runs one `cluster` subcommand.
pub async fn run(api: &Api, command: &ClusterCommand, out: Output) -> anyhow::Result<()> {
    let json = out.json;
    let answer: serde_json::Value = match command {
        ClusterCommand::Init { members } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            api.post("/cluster/init", &InitRequest { members }).await?
        }
        ClusterCommand::AddLearner { id, raft, admin } => {
            let spec = MemberSpec {
                id: *id,
                raft: raft.clone(),
                admin: admin.clone(),
            };
            api.post("/cluster/add-learner", &spec).await?
        }
        ClusterCommand::Promote { id } => {
            api.post("/cluster/promote", &IdRequest { id: *id }).await?
        }
        ClusterCommand::Remove { id } => {
            api.post("/cluster/remove", &IdRequest { id: *id }).await?
        }
        ClusterCommand::Digest => {
            let d: StateDigest = api.get("/cluster/digest").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "node {} at applied index {}: {}",
                    d.node_id, d.applied_index, d.digest
                );
            }
            return Ok(());
        }
        ClusterCommand::Status => {
            let status: ClusterStatus = api.get("/cluster/status").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", super::views::render_cluster(&status, out.style));
            }
            return Ok(());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer.is_object() {
        println!("ok");
    } else {
        bail!("unexpected answer {answer}");
    }
    Ok(())
}

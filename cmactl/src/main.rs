//! `cmactl`: operator CLI for the CMA admin API. Each subcommand group lives in its own
//! module; `main` only parses and dispatches. Formatting is pure ([`render`], [`views`]);
//! [`monitor`] does the I/O.

mod api;
mod cluster;
mod monitor;
mod render;
mod views;

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit code: success (and, for `status` and `watch`, no open failure).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (a node refused the request, a probe got no answer, bad input).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: bad command line (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no node given with `--api` answered.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the cluster answered and at least one failure is open (`status` and
/// `watch`, the health checks; `failures` lists and exits 0).
pub const EXIT_OPEN_FAILURES: u8 = 4;
/// Exit code: the node that answered reaches no quorum, so what it shows may be old
/// (`status` and `watch`).
pub const EXIT_NO_QUORUM: u8 = 5;

const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success (status, watch: and no failure is open)
  1  error: a node refused the request, a probe got no answer, bad input
  2  bad command line
  3  no admin API node answered (unreachable)
  4  status, watch: the cluster answered and at least one failure is open
  5  status, watch: the node that answered reaches no quorum (its state may be old)

Every answer says how fresh it is: a follower's copy or a node without quorum is
flagged by a line above the table (with --json: a line {\"stale\": ...} on stderr; the
status screen's JSON has a \"freshness\" field). With several --api nodes, cmactl takes
the leader's current answer when one comes.

Colours are used only when standard output is a terminal and NO_COLOR is not set.
Times are shown in the local time zone (TZ) with their age; --json prints the same
fields with times in microseconds since the Unix epoch.";

/// Ringwatch CMA control: cluster status, hosts, rings, failures and events from the
/// admin API of any CMA node.
#[derive(Parser)]
#[command(name = "cmactl", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Admin API base URL of a CMA node; repeat for several (the first that answers is
    /// used, and leader redirects are followed).
    #[arg(
        long = "api",
        env = "CMACTL_API",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7480",
        global = true
    )]
    pub api: Vec<String>,
    /// Bearer token for nodes that require one.
    #[arg(long, env = "CMACTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables (the same fields; times in µs since the Unix epoch).
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for each HTTP request.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,
    #[command(subcommand)]
    command: Command,
}

/// Live mode of `status` and `failures`.
#[derive(Args, Clone, Copy, Debug)]
pub struct WatchArgs {
    /// Keep running and redraw whenever the answer changes (Ctrl-C quits).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Seconds between refreshes in live mode (1-60).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub interval: u64,
    /// Stop live mode after this many refreshes.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// One screen: members and leader, lag, queue depth, hosts, open failures and their
    /// root cause.
    Status {
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// The status screen, redrawn whenever it changes (like `status --watch`).
    Watch {
        /// Seconds between refreshes (1-60).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
        interval: u64,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Monitored hosts and their state.
    Hosts,
    /// Heartbeat rings (each member watched by its neighbours).
    Rings,
    /// Switches, routers and their hosts, with where each fact came from (declared,
    /// lldp, gateway, subnet).
    Topology,
    /// Verdicts: open failures and recent closed ones, with their evidence.
    Failures {
        /// Include every closed failure.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Probe a host's nanoprobe now (authenticated UDP echo from the answering node).
    Probe {
        /// Host id.
        host: u64,
        /// Timeout in ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Events (verdicts and state changes).
    Events {
        /// Only events with a larger id.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
    },
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per subcommand into a directory (for
    /// packaging).
    #[command(hide = true)]
    Man {
        /// Write cmactl.1 and cmactl-<subcommand>.1 here instead of printing cmactl.1.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// What a successful command found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Nothing to report.
    Ok,
    /// At least one failure is open.
    OpenFailures,
    /// The answering node reaches no quorum.
    NoQuorum,
}

fn generate(command: &Command) -> Option<anyhow::Result<()>> {
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "cmactl",
                &mut std::io::stdout(),
            );
            Some(Ok(()))
        }
        Command::Man { out_dir } => Some(match out_dir {
            Some(dir) => clap_mangen::generate_to(Cli::command(), dir).map_err(Into::into),
            None => clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(Into::into),
        }),
        _ => None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(result) = generate(&cli.command) {
        return match result {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                eprintln!("cmactl: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        };
    }
    let api = match api::Api::new(&cli) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("cmactl: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let out = monitor::Output {
        json: cli.json,
        style: render::Style::decide(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
        terminal: std::io::stdout().is_terminal(),
    };
    let ok = |r: anyhow::Result<()>| r.map(|()| Health::Ok);
    let result = match &cli.command {
        Command::Cluster(c) => ok(cluster::run(&api, c, out).await),
        Command::Status { watch } => monitor::status(&api, *watch, out).await,
        Command::Watch { interval, count } => {
            let watch = WatchArgs {
                watch: true,
                interval: *interval,
                count: *count,
            };
            monitor::status(&api, watch, out).await
        }
        Command::Hosts => ok(monitor::hosts(&api, out).await),
        Command::Rings => ok(monitor::rings(&api, out).await),
        Command::Topology => ok(monitor::topology(&api, out).await),
        Command::Failures { all, watch } => monitor::failures(&api, *all, *watch, out).await,
        Command::Probe { host, timeout_ms } => {
            ok(monitor::probe(&api, *host, *timeout_ms, out).await)
        }
        Command::Events { since, follow } => ok(monitor::events(&api, *since, *follow, out).await),
        Command::Completions { .. } | Command::Man { .. } => Ok(Health::Ok),
    };
    match result {
        Ok(Health::Ok) => ExitCode::from(EXIT_OK),
        Ok(Health::OpenFailures) => ExitCode::from(EXIT_OPEN_FAILURES),
        Ok(Health::NoQuorum) => ExitCode::from(EXIT_NO_QUORUM),
        Err(e) => {
            eprintln!("cmactl: {e:#}");
            if e.downcast_ref::<api::Unreachable>().is_some() {
                ExitCode::from(EXIT_UNREACHABLE)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_page_and_completions_are_generated() {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH cmactl 1"));
        assert!(page.contains("Ringwatch CMA control"), "{page}");
        assert!(page.contains("no admin API node answered"));
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "cmactl",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("failures") && bash.contains("--watch"));
    }
}

//! Misconfigurations that would leave a daemon open are refused at start, with the real
//! binaries: secret files other users can read (cma, packet-reader, nanoprobe), an admin
//! API on a non-loopback address without a token. And the admin API answers 4xx to
//! membership changes that make no sense.

use integration::cluster::{Cluster, CmaCluster, TEST_RAFT};
use integration::procs::{binary, write_secret};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args` for at most 20 s and returns its output; a daemon that does not
/// exit by then started although it should not have.
fn run_bounded(program: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{} did not exit: it started with a configuration it must refuse\n{}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited successfully: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn daemons_refuse_secret_files_other_users_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let secret = d.join("cluster.secret");
    write_secret(&secret, &"5a".repeat(32)).expect("secret");
    let keys = d.join("keys.toml");
    proto::KeyRing::write_new_key_file(&keys, proto::KeyId(1)).expect("keys");
    let token = d.join("admin.token");
    write_secret(&token, "t0ken").expect("token");
    let cma_config = d.join("cma.toml");
    std::fs::write(
        &cma_config,
        format!(
            "node_id = 1\nlisten = \"127.67.0.1:7400\"\nadmin_listen = \"127.67.0.1:7480\"\n\
             admin_token_file = \"{}\"\ndata_dir = \"{}\"\ncluster_secret_file = \"{}\"\n",
            token.display(),
            d.join("data").display(),
            secret.display()
        ),
    )
    .expect("config");
    let reader_config = d.join("reader.toml");
    std::fs::write(
        &reader_config,
        format!(
            "host_id = 900001\nlisten = \"127.67.1.1:7300\"\nkey_file = \"{}\"\n\
             cma_nodes = [\"127.67.0.1:7400\"]\ncluster_secret_file = \"{}\"\n",
            keys.display(),
            secret.display()
        ),
    )
    .expect("reader config");
    let cma = binary("cma");
    let reader = binary("packet-reader");
    let nanoprobe = binary("nanoprobe");
    let secret_s = secret.display().to_string();
    let keys_s = keys.display().to_string();
    let token_s = token.display().to_string();
    let cma_args = ["--config", cma_config.to_str().expect("utf-8")];
    let reader_args = ["--config", reader_config.to_str().expect("utf-8")];
    let probe_args = [
        "--host-id",
        "5",
        "--bind",
        "127.67.2.1:7200",
        "--packet-reader",
        "127.67.1.1:7300",
        "--key-file",
        &keys_s,
    ];

    for mode in [0o644, 0o604, 0o660] {
        chmod(&secret, mode);
        let m = format!("{mode:04o}");
        assert_refused(&run_bounded(&cma, &cma_args), &[&secret_s, &m, "0640"]);
        assert_refused(
            &run_bounded(&reader, &reader_args),
            &[&secret_s, &m, "0640"],
        );
    }
    chmod(&secret, 0o600);

    chmod(&token, 0o644);
    assert_refused(&run_bounded(&cma, &cma_args), &[&token_s, "0644", "0640"]);
    chmod(&token, 0o640);

    chmod(&keys, 0o644);
    assert_refused(
        &run_bounded(&reader, &reader_args),
        &[&keys_s, "0644", "0640"],
    );
    assert_refused(
        &run_bounded(&nanoprobe, &probe_args),
        &[&keys_s, "0644", "0640"],
    );
}

#[test]
fn cma_refuses_an_open_admin_bind_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cluster.secret");
    write_secret(&secret, &"5a".repeat(32)).expect("secret");
    let config = dir.path().join("cma.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"127.67.0.2:7400\"\nadmin_listen = \"0.0.0.0:7481\"\n\
             data_dir = \"{}\"\ncluster_secret_file = \"{}\"\n",
            dir.path().join("data").display(),
            secret.display()
        ),
    )
    .expect("config");
    let out = run_bounded(
        &binary("cma"),
        &["--config", config.to_str().expect("utf-8")],
    );
    assert_refused(&out, &["admin_token_file", "0.0.0.0:7481"]);
}

/// One HTTP/1.1 request over a fresh connection; returns the status code.
fn http_status(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    http_status_for(addr, &addr.to_string(), method, path, body)
}

/// [`http_status`] with the given `Host` header.
fn http_status_for(
    addr: std::net::SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: &str,
) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn admin_api_answers_4xx_to_nonsense_and_bounds_bodies() {
    let mut cluster = Cluster::new(68, 1, TEST_RAFT);
    cluster.start(1);
    cluster
        .cmactl(1, &["cluster", "init"])
        .expect("cluster init");
    cluster.wait_leader(Duration::from_secs(30));
    let admin = cluster.node(1).admin;
    assert_eq!(
        http_status(admin, "POST", "/cluster/remove", r#"{"id":42}"#),
        404
    );
    assert_eq!(
        http_status(admin, "POST", "/cluster/promote", r#"{"id":42}"#),
        404
    );
    assert_eq!(
        http_status(admin, "POST", "/cluster/promote", r#"{"id":1}"#),
        409
    );
    assert_eq!(
        http_status(admin, "POST", "/cluster/remove", "not json"),
        400
    );
    let big = format!(r#"{{"id":1,"pad":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(http_status(admin, "POST", "/cluster/remove", &big), 413);
    // cmactl reports the refusal and exits non-zero.
    let err = cluster
        .cmactl(1, &["cluster", "remove", "--id", "42"])
        .expect_err("removing a non-member must fail");
    assert!(err.contains("not a member"), "{err}");
    // Still the only voter.
    let status = cluster.status(1).expect("status");
    assert_eq!(status["voters"], serde_json::json!([1]));
    // Without a token (loopback only), a request for another host name is a page that
    // rebound a DNS name to this address: refused, counted. The console's page itself
    // needs no token; its live stream goes through the same checks as the API.
    for path in ["/v1/status", "/console/live", "/cluster/status"] {
        assert_eq!(
            http_status_for(admin, "rebound.example:7480", "GET", path, ""),
            421,
            "{path}"
        );
    }
    assert_eq!(
        http_status_for(admin, "localhost:7480", "GET", "/console/", ""),
        200
    );
    assert_eq!(http_status(admin, "GET", "/console/console.js", ""), 200);
    let metrics = integration::reader::scrape(admin).expect("metrics");
    for refusal in [
        "cma_admin_refused_total{reason=\"body_too_large\"} 1",
        "cma_admin_refused_total{reason=\"host_not_loopback\"} 3",
    ] {
        assert!(metrics.contains(refusal), "{refusal} in {metrics}");
    }
}

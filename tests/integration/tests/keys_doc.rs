//! The key files made exactly as the packaged KEYS.md says (its commands run in a scratch
//! directory instead of /etc/ringwatch, without the `chown` to a group this machine may
//! not have) are accepted by the loaders the daemons use.

use integration::procs::binary;
use std::process::Command;

#[test]
fn the_commands_of_keys_md_make_files_the_daemons_accept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../systemd/etc/ringwatch/KEYS.md"),
    )
    .expect("KEYS.md");
    let etc = dir.path().display().to_string();
    // The indented lines are the commands; `nanoprobe` is the one built here.
    let nanoprobe = binary("nanoprobe").display().to_string();
    let commands: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with("chown "))
        .map(|l| {
            l.replace("/etc/ringwatch", &etc).replacen(
                "nanoprobe keygen",
                &format!("{nanoprobe} keygen"),
                1,
            )
        })
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    for command in &commands {
        let out = Command::new("sh")
            .args(["-ec", command])
            .output()
            .expect("sh");
        assert!(out.status.success(), "`{command}`: {out:?}");
    }
    let keys = proto::KeyRing::load(&dir.path().join("keys.toml")).expect("keys.toml loads");
    assert_eq!(keys.primary().0, proto::KeyId(1));
    queue::load_cluster_secret(&dir.path().join("cluster.secret")).expect("cluster.secret loads");
    let token = proto::read_secret_file(&dir.path().join("admin.token")).expect("admin.token");
    assert_eq!(token.trim().len(), 64, "{token:?}");
    assert!(token.trim().chars().all(|c| c.is_ascii_hexdigit()));
}

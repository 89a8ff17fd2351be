//! The lab harness itself: the topology forwards as built (management addresses answer,
//! routers route between switches), faults take effect, and nothing is left behind, also
//! when an earlier run was killed before it could clean up.

use integration::lab::{
    ip, namespaces_with_prefix as lab_namespaces, Lab, RouterSpec, SwitchSpec, Topology,
};
use integration::require_lab;

/// One ICMP echo from namespace `ns` to `addr`, 1 s timeout.
fn ping(topo: &Topology, ns: &str, addr: &str) -> bool {
    topo.lab
        .exec(ns, "ping", &["-c", "1", "-W", "1", addr])
        .is_ok_and(|o| o.status.success())
}

/// Whether `addr` answers from `ns` within 10 s: links that were just created or set up
/// again take a moment (carrier, neighbour discovery) on a loaded machine.
fn reaches(topo: &Topology, ns: &str, addr: &str) -> bool {
    integration::procs::wait_until(std::time::Duration::from_secs(10), || ping(topo, ns, addr))
}

#[test]
fn topology_forwards_faults_bite_and_cleanup_is_complete() {
    require_lab!();
    // A leftover of a killed earlier run: removed when the lab starts.
    ip(&["netns", "add", "rwlth-leftover"]).expect("leftover namespace");
    let topo = Topology::build(
        "th",
        &[
            RouterSpec {
                name: "r1".into(),
                switches: vec![SwitchSpec {
                    name: "sw1".into(),
                    hosts: vec![11, 12],
                }],
            },
            RouterSpec {
                name: "r2".into(),
                switches: vec![SwitchSpec {
                    name: "sw2".into(),
                    hosts: vec![21],
                }],
            },
        ],
    )
    .unwrap_or_else(|e| panic!("building the lab: {e}"));
    assert!(!lab_namespaces("rwlth-").contains(&"rwlth-leftover".to_string()));
    let h11 = topo.hosts[&11].ns.clone();
    let h21 = topo.hosts[&21].ns.clone();
    let h12_addr = topo.hosts[&12].addr.to_string();
    let h21_addr = topo.hosts[&21].addr.to_string();
    // Same switch, the switch's management address, across both routers, the CMA
    // segment.
    assert!(reaches(&topo, &h11, &h12_addr));
    assert!(reaches(&topo, &h11, "198.18.1.254"));
    assert!(reaches(&topo, &h11, &h21_addr));
    assert!(
        reaches(&topo, &h21, "198.18.0.1"),
        "router r1's core address from behind r2"
    );
    assert!(reaches(&topo, &topo.cma_ns, &h21_addr));
    // A cut link isolates one host only.
    topo.set_host_link(12, false).expect("cut");
    assert!(!ping(&topo, &h11, &h12_addr));
    assert!(reaches(&topo, &h11, "198.18.1.254"));
    topo.set_host_link(12, true).expect("restore");
    assert!(reaches(&topo, &h11, &h12_addr), "link 12 never came back");
    // A switch down: its management address is silent too.
    topo.set_switch("sw1", false).expect("switch down");
    assert!(!ping(&topo, &h21, "198.18.1.254"));
    assert!(!ping(&topo, &h21, "198.18.1.10"));
    topo.set_switch("sw1", true).expect("switch up");
    // A router down: its core address and everything behind it are gone; the rest works.
    topo.set_router("r1", false).expect("router down");
    assert!(!ping(&topo, &h21, "198.18.0.1"));
    assert!(!ping(&topo, &topo.cma_ns, "198.18.1.10"));
    assert!(reaches(&topo, &topo.cma_ns, &h21_addr));
    drop(topo);
    assert!(
        lab_namespaces("rwlth-").is_empty(),
        "left behind: {:?}",
        lab_namespaces("rwlth-")
    );
}

#[test]
fn a_panicking_test_still_removes_its_lab() {
    require_lab!();
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::new("tp");
        lab.add_ns("a").expect("namespace");
        lab.add_ns("b").expect("namespace");
        panic!("scenario failed");
    });
    assert!(result.is_err());
    assert!(lab_namespaces("rwltp-").is_empty());
}

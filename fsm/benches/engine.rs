//! Events per second through the fsm for 10,000 hosts (target: over 1,000,000 on one core).
//!
//! Run: `cargo bench -p fsm --bench engine`.
//! Workload: 250 switches of 40 hosts, 25 routers. A stream mixing late heartbeats,
//! corroborated deaths and recoveries, single reports that go to probe investigations
//! (answered inline; answers count as events), false alarms and ticks every 1,000 events.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fsm::{Action, Engine, Event, HostFacts, RouterId, SwitchId};
use proto::HostId;

const HOSTS: u64 = 10_000;
const PER_SWITCH: u64 = 40;
const EVENTS: u64 = 100_000;

fn engine() -> Engine {
    let mut e = Engine::default();
    for n in 0..HOSTS {
        let sw = n / PER_SWITCH;
        e.handle(Event::HostFact {
            host: HostId(n),
            facts: HostFacts {
                switch: Some(SwitchId(format!("sw{sw}"))),
                hb_interval_us: 0,
            },
        });
    }
    for sw in 0..HOSTS / PER_SWITCH {
        e.handle(Event::SwitchFact {
            switch: SwitchId(format!("sw{sw}")),
            router: RouterId(format!("r{}", sw / 10)),
        });
    }
    e
}

/// Ring neighbours within the host's switch.
fn watchers(h: u64) -> (HostId, HostId) {
    let base = h - h % PER_SWITCH;
    let prev = base + (h - base + PER_SWITCH - 1) % PER_SWITCH;
    let next = base + (h - base + 1) % PER_SWITCH;
    (HostId(prev), HostId(next))
}

/// Feeds `EVENTS` events; returns how many actions came out (so nothing is optimised away).
fn drive(e: &mut Engine) -> usize {
    let mut fed = 0u64;
    let mut actions = 0usize;
    let mut now = 1_000_000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut pending: Vec<Event> = Vec::new();
    while fed < EVENTS {
        // xorshift: deterministic host choice without a rand dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let host = x % HOSTS;
        let (a, b) = watchers(host);
        let peer = HostId(host);
        now += 100;
        let batch: Vec<Event> = match x % 10 {
            0..=4 => vec![Event::HbLate {
                at: now,
                reporter: a,
                peer,
            }],
            5..=6 => vec![
                Event::HbDead {
                    at: now,
                    reporter: a,
                    peer,
                },
                Event::HbDead {
                    at: now,
                    reporter: b,
                    peer,
                },
                Event::HbBackAlive {
                    at: now + 50,
                    reporter: a,
                    peer,
                },
            ],
            7 => vec![Event::HbDead {
                at: now,
                reporter: a,
                peer,
            }],
            8 => vec![
                Event::HbDead {
                    at: now,
                    reporter: a,
                    peer,
                },
                Event::HbBackAlive {
                    at: now + 50,
                    reporter: a,
                    peer,
                },
            ],
            _ => vec![Event::HbBackAlive {
                at: now,
                reporter: b,
                peer,
            }],
        };
        pending.extend(batch);
        if fed.is_multiple_of(1000) {
            pending.push(Event::Tick { now });
        }
        for ev in pending.drain(..) {
            fed += 1;
            for action in e.handle(ev) {
                actions += 1;
                if let Action::RequestProbe { probe_id, from, .. } = action {
                    // Answer inline: hosts probed from their own switch answer.
                    fed += 1;
                    let reachable = from.0 % 3 != 0;
                    actions += e
                        .handle(Event::ProbeResult {
                            at: now,
                            probe_id,
                            reachable,
                        })
                        .len();
                }
            }
        }
    }
    actions
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fsm");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(20);
    g.bench_function("10k_hosts_mixed_events", |bch| {
        bch.iter_batched(engine, |mut e| drive(&mut e), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Fuzzes the LLDP/CDP receive path: the frame parser, then the neighbour table fed with
//! whatever parses (several frames per input, at advancing times). Any panic is a bug; the
//! table must stay within its bound whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanoprobe::lldp::{parse_frame, NeighbourTable, TableLimits};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    // The input as a sequence of frames: a length byte, then that many bytes.
    let limits = TableLimits {
        max_neighbours: 4,
        ..TableLimits::default()
    };
    let mut table = NeighbourTable::new(limits);
    let t0 = Instant::now();
    let mut rest = data;
    let mut step = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        step += 1;
        let now = t0 + Duration::from_millis(step * 700);
        if let Ok(a) = parse_frame(frame) {
            table.observe(if step % 2 == 0 { "eth0" } else { "eth1" }, a, now);
        }
        assert!(table.len() <= 4);
        let _ = table.poll(now);
    }
});

//! Randomised check against a model: random writes, truncates, creates, unlinks, renames
//! and syncs in one directory, then a cut; the backing directory must hold exactly the
//! model's durable state.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use common::Lossy;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Model {
    /// name -> file id, as seen by the program.
    live: BTreeMap<String, usize>,
    /// name -> file id at the last directory fsync.
    durable_names: BTreeMap<String, usize>,
    /// file id -> content as seen.
    content: Vec<Vec<u8>>,
    /// file id -> content at the last fsync of the file.
    durable: Vec<Vec<u8>>,
}

fn run(seed: u64, ops: usize) {
    let mut l = Lossy::start();
    let mut rng = Rng(seed);
    let mut m = Model::default();
    let names = ["a", "b", "c", "d", "e"];
    for _ in 0..ops {
        let name = names[rng.below(names.len() as u64) as usize].to_string();
        let path = l.m(&name);
        match (rng.below(100), m.live.get(&name).copied()) {
            (0..=34, Some(id)) => {
                let len = 1 + rng.below(300) as usize;
                let off = rng.below(m.content[id].len() as u64 + 200) as usize;
                let byte = b'a' + rng.below(26) as u8;
                let data = vec![byte; len];
                let f = File::options().write(true).open(&path).unwrap();
                f.write_all_at(&data, off as u64).unwrap();
                let c = &mut m.content[id];
                if c.len() < off + len {
                    c.resize(off + len, 0);
                }
                c[off..off + len].copy_from_slice(&data);
            }
            (35..=44, Some(id)) => {
                let size = rng.below(m.content[id].len() as u64 + 100) as usize;
                File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(size as u64)
                    .unwrap();
                m.content[id].resize(size, 0);
            }
            (45..=59, Some(id)) => {
                File::open(&path).unwrap().sync_all().unwrap();
                m.durable[id] = m.content[id].clone();
            }
            (60..=69, Some(_)) => {
                fs::remove_file(&path).unwrap();
                m.live.remove(&name);
            }
            (70..=79, Some(id)) => {
                let to = names[rng.below(names.len() as u64) as usize].to_string();
                fs::rename(&path, l.m(&to)).unwrap();
                m.live.remove(&name);
                m.live.insert(to, id);
            }
            (80..=89, _) => {
                File::open(&l.mnt).unwrap().sync_all().unwrap();
                m.durable_names = m.live.clone();
            }
            (_, None) => {
                File::create(&path).unwrap();
                m.content.push(Vec::new());
                m.durable.push(Vec::new());
                m.live.insert(name, m.content.len() - 1);
            }
            _ => {}
        }
        if let Some(id) = m.live.get(names[0]) {
            assert_eq!(&fs::read(l.m(names[0])).unwrap(), &m.content[*id]);
        }
    }
    l.cut();
    let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in fs::read_dir(&l.backing).unwrap() {
        let e = e.unwrap();
        found.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path()).unwrap(),
        );
    }
    let expected: BTreeMap<String, Vec<u8>> = m
        .durable_names
        .iter()
        .map(|(n, id)| (n.clone(), m.durable[*id].clone()))
        .collect();
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "seed {seed}: names"
    );
    for (n, c) in &expected {
        assert!(found[n] == *c, "seed {seed}: content of {n}");
    }
}

#[test]
fn random_operations_then_cut_leave_exactly_the_durable_state() {
    if common::skipped("random_operations_then_cut_leave_exactly_the_durable_state") {
        return;
    }
    for seed in [1, 2, 3, 0x5eed, 0xdead_beef] {
        run(seed, 1500);
    }
}

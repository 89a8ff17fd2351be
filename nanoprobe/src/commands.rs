//! Command deduplication: the CMA retransmits a command until it is acknowledged, so the
//! same id may arrive several times; each copy is acknowledged but applied only once.

use std::collections::{HashSet, VecDeque};

/// Remembers the most recent command ids (bounded).
#[derive(Debug)]
pub struct CommandMemory {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl CommandMemory {
    /// Remembers up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> CommandMemory {
        CommandMemory {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; true if it had not been seen (the command must be applied).
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_each_id_once_within_memory() {
        let mut m = CommandMemory::new(2);
        assert!(m.first_time(1));
        assert!(!m.first_time(1));
        assert!(m.first_time(2));
        assert!(m.first_time(3));
        assert!(!m.first_time(2));
        // 1 fell out of the bounded memory.
        assert!(m.first_time(1));
    }
}

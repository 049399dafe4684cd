//! The event ids this process received lately. A hint, never a verdict: an id seen before is
//! looked up with one index probe before any other work (a redelivery of a finished event is
//! answered from it), and an id not seen skips that probe, so a first delivery pays nothing
//! for it. The transaction decides in both cases: an id this process never saw (delivered to
//! another replica, or before a restart) is still found a duplicate there, only later.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Ids kept per generation; two generations are kept, so between `GENERATION` and twice that
/// many of the latest ids are remembered (an 8-byte hash each; at most about 2.5 MiB).
const GENERATION: usize = 65_536;

pub struct RecentIds {
    hasher: RandomState,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl RecentIds {
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            generations: Mutex::default(),
        }
    }

    /// Remembers `event_id`; true when it was received before.
    pub fn seen_before(&self, event_id: &str) -> bool {
        let key = self.hasher.hash_one(event_id);
        let mut g = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.current.contains(&key) || g.previous.contains(&key) {
            return true;
        }
        if g.current.len() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once_then_seen() {
        let recent = RecentIds::new();
        assert!(!recent.seen_before("evt_1"));
        assert!(recent.seen_before("evt_1"));
        assert!(!recent.seen_before("evt_2"));
        assert!(recent.seen_before("evt_2"));
    }

    #[test]
    fn the_latest_generation_is_remembered_and_older_ones_are_forgotten() {
        let recent = RecentIds::new();
        assert!(!recent.seen_before("evt_first"));
        for i in 0..GENERATION {
            assert!(!recent.seen_before(&format!("evt_{i}")));
        }
        // One generation later the first id is in the previous generation: still seen.
        assert!(recent.seen_before("evt_first"));
        for i in 0..GENERATION {
            recent.seen_before(&format!("evt_again_{i}"));
        }
        // Two generations later it is gone, and so memory stays bounded.
        assert!(!recent.seen_before("evt_first"));
        let g = recent.generations.lock().unwrap();
        assert!(g.current.len() <= GENERATION && g.previous.len() <= GENERATION);
    }
}

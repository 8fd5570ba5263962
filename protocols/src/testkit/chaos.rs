//! A seeded fault schedule for [`Sim`]: crashes and restarts, symmetric and
//! one-way partitions that heal, applied at every [`Chaos::tick`].

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Observer, Sim, SimProtocol};

/// Injects crashes, restarts and partitions at random (but seeded) moments.
#[derive(Debug, Clone)]
pub struct Chaos<Id> {
    rng: ChaCha8Rng,
    /// Probability per tick that one more node crashes (while fewer than
    /// `max_crashed` are down).
    pub crash_prob: f64,
    /// Most nodes down at once.
    pub max_crashed: usize,
    /// How long a crashed node stays down (uniform in the range).
    pub downtime: (Duration, Duration),
    /// Probability per tick that a partition starts (when none is active).
    pub partition_prob: f64,
    /// Of the partitions, the fraction that are one-way (a single cut link).
    pub one_way_fraction: f64,
    /// How long a partition lasts (uniform in the range).
    pub partition_len: (Duration, Duration),
    down_until: BTreeMap<Id, Duration>,
    heal_at: Option<Duration>,
}

fn pick(rng: &mut ChaCha8Rng, r: (Duration, Duration)) -> Duration {
    let lo = r.0.as_millis() as u64;
    let hi = r.1.as_millis() as u64;
    if hi <= lo {
        r.0
    } else {
        Duration::from_millis(rng.gen_range(lo..=hi))
    }
}

impl<Id: Clone + Ord + std::fmt::Debug> Chaos<Id> {
    /// A schedule with moderate defaults, seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_ffee),
            crash_prob: 0.02,
            max_crashed: 1,
            downtime: (Duration::from_millis(100), Duration::from_millis(1500)),
            partition_prob: 0.01,
            one_way_fraction: 0.3,
            partition_len: (Duration::from_millis(200), Duration::from_millis(2000)),
            down_until: BTreeMap::new(),
            heal_at: None,
        }
    }

    /// Apply the faults due now and maybe start new ones.
    pub fn tick<P, O>(&mut self, sim: &mut Sim<P>, obs: &mut O) -> Result<(), String>
    where
        P: SimProtocol<Id = Id>,
        O: Observer<P>,
    {
        let now = sim.now();
        let due: Vec<Id> = self
            .down_until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            self.down_until.remove(&id);
            sim.restart(&id, obs)?;
        }
        if self.heal_at.is_some_and(|t| t <= now) {
            self.heal_at = None;
            sim.heal(obs)?;
        }
        if self.down_until.len() < self.max_crashed && self.rng.gen_bool(self.crash_prob) {
            let alive = sim.alive();
            if let Some(victim) = alive.choose(&mut self.rng).cloned() {
                let d = pick(&mut self.rng, self.downtime);
                self.down_until.insert(victim.clone(), now + d);
                sim.crash(&victim, obs)?;
            }
        }
        if self.heal_at.is_none() && self.rng.gen_bool(self.partition_prob) {
            let mut ids = sim.members();
            ids.shuffle(&mut self.rng);
            if ids.len() >= 2 {
                if self.rng.gen_bool(self.one_way_fraction) {
                    sim.block(&ids[0], &ids[1], obs)?;
                } else {
                    let cut = self.rng.gen_range(1..ids.len());
                    let side: Vec<Id> = ids[..cut].to_vec();
                    sim.partition(&[side], obs)?;
                }
                self.heal_at = Some(now + pick(&mut self.rng, self.partition_len));
            }
        }
        Ok(())
    }

    /// Stop all faults: restart every crashed node and heal every partition.
    pub fn calm<P, O>(&mut self, sim: &mut Sim<P>, obs: &mut O) -> Result<(), String>
    where
        P: SimProtocol<Id = Id>,
        O: Observer<P>,
    {
        for id in std::mem::take(&mut self.down_until).into_keys() {
            sim.restart(&id, obs)?;
        }
        self.heal_at = None;
        sim.heal(obs)
    }
}

//! Synthetic request traces: deterministic (seeded) sequences of key ids.

use fastrand::Rng;

/// Keys with a Zipf popularity in every trace.
pub const HOT_KEYS: usize = 100_000;
/// Keys swept in order, over and over, by the scans of the loop/scan trace.
const SCAN_KEYS: usize = 50_000;
/// Share of the loop/scan trace's requests that come from the scans.
const SCAN_SHARE: f64 = 0.30;
/// Share of the one-hit-wonder trace's requests to keys never seen again.
const ONE_HIT_SHARE: f64 = 0.40;

/// One trace: its column name, its requests, and how many distinct key ids
/// it may use (every key id is below `universe`).
pub struct Trace {
    pub name: &'static str,
    pub keys: Vec<u32>,
    pub universe: usize,
}

/// A Zipf(s) sampler over ranks `0..n` by inverse CDF: a binary search in
/// the precomputed cumulative weights `1/(rank+1)^s`.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += (rank as f64).powf(-s);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// A rank in `0..n`, rank 0 the most popular.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Zipf ranks mapped through a seeded shuffle of the key ids `0..n`, so that
/// popularity is not correlated with the id.
struct ShuffledZipf {
    zipf: Zipf,
    ids: Vec<u32>,
}

impl ShuffledZipf {
    fn new(n: usize, s: f64, rng: &mut Rng) -> Self {
        let mut ids: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut ids);
        Self {
            zipf: Zipf::new(n, s),
            ids,
        }
    }

    fn next(&self, rng: &mut Rng) -> u32 {
        self.ids[self.zipf.sample(rng)]
    }
}

/// `len` requests drawn from Zipf(s) over `HOT_KEYS` keys.
pub fn zipf(name: &'static str, s: f64, len: usize, seed: u64) -> Trace {
    let mut rng = Rng::with_seed(seed);
    let hot = ShuffledZipf::new(HOT_KEYS, s, &mut rng);
    let keys = (0..len).map(|_| hot.next(&mut rng)).collect();
    Trace {
        name,
        keys,
        universe: HOT_KEYS,
    }
}

/// Zipf(0.9) over `HOT_KEYS` keys, each request replaced with probability
/// `SCAN_SHARE` by the next key of a scan that sweeps the separate range
/// `HOT_KEYS..HOT_KEYS + SCAN_KEYS` in order, again and again.
pub fn loop_scan(len: usize, seed: u64) -> Trace {
    let mut rng = Rng::with_seed(seed);
    let hot = ShuffledZipf::new(HOT_KEYS, 0.9, &mut rng);
    let mut cursor = 0;
    let keys = (0..len)
        .map(|_| {
            if rng.f64() < SCAN_SHARE {
                let key = HOT_KEYS + cursor;
                cursor = (cursor + 1) % SCAN_KEYS;
                key as u32
            } else {
                hot.next(&mut rng)
            }
        })
        .collect();
    Trace {
        name: "loop+scan",
        keys,
        universe: HOT_KEYS + SCAN_KEYS,
    }
}

/// Zipf(0.99) over `HOT_KEYS` keys, each request replaced with probability
/// `ONE_HIT_SHARE` by a key never requested before nor after.
pub fn one_hit_wonders(len: usize, seed: u64) -> Trace {
    let mut rng = Rng::with_seed(seed);
    let hot = ShuffledZipf::new(HOT_KEYS, 0.99, &mut rng);
    let mut fresh = HOT_KEYS as u32;
    let keys = (0..len)
        .map(|_| {
            if rng.f64() < ONE_HIT_SHARE {
                fresh += 1;
                fresh - 1
            } else {
                hot.next(&mut rng)
            }
        })
        .collect();
    Trace {
        name: "one-hit",
        keys,
        universe: fresh as usize,
    }
}

//! The model test: random sequences of operations, every answer compared
//! with a `HashMap`'s.

use std::collections::HashMap;

use super::Shared;

/// One operation of the model test, on one of 16 keys (plain, spaced,
/// non-ASCII and 260-byte keys in turn).
#[derive(Debug, Clone)]
pub enum Op {
    /// `set(key, value)` without a TTL.
    Set(u8, Vec<u8>),
    /// `get(key)`.
    Get(u8),
    /// `delete(key)`: its answer says whether the key was there.
    Delete(u8),
    /// `contains(key)`.
    Contains(u8),
    /// `set_many` (a key given twice: the later value wins).
    SetMany(Vec<(u8, Vec<u8>)>),
    /// `get_many` (a key given twice is answered twice).
    GetMany(Vec<u8>),
    /// `delete_many` of the distinct keys: how many were there.
    DeleteMany(Vec<u8>),
    /// `len`, where the backend counts.
    Len,
}

impl Op {
    /// A random operation on 16 keys with values of 0-39 bytes and batches
    /// of 0-7 entries, drawn from `rng`.
    pub fn random(rng: &mut fastrand::Rng) -> Op {
        let val = |rng: &mut fastrand::Rng| {
            let n = rng.usize(0..40);
            (0..n).map(|_| rng.u8(..)).collect::<Vec<u8>>()
        };
        match rng.u8(0..8) {
            0 => Op::Set(rng.u8(0..16), val(rng)),
            1 => Op::Get(rng.u8(0..16)),
            2 => Op::Delete(rng.u8(0..16)),
            3 => Op::Contains(rng.u8(0..16)),
            4 => Op::SetMany(
                (0..rng.usize(0..8))
                    .map(|_| (rng.u8(0..16), val(rng)))
                    .collect(),
            ),
            5 => Op::GetMany((0..rng.usize(0..8)).map(|_| rng.u8(0..16)).collect()),
            6 => Op::DeleteMany((0..rng.usize(0..8)).map(|_| rng.u8(0..16)).collect()),
            _ => Op::Len,
        }
    }
}

/// `sequences` random sequences of 1-`max_ops` operations, each compared
/// with a `HashMap` by [`run_model`] on `c` (cleared before each). The
/// seeds come from `UNICACHE_TEST_SEED` when set (to replay a failure),
/// else at random. A failing sequence is shrunk (operations removed one at
/// a time while it still fails) and the panic names the seed and the
/// shortest failing sequence found.
pub async fn model(c: Shared, sequences: u32, max_ops: usize) {
    let base = std::env::var("UNICACHE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    for i in 0..u64::from(sequences) {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = rng.usize(1..=max_ops.max(1));
        let ops: Vec<Op> = (0..n).map(|_| Op::random(&mut rng)).collect();
        let Err(first) = run_model(&c, &ops).await else {
            continue;
        };
        let (ops, why) = shrink(&c, ops, first).await;
        panic!(
            "model: sequence with seed {seed} (replay: UNICACHE_TEST_SEED={seed}) fails: {why}\n\
             shortest failing sequence ({} ops): {ops:#?}",
            ops.len()
        );
    }
}

/// Removes operations one at a time while the sequence still fails.
async fn shrink(c: &Shared, mut ops: Vec<Op>, mut why: String) -> (Vec<Op>, String) {
    let mut i = 0;
    while i < ops.len() {
        let mut fewer = ops.clone();
        fewer.remove(i);
        match run_model(c, &fewer).await {
            Err(e) => (ops, why) = (fewer, e),
            Ok(()) => i += 1,
        }
    }
    (ops, why)
}

fn key_name(k: u8) -> String {
    // Mix plain, spaced and non-ASCII keys so key mapping is exercised too.
    match k % 4 {
        0 => format!("k{k}"),
        1 => format!("key with space {k}"),
        2 => format!("clé-{k}-ü"),
        _ => format!("{}{k}", "x".repeat(260)),
    }
}

/// Applies `ops` to the cache and to a HashMap, comparing every answer.
pub async fn run_model(c: &Shared, ops: &[Op]) -> Result<(), String> {
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    c.clear().await.map_err(|e| e.to_string())?;
    for (i, op) in ops.iter().enumerate() {
        let step = match op {
            Op::SetMany(_) | Op::GetMany(_) | Op::DeleteMany(_) => batch(c, &mut model, op).await,
            _ => single(c, &mut model, op).await,
        };
        step.map_err(|what| format!("op {i} {op:?}: {what}"))?;
    }
    Ok(())
}

type Model = HashMap<String, Vec<u8>>;

/// One single-key operation (or `len`) on both.
async fn single(c: &Shared, model: &mut Model, op: &Op) -> Result<(), String> {
    let e = |e: crate::Error| e.to_string();
    match op {
        Op::Set(k, v) => {
            c.set(&key_name(*k), v, None).await.map_err(e)?;
            model.insert(key_name(*k), v.clone());
        }
        Op::Get(k) => {
            let got = c.get(&key_name(*k)).await.map_err(e)?;
            if got.as_deref() != model.get(&key_name(*k)).map(Vec::as_slice) {
                return Err("get differs".into());
            }
        }
        Op::Delete(k) => {
            let got = c.delete(&key_name(*k)).await.map_err(e)?;
            if got != model.remove(&key_name(*k)).is_some() {
                return Err("delete result differs".into());
            }
        }
        Op::Contains(k) => {
            let got = c.contains(&key_name(*k)).await.map_err(e)?;
            if got != model.contains_key(&key_name(*k)) {
                return Err("contains differs".into());
            }
        }
        Op::Len if !c.capabilities().count => {}
        Op::Len => {
            let got = c.len().await.map_err(e)?;
            if got != model.len() as u64 {
                return Err(format!("len {got} != {}", model.len()));
            }
        }
        Op::SetMany(_) | Op::GetMany(_) | Op::DeleteMany(_) => unreachable!("a batch"),
    }
    Ok(())
}

/// One batch operation on both.
async fn batch(c: &Shared, model: &mut Model, op: &Op) -> Result<(), String> {
    let e = |e: crate::Error| e.to_string();
    match op {
        Op::SetMany(kvs) => {
            let names: Vec<String> = kvs.iter().map(|(k, _)| key_name(*k)).collect();
            let entries: Vec<(&str, &[u8])> = names
                .iter()
                .zip(kvs)
                .map(|(n, (_, v))| (n.as_str(), v.as_slice()))
                .collect();
            c.set_many(&entries, None).await.map_err(e)?;
            // Later entries for the same key win, as in a loop of sets.
            for (n, (_, v)) in names.iter().zip(kvs) {
                model.insert(n.clone(), v.clone());
            }
        }
        Op::GetMany(ks) => {
            let names: Vec<String> = ks.iter().map(|k| key_name(*k)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let got = c.get_many(&refs).await.map_err(e)?;
            for (n, g) in names.iter().zip(got) {
                if g.as_deref() != model.get(n).map(Vec::as_slice) {
                    return Err(format!("get_many differs at {n:?}"));
                }
            }
        }
        Op::DeleteMany(ks) => {
            let mut names: Vec<String> = ks.iter().map(|k| key_name(*k)).collect();
            names.sort();
            names.dedup();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let got = c.delete_many(&refs).await.map_err(e)?;
            let want = names.iter().filter(|n| model.remove(*n).is_some()).count() as u64;
            if got != want {
                return Err(format!("delete_many {got} != {want}"));
            }
        }
        _ => unreachable!("a single-key operation"),
    }
    Ok(())
}

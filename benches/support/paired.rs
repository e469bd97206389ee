//! Two operations timed in alternation: short rounds of each in turn, so a
//! load that comes and goes (other processes on a shared machine, the
//! CPU's clock) weighs on both alike; the ratio is the median of the
//! rounds' ratios. Included by `#[path = "support/paired.rs"] mod paired;`.

use std::time::Instant;

/// Times `base` and `ours` in `rounds` alternating rounds of `iters` calls
/// each (which goes first alternates too), after one warm-up round, and
/// prints `paired NAME: BASE ns -> OURS ns RATIO x` (medians per call, and
/// the median of the per-round ratios).
pub fn paired(
    name: &str,
    rounds: usize,
    iters: usize,
    mut base: impl FnMut(),
    mut ours: impl FnMut(),
) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    };
    time(&mut base);
    time(&mut ours);
    let (mut b, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let (tb, to) = if i % 2 == 0 {
            let tb = time(&mut base);
            (tb, time(&mut ours))
        } else {
            let to = time(&mut ours);
            (time(&mut base), to)
        };
        b.push(tb);
        o.push(to);
        r.push(to / tb);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "paired {name}: {:.1} ns -> {:.1} ns {:.3}x",
        median(&mut b),
        median(&mut o),
        median(&mut r)
    );
}

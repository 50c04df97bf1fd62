//! Section 1: one subspace update, SubTrack's geodesic step against GaLore's SVD refresh
//! (exact and randomized).

use burn::tensor::{Device, Distribution, Tensor};
use subtrack::SubTrackConfig;
use subtrack::testing::basis::{
    EXACT_SVD_MAX_SIDE, POWER_ITERATIONS, exact_singular_basis, randomized_singular_basis,
    top_singular_basis,
};
use subtrack::testing::geodesic::geodesic_step;

use crate::{Args, median, sync, time};

pub(crate) struct UpdateRow {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) r: usize,
    pub(crate) geodesic_ms: f64,
    pub(crate) svd_ms: Option<f64>,
    pub(crate) svd_reps: usize,
    pub(crate) randomized_ms: f64,
    pub(crate) randomized_reps: usize,
}

pub(crate) fn bench_updates(
    dev: &Device,
    shapes: &[(usize, usize, usize)],
    args: &Args,
) -> Vec<UpdateRow> {
    let mut rows = Vec::new();
    for &(m, n, r) in shapes {
        dev.seed(1);
        let g = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), dev);
        let g2 = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), dev);
        // An orthonormal starting basis (made once, outside the timings): the top-r left
        // singular vectors of another matrix, or past the exact solver's limit the column
        // space of that matrix times a Gaussian one (no power iterations: the step's cost
        // does not depend on which basis it starts from, and the full SVD would take minutes
        // on a slow host at 4096×11008).
        let basis = if m.min(n) > EXACT_SVD_MAX_SIDE {
            randomized_singular_basis(&g2, r, 0)
        } else {
            top_singular_basis(&g2, r)
        };
        // The host solves of both SVDs dominate at large sizes: one timed run each there.
        let large = m.min(n) >= 2048;
        let host_reps = if large { 1 } else { args.reps };
        let config = SubTrackConfig::subtrack_grad();
        let step = || {
            geodesic_step(
                &basis,
                &g,
                config.step_size,
                config.max_theta,
                config.orthonormality_tolerance,
            )
        };
        let _ = step(); // warm-up
        let geodesic: Vec<f64> = (0..args.reps)
            .map(|_| time(step, |s| sync(&s.basis)).0 * 1e3)
            .collect();
        let (svd_ms, svd_reps) = if m.min(n) <= args.svd_max {
            // Warm the Gram product's kernels, then time the whole refresh.
            sync(&g.clone().matmul(g.clone().transpose()));
            let t: Vec<f64> = (0..host_reps)
                .map(|_| time(|| exact_singular_basis(&g, r), sync).0 * 1e3)
                .collect();
            (Some(median(t)), host_reps)
        } else {
            (None, 0)
        };
        // The crate's randomized SVD (what `top_singular_basis` uses past 1024 rows); at large
        // sizes its warm-up takes one power iteration (which runs every product shape once).
        let randomized = || randomized_singular_basis(&g, r, POWER_ITERATIONS);
        if large {
            sync(&randomized_singular_basis(&g, r, 1));
        } else {
            sync(&randomized());
        }
        let randomized_ms = median(
            (0..host_reps)
                .map(|_| time(randomized, sync).0 * 1e3)
                .collect(),
        );
        let row = UpdateRow {
            m,
            n,
            r,
            geodesic_ms: median(geodesic),
            svd_ms,
            svd_reps,
            randomized_ms,
            randomized_reps: host_reps,
        };
        eprintln!(
            "  update {m}×{n} r={r}: geodesic {:.2} ms, SVD {}, randomized SVD {randomized_ms:.1} ms",
            row.geodesic_ms,
            svd_ms.map_or("skipped".into(), |s| format!("{s:.1} ms"))
        );
        rows.push(row);
    }
    rows
}

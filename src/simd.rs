//! The runtime choice between two builds of a hot loop: the target's baseline, and on
//! x86_64 CPUs that have it, AVX2 ([`wide!`]). Used by the fused CPU loops
//! (`route/flex/loops.rs`).

/// Set by a test to make `wide!` functions take their baseline build.
#[cfg(test)]
pub(crate) static BASELINE_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether `wide!` functions take their AVX2 build: on x86_64 CPUs that have it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    #[cfg(test)]
    if BASELINE_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2")
}

/// `wide!(fn name = body(args) -> ret;)` defines `name`, which calls the function `body`
/// (`#[inline(always)]`, with the same signature) as compiled for the target's baseline
/// or, on x86_64 CPUs that have it, as compiled with AVX2. x86_64's baseline is SSE2, so
/// AVX2 runs the loops on registers of four f64 (eight f32) instead of two (four). Both
/// builds do the same arithmetic in the same order (Rust never fuses a·b + c into one
/// rounding, and the wider registers only hold more of the same independent lanes), so
/// they give the same bits; tests check it. A closure handed to another thread is compiled
/// once, for the baseline, so the threaded loops call `wide!` functions from inside their
/// closures.
macro_rules! wide {
    ($(#[$attr:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2_build($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::avx2() {
                    // SAFETY: the CPU has AVX2, checked at run time.
                    return unsafe { avx2_build($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use wide;

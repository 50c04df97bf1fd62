//! What a panic does to a run. On the training thread it comes back from
//! [`train`](super::train) as an error (caught there); on any other thread (Burn's device
//! thread, wgpu's, a rayon worker) it ends the process at once with the same message,
//! because the training thread may be waiting for that thread forever. Checkpoints are
//! written to a temporary file and renamed, so the last one on disk is intact either way.

use std::any::Any;
use std::io::Write;
use std::thread::{self, ThreadId};

use super::PretrainError;

/// The exit status of a process ended by [`exit_on_background_panic`]'s hook.
pub const BACKGROUND_PANIC_EXIT: i32 = 1;

/// The text of a panic payload.
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The error a panic with message `msg` becomes: [`PretrainError::OutOfMemory`] (with what
/// to lower) when it reports a failed allocation, else [`PretrainError::Diverged`].
pub fn as_error(msg: &str) -> PretrainError {
    let lower = msg.to_lowercase();
    if lower.contains("out of memory") || lower.contains("outofmemory") || lower.contains("allocat")
    {
        PretrainError::OutOfMemory(format!(
            "{msg}; lower --batch-size, --seq-len or --size (the last checkpoint is intact)"
        ))
    } else {
        PretrainError::Diverged(format!("the training step panicked: {msg}"))
    }
}

/// Install a panic hook under which a panic on any thread but the calling one prints
/// `error: ...` (the thread, the message and where it was raised) and ends the process
/// with status [`BACKGROUND_PANIC_EXIT`]. No exit handlers run (`_exit` on Unix): a GPU
/// driver's may wait on the lock the panicking thread held. Panics on the calling thread
/// go to the hook that was installed before, and unwind as usual. Call it once, first
/// thing in `main`.
pub fn exit_on_background_panic() {
    let main: ThreadId = thread::current().id();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let current = thread::current();
        if current.id() == main {
            previous(info);
            return;
        }
        let name = current.name().unwrap_or("unnamed");
        let at = info.location().map_or(String::new(), |l| {
            format!(" (at {}:{})", l.file(), l.line())
        });
        let msg = message(info.payload());
        let what = match as_error(&msg) {
            oom @ PretrainError::OutOfMemory(_) => oom.to_string(),
            _ => msg,
        };
        let _ = std::io::stdout().flush();
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "\nerror: thread `{name}` panicked{at}: {what}");
        let _ = writeln!(
            stderr,
            "the run stops here; the last checkpoint is as it was"
        );
        let _ = stderr.flush();
        exit_now(BACKGROUND_PANIC_EXIT);
    }));
}

#[cfg(unix)]
fn exit_now(code: i32) -> ! {
    unsafe extern "C" {
        safe fn _exit(code: i32) -> !;
    }
    _exit(code)
}

#[cfg(not(unix))]
fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}

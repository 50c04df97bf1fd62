//! Device choice and panics in the main job: wgpu's OpenGL backend is never opened, and a
//! panic on a thread other than the training one ends the process with an error instead of
//! leaving it waiting forever.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::wgpu::WgpuBackend;
use subtrack_llama::ckpt::Checkpoint;
use subtrack_llama::device::{GL_UNSUPPORTED, passed_over, pick, supported_apis};
use subtrack_llama::panics::{BACKGROUND_PANIC_EXIT, exit_on_background_panic};
use subtrack_llama::{PretrainError, RunOptions, TrainConfig, train};

#[test]
fn only_vulkan_metal_and_dx12_are_opened() {
    let apis = supported_apis();
    assert!(!apis.is_empty());
    for api in apis {
        assert!(
            matches!(
                api,
                WgpuBackend::Vulkan | WgpuBackend::Metal | WgpuBackend::Dx12
            ),
            "{api:?} is not a supported API"
        );
    }
}

/// `auto` takes a GPU on a supported API or the CPU: on a machine whose only adapter is
/// OpenGL (CI's first phase) it must come back with the CPU, not the GL adapter.
#[test]
fn auto_never_takes_a_gl_adapter() {
    let picked = pick("auto").expect("auto always finds a device");
    assert!(
        !picked.description.contains(", Gl,"),
        "auto took {}",
        picked.description
    );
    if !picked.is_wgpu {
        assert!(
            picked.description.starts_with("CPU"),
            "{}",
            picked.description
        );
    }
}

#[test]
fn gl_is_refused_up_front_with_its_cause() {
    let Err(PretrainError::Device(msg)) = pick("gl") else {
        panic!("--device gl was not refused");
    };
    eprintln!("--device gl: {msg}");
    assert!(msg.contains(GL_UNSUPPORTED), "{msg}");
    assert!(msg.contains("Could not lock adapter context"), "{msg}");
    // It names the OpenGL adapters it passed over, or says there are none.
    let skipped = passed_over();
    if skipped.is_empty() {
        assert!(msg.contains("no OpenGL adapter"), "{msg}");
    }
    for adapter in &skipped {
        let name = adapter.split(" (").next().unwrap();
        assert!(msg.contains(name), "{msg} does not name {name}");
        assert!(adapter.ends_with(GL_UNSUPPORTED), "{adapter}");
    }
}

const CHILD_ENV: &str = "SUBTRACK_PANIC_CHILD_DIR";

/// A training run whose other thread panics after the first checkpoint, while the training
/// thread then waits forever: the child process must end with the hook's status and
/// message, and the checkpoint on disk must still load.
#[test]
fn a_panic_on_another_thread_ends_the_run_with_an_error() {
    let (_tmp, dir) = crate::fresh_dir("panic-child");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "device::panicking_run_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the child still ran after 300 s: a background panic left it waiting");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(BACKGROUND_PANIC_EXIT), "{text}");
    assert!(
        text.contains("error: thread `watcher` panicked")
            && text.contains("injected after the first checkpoint"),
        "{text}"
    );
    assert!(text.contains("the last checkpoint is as it was"), "{text}");
    let ckpt = Checkpoint::load(&dir.join("checkpoint.bin")).expect("the checkpoint loads");
    assert!(ckpt.step >= 10, "checkpoint at step {}", ckpt.step);
}

#[test]
#[ignore = "run by a_panic_on_another_thread_ends_the_run_with_an_error in its own process"]
fn panicking_run_child() {
    let dir = PathBuf::from(std::env::var_os(CHILD_ENV).expect(CHILD_ENV));
    exit_on_background_panic();
    let ckpt = dir.join("checkpoint.bin");
    std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || {
            while !ckpt.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("injected after the first checkpoint");
        })
        .unwrap();
    let config = TrainConfig::new()
        .with_size("tiny".into())
        .with_steps(40)
        .with_batch_size(4)
        .with_seq_len(16)
        .with_warmup_steps(2)
        .with_eval_every(10)
        .with_eval_batches(1)
        .with_checkpoint_every(10)
        .with_log_every(10)
        .with_update_interval(5)
        .with_synthetic_tokens(20_000);
    let opts = RunOptions {
        verbose: false,
        ..RunOptions::new(&dir)
    };
    let corpus = config.corpus().unwrap();
    let _ = train(&config, &corpus, &pick("cpu").unwrap(), &opts);
    // Whether or not the run finished first, this thread now waits as a training thread
    // waits on a dead device thread: only the hook can end the process.
    let (_keep, never) = std::sync::mpsc::channel::<()>();
    let _ = never.recv();
    unreachable!("the channel's sender is alive");
}

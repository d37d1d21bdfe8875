//! `harness`: the command-line front end. Parsing and dispatch only; the work is in the library.

mod cli;

use clap::Parser;

fn main() {
    limit_malloc_arenas();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Caps glibc's malloc at 2 arenas unless `MALLOC_ARENA_MAX` is set. With the default (8 per core), the
/// per-thread arenas of the backends' worker threads kept freed tensor memory: two `harness run` processes on
/// configs/toyworld-compare.toml (`flex`) grew to 6-7 GiB each within ~100 images; with 2 arenas they stayed at
/// 0.5-0.9 GiB, flat, and CLoRA images took the same time (17.5-18.8 s vs 16.6-22 s). (On `tch` the same run
/// reached 12 GiB per process before the cap; not measured with it.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called first thing, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

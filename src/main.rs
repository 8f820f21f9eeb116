//! The `payrun` binary: parses the command line and hands it to the library
//! (`payrun::cli::run_blocking`), which wires configuration, store, Dots client and commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    install_tls_provider();
    let cli = payrun::cli::Cli::parse();
    payrun::cli::init_tracing(&cli);
    let code = payrun::cli::run_blocking(cli);
    ExitCode::from(code as u8)
}

/// reqwest is built with `rustls-no-provider` (Cargo.toml: ring only, no aws-lc-rs), so the
/// crypto provider every TLS client of the process uses (Dots API, webhook deliveries) is
/// installed here, before any client exists. sqlx's PostgreSQL TLS names ring itself.
fn install_tls_provider() {
    // Err only if a provider is already installed, which then serves just as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps
/// what it once held. The worker has many threads (tokio's, one per SQLite connection, the
/// blocking pool), so its RSS crept up with the batch (34 -> 81 MiB over 100,000 items);
/// with two arenas it stays flat (`payrun bench memory`). `MALLOC_ARENA_MAX` still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

//! The README's main job, `payrun demo`, run as a newcomer would (the real binary, a fresh
//! SQLite file, the in-process simulator with faults): it exits 0, onboards the new sellers
//! first, and its ledger audit finds exactly one transfer per item.

use std::process::Command;

#[test]
fn the_demo_pays_every_seller_once_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["demo", "--demo-database-url", &db])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ledger audit: 50 items, 50 transfers in the ledger, 50 for this batch: 0 missing, 0 duplicated, 0 wrong amount or user, 0 unrecorded, 0 orphans"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("seller-"))
        .collect();
    assert_eq!(rows.len(), 50);
    // New sellers (even numbers) were onboarded; known ones were not.
    assert_eq!(rows.iter().filter(|l| l.contains(" yes ")).count(), 25);
    for r in &rows {
        assert!(
            r.contains("completed") || r.contains("awaiting_payout"),
            "{r}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.starts_with("seller-017") && r.contains("awaiting_payout")),
        "the payee who never finishes waits"
    );
}

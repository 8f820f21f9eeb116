//! payrun's integration tests, one binary (one link, one copy of the helpers), one module per
//! behaviour area. Each test that touches a database runs on a fresh SQLite file and on a fresh
//! PostgreSQL database (`on_both_backends!`), so the tests run in parallel.
//!
//! Run one area with `cargo test --test it intake::`, one test with its full name
//! (`cargo test --test it chaos:: -- --nocapture`).

#[macro_use]
mod common;
mod fixture;

mod architecture;
mod audit;
mod batch_identity;
mod browser;
mod chaos;
mod config;
mod control;
mod dashboard;
mod demo;
mod events;
mod events_cli;
mod feed;
mod funding;
mod intake;
mod migrations;
mod operations;
mod outbox;
mod output_safety;
mod pipeline;
mod polling;
mod recovery;
mod reminders;
mod route;
mod run_signal;
mod schedule_path;
mod secrets;
mod sim_api;
mod sim_schema;
mod store;
mod systemic;
mod transfer_batches;
mod watchdog;
mod webhook;
mod webhook_flow;

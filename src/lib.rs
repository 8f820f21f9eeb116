//! payrun: a durable batch payout worker for the Dots payouts API.
//!
//! See ARCHITECTURE.md for the map. In short: `intake` validates a CSV, `store` keeps batches
//! and items (the source of truth), `jobs` moves each item through its state machine
//! (`item`) calling Dots through `dots::client`, `jobs::poll` watches flows waiting on payees, `webhook`
//! receives Dots' signed webhooks, and `app` holds the operator commands the binary exposes.

pub mod app;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dots;
pub mod events;
pub mod health;
pub mod intake;
pub mod item;
pub mod jobs;
pub mod metrics;
pub mod money;
pub mod secret;
pub mod store;
pub mod text;
pub mod webhook;

//! Test helpers: `api` talks to a bare simulator over HTTP; `app` spawns payrun itself (a fresh
//! SQLite file or PostgreSQL database per test, an in-process simulator) and steps its worker;
//! `webhook` runs a webhook receiver and a simulator sending to it.

pub mod api;
#[macro_use]
pub mod app;
pub mod proxy;
pub mod webhook;

pub use api::*;

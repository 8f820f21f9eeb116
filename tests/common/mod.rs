//! Test helpers: `api` talks to a bare simulator over HTTP; `app` spawns payrun itself (a fresh
//! SQLite file or PostgreSQL database per test, an in-process simulator) and steps its worker.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod app;

pub use api::*;

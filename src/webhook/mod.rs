//! Receiving Dots webhooks (delivered by Svix).
//!
//! What it owns: Svix signature verification (`verify`), lenient parsing of webhook bodies into
//! the few events payrun acts on (`event`), and the axum endpoint `POST /webhooks/dots`
//! (`server`) with its bounded replay filter (`dedupe`).
//!
//! Guarantees: a request is acted on only after its signature and timestamp verified; a
//! verified message id is acted on at most once while it is among the last `capacity` ids; the
//! HTTP answer never waits on the handler. Nothing here touches the store or calls Dots: the
//! caller supplies the handler (typically "refresh this flow / transfer through the engine").
//! The signing secret never appears in `Debug` output or logs.

pub mod dedupe;
pub mod event;
pub mod server;
pub mod verify;

pub use event::WebhookEvent;
pub use server::{WebhookState, router};
pub use verify::{Verifier, WebhookError};

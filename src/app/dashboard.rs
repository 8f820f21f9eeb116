//! The operators' dashboard (placeholder: being built).

use std::sync::Arc;

use crate::jobs::Queue;
use crate::store::Store;

pub fn router(_store: Store, _queue: Queue, _token: Arc<str>) -> axum::Router {
    axum::Router::new()
}

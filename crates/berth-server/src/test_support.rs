//! Pieces the server's unit tests share.

use berth_runtime::image::{BuildOutcome, BuildProgress};
use berth_runtime::RuntimeError;

use crate::state::ImageBuilder;

/// An image builder for tests that never build: a fixed tag, every build an error.
pub struct NoImages;

#[async_trait::async_trait]
impl ImageBuilder for NoImages {
    fn tag(&self) -> String {
        "localhost/berth-workspace:test".into()
    }
    async fn build(
        &self,
        _force: bool,
        _progress: tokio::sync::mpsc::UnboundedSender<BuildProgress>,
    ) -> Result<BuildOutcome, RuntimeError> {
        Err(RuntimeError::Other("no builds in unit tests".into()))
    }
}

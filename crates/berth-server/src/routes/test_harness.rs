//! The route tests' harness: the real router over a [`TestState`].

use crate::test_support::{call_router, TestState};

/// The real router over a [`TestState`] (which it derefs to).
pub struct Routed {
    pub base: TestState,
    pub app: axum::Router,
}

impl std::ops::Deref for Routed {
    type Target = TestState;
    fn deref(&self) -> &TestState {
        &self.base
    }
}

impl Routed {
    pub async fn new() -> Self {
        let base = TestState::new().await;
        Self {
            app: crate::routes::router(base.state.clone()),
            base,
        }
    }

    /// One request as `token` (a JSON body unless `Null`): the status and the JSON answer.
    pub async fn call_json(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = (!body.is_null()).then(|| body.to_string());
        call_router(&self.app, token, method, path, body.as_deref()).await
    }
}

/// Defines `struct H`, the shared [`Routed`] harness under a type of the test file's own (for
/// its helpers; it derefs to [`Routed`]), and `harness()` making one.
macro_rules! route_harness {
    () => {
        struct H($crate::routes::test_harness::Routed);

        impl std::ops::Deref for H {
            type Target = $crate::routes::test_harness::Routed;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        async fn harness() -> H {
            H($crate::routes::test_harness::Routed::new().await)
        }
    };
}
pub(crate) use route_harness;

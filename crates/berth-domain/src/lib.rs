//! berth's domain model.
//!
//! Everything here is plain data and pure functions: no tokio, no sqlx, no HTTP. Transports parse
//! their input into these types, and the state machine decides what may happen next.

pub mod egress;
pub mod error;
pub mod ids;
pub mod limits;
pub mod name;
pub mod secret;
pub mod sync;
pub mod task;
pub mod timestamp;
pub mod workspace;

pub use egress::EgressRecord;
pub use error::ErrorCode;
pub use ids::{TaskId, TenantId, TokenId, WorkspaceId};
pub use limits::{Limits, LimitsError};
pub use name::{Name, NameError, WorkspaceRef};
pub use secret::{Secret, SecretDelivery};
pub use task::{Agent, EventKind, Provider, TaskEvent, TaskState};
pub use workspace::{Failure, FailureKind, Transition, TransitionError, WorkspaceState};

//! berth's domain model.
//!
//! Everything here is plain data and pure functions: no tokio, no sqlx, no HTTP. Transports parse
//! their input into these types, and the state machine decides what may happen next.

pub mod approval;
pub mod devcontainer;
pub mod egress;
pub mod error;
pub mod ids;
pub mod limits;
pub mod mcp;
pub mod name;
pub mod notify;
pub mod quota;
pub mod role;
pub mod secret;
pub mod sync;
pub mod task;
pub mod template;
pub mod timestamp;
pub mod workspace;

pub use approval::{ApprovalDecision, ApprovalKind, ApprovalPolicy, ApprovalRequest};
pub use egress::EgressRecord;
pub use error::ErrorCode;
pub use ids::{AccessRequestId, TaskId, TenantId, TokenId, WorkspaceId};
pub use limits::{Limits, LimitsError};
pub use mcp::{McpServer, McpTransport};
pub use name::{Name, NameError, WorkspaceRef};
pub use quota::{Quota, QuotaExceeded, QuotaUse};
pub use role::{Permission, Role};
pub use secret::{Secret, SecretDelivery};
pub use task::{Agent, EventKind, Provider, TaskEvent, TaskState};
pub use template::{ParamError, Template, TemplateError};
pub use timestamp::Timestamp;
pub use workspace::{Failure, FailureKind, Transition, TransitionError, WorkspaceState};

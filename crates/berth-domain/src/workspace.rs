//! The workspace lifecycle as a state machine.
//!
//! ```text
//!  create ──► creating ──ready──► running ──stop──► stopping ──► stopped
//!                                  ▲   │                            │
//!                                  │   └──fail──► failed ◄──fail────┤
//!                    starting ◄────┼──start─────────┘               │
//!                       └─ready────┘◄──────────start────────────────┘
//!  any settled state ──remove──► removing ──► (gone)
//! ```
//! Transitions that make no sense (stopping a workspace that is being created, starting one that
//! is being removed) are refused with a [`TransitionError`] the API turns into `invalid_state`.

use serde::{Deserialize, Serialize};

/// Why a workspace is `failed`, or what last went wrong inside a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The kernel killed a process for exceeding the workspace's memory cap.
    Oom,
    /// The container stopped on its own with this exit code.
    Exited,
    /// The container disappeared from the engine.
    Vanished,
    /// The container runs but its daemon does not answer.
    DaemonUnreachable,
    /// Starting the container or its daemon failed.
    StartFailed,
    /// A step of the workspace's template provisioning (clone, setup) failed; its log is in
    /// the provisioning record, and `berth workspace provision W --retry` resumes there.
    Provision,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oom => "oom",
            Self::Exited => "exited",
            Self::Vanished => "vanished",
            Self::DaemonUnreachable => "daemon_unreachable",
            Self::StartFailed => "start_failed",
            Self::Provision => "provision",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "oom" => Self::Oom,
            "exited" => Self::Exited,
            "vanished" => Self::Vanished,
            "daemon_unreachable" => Self::DaemonUnreachable,
            "start_failed" => Self::StartFailed,
            "provision" => Self::Provision,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(reason: FailureKind, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// Classifies a container that exited without berth asking it to. Only the engine's OOM
    /// flag (which the engine takes from the memory cgroup) makes it an OOM kill: exit status
    /// 137 alone is any SIGKILL, which the workspace can send itself (`pkill -9` of the
    /// daemon), so it is an unexpected exit. (Where the engine never sets the flag, Podman on
    /// cgroup v1, OOM kills are still counted from the memcg counter while the workspace runs.)
    pub fn from_unexpected_exit(exit_code: i64, engine_says_oom: bool) -> Self {
        if engine_says_oom {
            Self::new(
                FailureKind::Oom,
                format!(
                    "the workspace was killed for exceeding its memory limit (exit {exit_code})"
                ),
            )
        } else {
            Self::new(
                FailureKind::Exited,
                format!("the workspace container exited on its own with code {exit_code}"),
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Removing,
    Failed,
}

impl WorkspaceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Removing => "removing",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "removing" => Self::Removing,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// A state in which no lifecycle operation is in flight.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Running | Self::Stopped | Self::Failed)
    }

    /// Applies a transition, returning the next state.
    pub fn apply(self, t: Transition) -> Result<Self, TransitionError> {
        use Transition as T;
        use WorkspaceState as S;
        let next = match (self, t) {
            (S::Creating | S::Starting, T::Ready) => S::Running,
            (S::Stopped | S::Failed, T::Start) => S::Starting,
            (S::Running | S::Starting | S::Failed, T::Stop) => S::Stopping,
            (S::Stopping, T::Halted) => S::Stopped,
            (S::Running | S::Stopped | S::Failed, T::Remove) => S::Removing,
            (S::Creating | S::Starting | S::Running | S::Stopping, T::Fail) => S::Failed,
            // The reconciler saw the container running although the store says otherwise
            // (started outside berth, or recovered from a crash).
            (S::Stopped | S::Failed, T::ObservedRunning) => S::Running,
            // The reconciler saw the container stopped while the store says stopping.
            (S::Stopping, T::ObservedStopped) => S::Stopped,
            (from, t) => {
                return Err(TransitionError {
                    from,
                    transition: t,
                })
            }
        };
        Ok(next)
    }
}

impl std::fmt::Display for WorkspaceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The container runs and its daemon answered the handshake.
    Ready,
    Start,
    Stop,
    /// The container stopped after a stop request.
    Halted,
    Remove,
    Fail,
    ObservedRunning,
    ObservedStopped,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Self::Ready => "become ready",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Halted => "halt",
            Self::Remove => "remove",
            Self::Fail => "fail",
            Self::ObservedRunning => "be observed running",
            Self::ObservedStopped => "be observed stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a workspace that is {from} cannot {}", transition.verb())]
pub struct TransitionError {
    pub from: WorkspaceState,
    pub transition: Transition,
}

/// The variables that send a workspace's traffic through berth's egress proxy (set to the proxy's
/// loopback address in every workspace).
pub const PROXY_ENV: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The variables that keep loopback (the LLM gateway) off the proxy.
pub const NO_PROXY_ENV: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The variables that point TLS clients at the CA bundle trusting berth's egress proxy.
pub const CA_BUNDLE_ENV: [&str; 5] = [
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];

/// Every variable of a workspace's way out (proxy, no-proxy, CA bundle): set by the server on
/// the container, passed by the daemon to agents, never settable by a template.
pub fn egress_env_names() -> impl Iterator<Item = &'static str> {
    PROXY_ENV
        .into_iter()
        .chain(NO_PROXY_ENV)
        .chain(CA_BUNDLE_ENV)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transition as T;
    use WorkspaceState as S;

    #[test]
    fn happy_path() {
        let s = S::Creating.apply(T::Ready).unwrap();
        assert_eq!(s, S::Running);
        let s = s.apply(T::Stop).unwrap().apply(T::Halted).unwrap();
        assert_eq!(s, S::Stopped);
        let s = s.apply(T::Start).unwrap().apply(T::Ready).unwrap();
        assert_eq!(s, S::Running);
        assert_eq!(s.apply(T::Remove).unwrap(), S::Removing);
    }

    #[test]
    fn refuses_nonsense() {
        let e = S::Creating.apply(T::Stop).unwrap_err();
        assert_eq!(e.to_string(), "a workspace that is creating cannot stop");
        assert!(S::Removing.apply(T::Start).is_err());
        assert!(S::Running.apply(T::Start).is_err());
        assert!(S::Stopped.apply(T::Stop).is_err());
        assert!(S::Removing.apply(T::Fail).is_err());
        assert!(S::Creating.apply(T::Remove).is_err());
    }

    #[test]
    fn failed_can_recover_or_be_removed() {
        assert_eq!(S::Failed.apply(T::Start).unwrap(), S::Starting);
        assert_eq!(S::Failed.apply(T::Remove).unwrap(), S::Removing);
        assert_eq!(S::Failed.apply(T::ObservedRunning).unwrap(), S::Running);
    }

    #[test]
    fn state_strings_round_trip() {
        for s in [
            S::Creating,
            S::Starting,
            S::Running,
            S::Stopping,
            S::Stopped,
            S::Removing,
            S::Failed,
        ] {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        for k in [
            FailureKind::Oom,
            FailureKind::Exited,
            FailureKind::Vanished,
            FailureKind::DaemonUnreachable,
            FailureKind::StartFailed,
        ] {
            assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn unexpected_exit_classification() {
        // A SIGKILL the memory cgroup did not cause (e.g. the agent killed its daemon).
        assert_eq!(
            Failure::from_unexpected_exit(137, false).reason,
            FailureKind::Exited
        );
        assert_eq!(
            Failure::from_unexpected_exit(137, true).reason,
            FailureKind::Oom
        );
        assert_eq!(
            Failure::from_unexpected_exit(1, true).reason,
            FailureKind::Oom
        );
        assert_eq!(
            Failure::from_unexpected_exit(2, false).reason,
            FailureKind::Exited
        );
    }
}

//! Runtime errors and their mapping from bollard errors.

/// Errors from a [`crate::Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine socket is missing or refuses connections.
    #[error("container engine unreachable at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The object (container, volume, image) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Name already in use (or another state conflict reported as HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The image a container was created from does not exist locally.
    #[error("image missing: {0}")]
    ImageMissing(String),
    /// The spec was rejected before reaching the engine (hardening rules).
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// Any other error status from the engine.
    #[error("engine error (HTTP {status}): {message}")]
    Engine { status: u16, message: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl Clone for RuntimeError {
    fn clone(&self) -> Self {
        match self {
            RuntimeError::Unreachable { endpoint, message } => RuntimeError::Unreachable {
                endpoint: endpoint.clone(),
                message: message.clone(),
            },
            RuntimeError::NotFound(s) => RuntimeError::NotFound(s.clone()),
            RuntimeError::Conflict(s) => RuntimeError::Conflict(s.clone()),
            RuntimeError::ImageMissing(s) => RuntimeError::ImageMissing(s.clone()),
            RuntimeError::InvalidSpec(s) => RuntimeError::InvalidSpec(s.clone()),
            RuntimeError::Engine { status, message } => RuntimeError::Engine {
                status: *status,
                message: message.clone(),
            },
            RuntimeError::Io(e) => RuntimeError::Io(std::io::Error::new(e.kind(), e.to_string())),
            RuntimeError::Other(s) => RuntimeError::Other(s.clone()),
        }
    }
}

impl RuntimeError {
    /// A stable snake_case code for logs and API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Unreachable { .. } => "engine_unreachable",
            RuntimeError::NotFound(_) => "not_found",
            RuntimeError::Conflict(_) => "conflict",
            RuntimeError::ImageMissing(_) => "image_missing",
            RuntimeError::InvalidSpec(_) => "invalid_spec",
            RuntimeError::Engine { .. } => "engine_error",
            RuntimeError::Io(_) => "io_error",
            RuntimeError::Other(_) => "runtime_error",
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound(_))
    }

    /// The `Unreachable` error with the fix-it hint for this endpoint.
    pub fn unreachable(endpoint: &str, cause: impl std::fmt::Display) -> Self {
        RuntimeError::Unreachable {
            endpoint: endpoint.to_string(),
            message: format!("{cause}. {}", unreachable_hint(endpoint)),
        }
    }

    /// Map a bollard error. `endpoint` is used for connection failures.
    pub(crate) fn from_bollard(endpoint: &str, err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match err {
            B::DockerResponseServerError {
                status_code,
                message,
            } => from_status(status_code, message),
            B::SocketNotFoundError(path) => {
                Self::unreachable(endpoint, format!("socket {path} does not exist"))
            }
            B::HyperLegacyError { err } => {
                if err.is_connect() {
                    Self::unreachable(endpoint, format!("cannot connect ({})", source_chain(&err)))
                } else {
                    RuntimeError::Other(format!("engine request failed: {}", source_chain(&err)))
                }
            }
            B::IOError { err } => {
                if is_connect_io_error(&err) {
                    Self::unreachable(endpoint, format!("cannot connect ({err})"))
                } else {
                    RuntimeError::Io(err)
                }
            }
            B::RequestTimeoutError => {
                RuntimeError::Other(format!("request to the engine at {endpoint} timed out"))
            }
            other => RuntimeError::Other(other.to_string()),
        }
    }

    /// Like [`from_bollard`](Self::from_bollard) for `POST /containers/create`:
    /// a 404 there means the image is missing.
    pub(crate) fn from_bollard_create(
        endpoint: &str,
        image: &str,
        err: bollard::errors::Error,
    ) -> Self {
        match Self::from_bollard(endpoint, err) {
            RuntimeError::NotFound(msg) => RuntimeError::ImageMissing(format!("{image}: {msg}")),
            RuntimeError::Engine { status, message } if looks_like_missing_image(&message) => {
                RuntimeError::ImageMissing(format!("{image}: {message} (HTTP {status})"))
            }
            other => other,
        }
    }
}

/// Map an HTTP error status from the engine.
pub(crate) fn from_status(status: u16, message: String) -> RuntimeError {
    match status {
        404 => RuntimeError::NotFound(message),
        409 => RuntimeError::Conflict(message),
        // Podman's compat service answers a duplicate container name with 500.
        _ if message.contains("already in use") => RuntimeError::Conflict(message),
        _ => RuntimeError::Engine { status, message },
    }
}

fn looks_like_missing_image(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("no such image")
        || m.contains("image not known")
        || m.contains("unable to find image")
}

fn is_connect_io_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::NotFound | K::ConnectionRefused | K::PermissionDenied | K::ConnectionReset
    )
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// How to fix an unreachable engine.
pub(crate) fn unreachable_hint(endpoint: &str) -> String {
    format!(
        "Is the container engine running and is {endpoint} the right endpoint? \
         For Podman start its Docker-compatible service: \
         `podman system service --time=0 unix:///run/podman/podman.sock &`; \
         for Docker: `systemctl start docker`. Point berth elsewhere with DOCKER_HOST \
         (e.g. DOCKER_HOST=unix:///var/run/docker.sock)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert!(matches!(
            from_status(404, "x".into()),
            RuntimeError::NotFound(_)
        ));
        assert!(matches!(
            from_status(409, "x".into()),
            RuntimeError::Conflict(_)
        ));
        assert!(matches!(
            from_status(
                500,
                "container create: creating container storage: the container name \"x\" is already in use by 8cf5".into()
            ),
            RuntimeError::Conflict(_)
        ));
        assert!(matches!(
            from_status(500, "boom".into()),
            RuntimeError::Engine { status: 500, .. }
        ));
    }

    #[test]
    fn bollard_mapping() {
        let e = RuntimeError::from_bollard(
            "unix:///x.sock",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "name in use".into(),
            },
        );
        assert!(matches!(e, RuntimeError::Conflict(ref m) if m == "name in use"));

        let e = RuntimeError::from_bollard(
            "unix:///x.sock",
            bollard::errors::Error::SocketNotFoundError("/x.sock".into()),
        );
        match e {
            RuntimeError::Unreachable { endpoint, message } => {
                assert_eq!(endpoint, "unix:///x.sock");
                assert!(message.contains("does not exist"), "{message}");
                assert!(message.contains("podman system service"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }

        let e = RuntimeError::from_bollard(
            "unix:///x.sock",
            bollard::errors::Error::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        );
        assert!(matches!(e, RuntimeError::Unreachable { .. }));
    }

    #[test]
    fn create_mapping() {
        let e = RuntimeError::from_bollard_create(
            "e",
            "img:1",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such image: img:1".into(),
            },
        );
        assert!(matches!(e, RuntimeError::ImageMissing(ref m) if m.contains("img:1")));
        let e = RuntimeError::from_bollard_create(
            "e",
            "img:1",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "img:1: image not known".into(),
            },
        );
        assert!(matches!(e, RuntimeError::ImageMissing(_)));
        let e = RuntimeError::from_bollard_create(
            "e",
            "img:1",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "name in use".into(),
            },
        );
        assert!(matches!(e, RuntimeError::Conflict(_)));
    }

    #[test]
    fn clone_and_code() {
        let e = RuntimeError::Io(std::io::Error::other("disk"));
        let c = e.clone();
        assert_eq!(c.code(), "io_error");
        assert!(c.to_string().contains("disk"));
    }
}

//! The errors a registry reports on its event stream.

/// A boxed error from a registry's client library, kept as the `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a registry. Errors travel on the event stream; they
/// never end it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry's source (API server, agent, etcd, a file system) could not
    /// be reached or answered with an error. What the registry reported before
    /// is now stale; the aggregator keeps it and marks it so. Retryable: the
    /// adapter reconnects (see [`crate::recover`]) and sends a
    /// [`crate::Event::Reset`] once it is back.
    #[error("source unavailable: {reason}")]
    Unavailable {
        /// What happened, lowercase, without the source's own text.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// One object in the source (a file, a key, a Consul service, a
    /// Kubernetes object) could not be turned into a service. It was skipped;
    /// the rest of the registry is fine. Not retryable: it stays until the
    /// object changes, and is shown until the registry's next Reset.
    #[error("invalid object {object}: {reason}")]
    InvalidObject {
        /// Names the object: a path with line and column, a key, a name.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Unavailable`] without a source.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// An [`Error::Unavailable`] caused by `source`.
    pub fn unavailable_from(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::InvalidObject`].
    pub fn invalid_object(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidObject {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// True when the registry's earlier contribution is now stale.
    pub fn makes_stale(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// The object this error is about, for errors about one object.
    pub fn object(&self) -> Option<&str> {
        match self {
            Error::InvalidObject { object, .. } => Some(object),
            Error::Unavailable { .. } => None,
        }
    }

    /// The message with every `source` appended, for logs and debug output.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

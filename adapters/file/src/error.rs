//! What can be wrong with a registry file.

use std::path::PathBuf;

use sextant_core::{Hostname, RuleKey, RuleProblems, ValidationErrors};

/// A problem with one registry file. The file's last good content, if any,
/// keeps being served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file named explicitly does not exist: it contributes no services.
    #[error("{path}: file not found")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file or directory could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// The file is not valid YAML or JSON, or has the wrong shape.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A service in the file failed validation.
    #[error("{path}:{line}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the service's `hostname` (0 when not found).
        line: usize,
        /// Every problem in that service.
        errors: ValidationErrors,
    },
    /// A route rule or destination policy in the file failed validation.
    #[error("{path}:{line}: {problems}")]
    InvalidRule {
        /// The file.
        path: PathBuf,
        /// 1-based line of the rule's entry (0 when not found).
        line: usize,
        /// What is wrong.
        problems: RuleProblems,
    },
    /// A rule (kind, namespace, name) defined in an earlier file is
    /// defined again.
    #[error("{path}: {key} is already defined in {first}; this definition is ignored")]
    DuplicateRule {
        /// The later file.
        path: PathBuf,
        /// The rule.
        key: RuleKey,
        /// The file that defines it first.
        first: PathBuf,
    },
    /// A hostname defined in an earlier file is defined again.
    #[error(
        "{path}:{line}: service {hostname:?} is already defined in {first}; this definition is ignored"
    )]
    Duplicate {
        /// The later file.
        path: PathBuf,
        /// 1-based line of the second definition (0 when not found).
        line: usize,
        /// The hostname.
        hostname: Hostname,
        /// The file that defines it first.
        first: PathBuf,
    },
    /// A ServiceEntry or WorkloadEntry, or part of one, is not served
    /// (the rest of it is): a host another entry declares first, a
    /// wildcard host, an address it cannot take, an invalid service.
    #[error("{path}:{line}: {object}: {message}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line of the entry's item (0 when not found).
        line: usize,
        /// `ServiceEntry NAMESPACE/NAME` or `WorkloadEntry NAMESPACE/NAME`.
        object: String,
        /// What is wrong.
        message: String,
    },
}

impl FileError {
    /// What is wrong, without the location.
    pub fn reason(&self) -> String {
        match self {
            FileError::NotFound { .. } => "file not found".to_owned(),
            FileError::Read { message, .. } => format!("cannot read: {message}"),
            FileError::Parse { message, .. } => message.clone(),
            FileError::Invalid { errors, .. } => errors.to_string(),
            FileError::InvalidRule { problems, .. } => problems.to_string(),
            FileError::DuplicateRule { key, first, .. } => format!(
                "{key} is already defined in {}; this definition is ignored",
                first.display()
            ),
            FileError::Entry {
                object, message, ..
            } => format!("{object}: {message}"),
            FileError::Duplicate {
                hostname, first, ..
            } => {
                format!(
                    "service {hostname:?} is already defined in {}; this definition is ignored",
                    first.display()
                )
            }
        }
    }

    /// `path[:line[:column]]`, naming the object for the aggregator's status.
    pub fn location(&self) -> String {
        match self {
            FileError::NotFound { path } | FileError::Read { path, .. } => {
                path.display().to_string()
            }
            FileError::Parse {
                path, line, column, ..
            } => format!("{}:{line}:{column}", path.display()),
            FileError::DuplicateRule { path, .. } => path.display().to_string(),
            FileError::Invalid { path, line, .. }
            | FileError::InvalidRule { path, line, .. }
            | FileError::Duplicate { path, line, .. }
            | FileError::Entry { path, line, .. } => {
                format!("{}:{line}", path.display())
            }
        }
    }
}

//! Errors of the CSI service layer, and the one place they become gRPC statuses
//! (the table is docs/errors.md).
//!
//! Lower layers (RouterOS client, node adapters) have their own error enums; they are converted
//! into [`ServiceError`] with the context an operator needs, and [`From<ServiceError>`] for
//! [`tonic::Status`] is the only mapping from errors to gRPC codes in the driver.

use routeros::error::RosError;

use crate::exec::ExecError;
use tonic::{Code, Status};

/// What went wrong while serving a CSI RPC.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The RPC exists in CSI but this version of rds-csi does not implement it. It is not
    /// advertised in the matching GetCapabilities answer, so a conforming CO never calls it.
    #[error(
        "{rpc} is not implemented by rds-csi {version}; it is not advertised in the plugin's \
         capabilities, so a conforming CO does not call it"
    )]
    Unimplemented { rpc: &'static str, version: &'static str },

    /// A request field is missing or malformed; the message names the field and the fix.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    /// No backend can take a new volume: topology or free space (CSI CreateVolume).
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another operation on the same volume is in flight (CSI: ABORTED, the CO retries).
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A node-side failure that is neither bad input nor a missing precondition.
    #[error("{0}")]
    Internal(String),

    /// An external command (mkfs, mount, ...) failed or passed its deadline.
    #[error("{context}: {source}")]
    Exec { context: String, source: ExecError },

    /// The RDS answered with an error, or could not be reached.
    #[error("{context}: {source}")]
    Rds { context: String, source: RosError },
}

impl ServiceError {
    pub fn rds(context: impl Into<String>) -> impl FnOnce(RosError) -> ServiceError {
        let context = context.into();
        move |source| ServiceError::Rds { context, source }
    }

    pub fn exec(context: impl Into<String>) -> impl FnOnce(ExecError) -> ServiceError {
        let context = context.into();
        move |source| ServiceError::Exec { context, source }
    }

    pub fn code(&self) -> Code {
        match self {
            ServiceError::Unimplemented { .. } => Code::Unimplemented,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::OutOfRange(_) => Code::OutOfRange,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Aborted(_) => Code::Aborted,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
            ServiceError::Exec { source: ExecError::Timeout { .. }, .. } => Code::DeadlineExceeded,
            ServiceError::Exec { .. } => Code::Internal,
            ServiceError::Rds { source, .. } => match source {
                RosError::NotFound(_) => Code::NotFound,
                RosError::AlreadyExists(_) => Code::AlreadyExists,
                RosError::NoSpace(_) => Code::ResourceExhausted,
                // Credentials or host key: the operator must fix the configuration; the CO retries.
                RosError::PermissionDenied(_) | RosError::Unavailable(_) => Code::Unavailable,
                RosError::Timeout(_) => Code::DeadlineExceeded,
                // The RDS rejected a command this driver built: a bug or an unsupported firmware.
                RosError::InvalidArgument(_) | RosError::Unexpected(_) => Code::Internal,
            },
        }
    }
}

/// A capacity range that cannot be satisfied: negative values are INVALID_ARGUMENT, sizes
/// outside what can be provisioned OUT_OF_RANGE (CSI CreateVolume, ControllerExpandVolume).
impl From<crate::core::capacity::SizeError> for ServiceError {
    fn from(e: crate::core::capacity::SizeError) -> Self {
        match e {
            crate::core::capacity::SizeError::Invalid(m) => ServiceError::InvalidArgument(m),
            crate::core::capacity::SizeError::OutOfRange(m) => ServiceError::OutOfRange(m),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_codes_with_actionable_messages() {
        let s = Status::from(ServiceError::Unimplemented { rpc: "CreateVolume", version: "0.1.0" });
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(s.message().contains("CreateVolume is not implemented by rds-csi 0.1.0"));
        let s = Status::from(ServiceError::InvalidArgument("volume_id is required".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "volume_id is required");
    }

    #[test]
    fn rds_errors_keep_their_text() {
        let cases = [
            (RosError::NoSpace("failure: not enough disk space".into()), Code::ResourceExhausted),
            (RosError::NotFound("no such item".into()), Code::NotFound),
            (RosError::AlreadyExists("x".into()), Code::AlreadyExists),
            (RosError::Unavailable("eof".into()), Code::Unavailable),
            (RosError::PermissionDenied("host key".into()), Code::Unavailable),
            (RosError::Timeout("slow".into()), Code::DeadlineExceeded),
            (RosError::InvalidArgument("bad command name".into()), Code::Internal),
            (RosError::Unexpected("?".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let raw = e.to_string();
            let s = Status::from(ServiceError::rds("creating volume pvc-1")(e));
            assert_eq!(s.code(), code, "{raw}");
            assert!(
                s.message().starts_with("creating volume pvc-1: ") && s.message().contains(&raw),
                "{}",
                s.message()
            );
        }
    }
}

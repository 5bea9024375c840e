//! Errors of the CSI service layer, and the one place they become gRPC statuses.
//!
//! Lower layers (RouterOS client, node adapters) have their own error enums; they are converted
//! into [`ServiceError`] with the context an operator needs, and [`From<ServiceError>`] for
//! [`tonic::Status`] is the only mapping from errors to gRPC codes in the driver.

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
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Unimplemented { .. } => Code::Unimplemented,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
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
}

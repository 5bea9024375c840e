//! The one error enum of the RouterOS client, detected from RouterOS's output text (RouterOS
//! exits 0 on failed commands, spec §4), never from an exit status alone.

/// What went wrong talking to the RDS. Every variant keeps the raw RouterOS (or transport)
/// text for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosError {
    #[error("not found on the RDS: {0}")]
    NotFound(String),
    #[error("already exists on the RDS: {0}")]
    AlreadyExists(String),
    #[error("the RDS storage pool is full: {0}")]
    NoSpace(String),
    #[error("the RDS rejected the command: {0}")]
    InvalidArgument(String),
    #[error("permission denied by the RDS: {0}")]
    PermissionDenied(String),
    #[error("the RDS is unreachable: {0}")]
    Unavailable(String),
    #[error("the RDS did not answer in time: {0}")]
    Timeout(String),
    #[error("unexpected answer from the RDS: {0}")]
    Unexpected(String),
}

impl RosError {
    /// Transport-level failures after which a mutation may or may not have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, RosError::Unavailable(_) | RosError::Timeout(_))
    }
    /// A short label for metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            RosError::NotFound(_) => "not_found",
            RosError::AlreadyExists(_) => "already_exists",
            RosError::NoSpace(_) => "no_space",
            RosError::InvalidArgument(_) => "invalid_argument",
            RosError::PermissionDenied(_) => "permission_denied",
            RosError::Unavailable(_) => "unavailable",
            RosError::Timeout(_) => "timeout",
            RosError::Unexpected(_) => "unexpected",
        }
    }
}

/// Classifies RouterOS error text (the first non-empty line of a failed command's output).
/// Formats from spec §4: `bad command name`, `syntax error`, `expected end of command`,
/// `expected command name`, `input does not match any value of`, `invalid value for
/// argument`, `value of X out of range`, `failure: ...`, `no such item`, `not enough
/// permissions`, `Script Error: ...`.
pub fn classify(text: &str) -> RosError {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
    let lower = line.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("no such item") {
        RosError::NotFound(line)
    } else if has("already exists") || has("already have") || has("duplicate") {
        RosError::AlreadyExists(line)
    } else if has("not enough space")
        || has("not enough disk space")
        || has("no space")
        || has("disk full")
    {
        RosError::NoSpace(line)
    } else if has("not enough permissions") || has("permission denied") || has("unauthorized") {
        RosError::PermissionDenied(line)
    } else if has("bad command name")
        || has("syntax error")
        || has("expected end of command")
        || has("expected command name")
        || has("input does not match any value")
        || has("invalid value")
        || has("out of range")
        || has("no such command")
    {
        RosError::InvalidArgument(line)
    } else if has("session closed") {
        RosError::Timeout(line)
    } else {
        RosError::Unexpected(line)
    }
}

/// Whether command output (of a line that prints nothing or JSON on success) is an error.
pub fn looks_like_error(output: &str) -> bool {
    let first = output.trim_start();
    !(first.is_empty()
        || first.starts_with('[')
        || first.starts_with('{')
        || first.starts_with('*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routeros_texts_map_to_kinds() {
        let cases = [
            ("no such item", "not_found"),
            ("failure: item with this name already exists", "already_exists"),
            ("failure: already have such entry", "already_exists"),
            ("failure: not enough disk space", "no_space"),
            ("not enough permissions (9)", "permission_denied"),
            ("bad command name frob (line 1 column 7)", "invalid_argument"),
            ("expected end of command (line 1 column 17)", "invalid_argument"),
            ("input does not match any value of type", "invalid_argument"),
            ("invalid value for argument file-size", "invalid_argument"),
            ("syntax error (line 1 column 3)", "invalid_argument"),
            ("value of nvme-tcp-server-port out of range (0..65535)", "invalid_argument"),
            ("Session closed", "timeout"),
            ("failure: something new", "unexpected"),
        ];
        for (text, kind) in cases {
            let e = classify(&format!("{text}\r\n"));
            assert_eq!(e.label(), kind, "{text}");
            assert!(e.to_string().contains(text), "raw text kept: {e}");
        }
    }

    #[test]
    fn output_shapes() {
        assert!(!looks_like_error(""));
        assert!(!looks_like_error("[{\"slot\":\"x\"}]\r\n"));
        assert!(!looks_like_error("*1F\r\n"));
        assert!(looks_like_error("failure: x\r\n"));
    }
}

//! Volume sizes. CSI "CreateVolume": the capacity range MUST be honoured; RouterOS stores the
//! exact bytes it is sent, so sizes are only rounded up to whole 4 KiB blocks (the NVMe
//! namespace's block size) and the minimum size.

pub const BLOCK: u64 = 4096;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// Why a capacity range cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// Negative values (INVALID_ARGUMENT).
    Invalid(String),
    /// Outside what can be provisioned (OUT_OF_RANGE).
    OutOfRange(String),
}

/// The size to provision for `required`/`limit` (0 = unset), within [`min`, `max`].
pub fn provision_size(required: i64, limit: i64, min: u64, max: u64) -> Result<u64, SizeError> {
    if required < 0 || limit < 0 {
        return Err(SizeError::Invalid("capacity_range values must not be negative".into()));
    }
    let (required, limit) = (required as u64, limit as u64);
    let size = required.max(min).div_ceil(BLOCK) * BLOCK;
    if limit > 0 && size > limit {
        return Err(SizeError::OutOfRange(format!(
            "capacity_range limit_bytes={limit} is below the smallest volume this driver can make ({size} bytes: \
             at least {min} bytes, in whole {BLOCK}-byte blocks); raise the limit"
        )));
    }
    if size > max {
        return Err(SizeError::OutOfRange(format!(
            "requested {required} bytes exceeds the maximum volume size of {max} bytes (--max-volume-size)"
        )));
    }
    Ok(size)
}

/// Whether an existing volume of `size` bytes satisfies `required`/`limit`.
pub fn compatible(size: u64, required: i64, limit: i64) -> bool {
    size >= required.max(0) as u64 && (limit <= 0 || size <= limit as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(provision_size(0, 0, GIB, 16 * TIB), Ok(GIB), "unset = the minimum");
        assert_eq!(provision_size(1, 0, GIB, 16 * TIB), Ok(GIB));
        assert_eq!(
            provision_size(10 * GIB as i64 + 1, 0, GIB, 16 * TIB),
            Ok(10 * GIB + BLOCK),
            "rounded up, never down"
        );
        assert_eq!(
            provision_size(1_500_000_000, 0, GIB, 16 * TIB),
            Ok(1_500_000_256),
            "decimal sizes are not truncated (Go driver bug)"
        );
        assert!(
            matches!(provision_size(0, 1000, GIB, 16 * TIB), Err(SizeError::OutOfRange(m)) if m.contains("limit_bytes=1000"))
        );
        assert!(
            matches!(provision_size(17 * TIB as i64, 0, GIB, 16 * TIB), Err(SizeError::OutOfRange(m)) if m.contains("--max-volume-size"))
        );
        assert!(matches!(provision_size(-1, 0, GIB, 16 * TIB), Err(SizeError::Invalid(_))));
        assert_eq!(
            provision_size(2 * GIB as i64, 2 * GIB as i64, GIB, 16 * TIB),
            Ok(2 * GIB),
            "exact size"
        );
    }

    #[test]
    fn compatibility() {
        assert!(compatible(2 * GIB, GIB as i64, 0));
        assert!(!compatible(GIB, 2 * GIB as i64, 0));
        assert!(!compatible(3 * GIB, GIB as i64, 2 * GIB as i64));
    }
}

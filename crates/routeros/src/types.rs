//! Validated values that reach RouterOS command lines. Pure: no I/O.
//!
//! Even though every value is quoted by [`crate::syntax::quote`], the constructors refuse
//! anything a RouterOS slot, NQN or file path should not contain, so a bad volume name is an
//! error at the edge rather than a strange disk on the RDS.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub why: String,
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> InvalidValue {
    InvalidValue { what, value: value.to_string(), why: why.into() }
}

/// A `/disk` slot name. RouterOS documents no charset (spec §5: UNKNOWN); we keep to
/// `[a-zA-Z0-9._-]`, start with an alphanumeric, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(String);

impl Slot {
    pub fn new(s: &str) -> Result<Slot, InvalidValue> {
        if s.is_empty() || s.len() > 128 {
            return Err(invalid("slot", s, "must be 1 to 128 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(invalid("slot", s, "must start with a letter or digit"));
        }
        if let Some(c) =
            s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(
                "slot",
                s,
                format!("contains {c:?}; allowed: letters, digits, '-', '_', '.'"),
            ));
        }
        Ok(Slot(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An NVMe Qualified Name: `nqn.` prefix, at most 223 bytes (NVMF_NQN_SIZE), printable ASCII
/// without spaces or quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    pub const MAX_LEN: usize = 223;

    pub fn new(s: &str) -> Result<Nqn, InvalidValue> {
        if !s.starts_with("nqn.") {
            return Err(invalid("NQN", s, "must start with \"nqn.\""));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("NQN", s, format!("is {} bytes; the NVMe limit is 223", s.len())));
        }
        if let Some(c) =
            s.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\\' | ',' | '$'))
        {
            return Err(invalid("NQN", s, format!("contains {c:?}")));
        }
        Ok(Nqn(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A file path on the RDS, kept without a leading slash (as `/file` names it). Segments are
/// `[a-zA-Z0-9._-]`, never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

impl FilePath {
    pub fn new(s: &str) -> Result<FilePath, InvalidValue> {
        let trimmed = s.trim_start_matches('/');
        if trimmed.is_empty() || trimmed.len() > 1024 {
            return Err(invalid("file path", s, "must be 1 to 1024 characters"));
        }
        for seg in trimmed.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(invalid("file path", s, "has an empty, '.' or '..' segment"));
            }
            if let Some(c) =
                seg.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(invalid(
                    "file path",
                    s,
                    format!("contains {c:?}; allowed: letters, digits, '-', '_', '.', '/'"),
                ));
            }
        }
        Ok(FilePath(trimmed.to_string()))
    }
    /// Without a leading slash (`/file` names, `file-path=` arguments).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// With a leading slash, as `print` shows `file-path`.
    pub fn absolute(&self) -> String {
        format!("/{}", self.0)
    }
    /// The first segment: the mount point of the pool holding the file.
    pub fn mount_point(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
    /// Whether `self` lies strictly inside `dir`.
    /// The directory holding this path (`None` for a top-level name).
    pub fn parent(&self) -> Option<FilePath> {
        self.0.rsplit_once('/').map(|(dir, _)| FilePath(dir.to_string()))
    }
    pub fn is_under(&self, dir: &FilePath) -> bool {
        self.0.len() > dir.0.len()
            && self.0.starts_with(&dir.0)
            && self.0.as_bytes()[dir.0.len()] == b'/'
    }
    pub fn join(&self, name: &str) -> Result<FilePath, InvalidValue> {
        FilePath::new(&format!("{}/{name}", self.0))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert!(Slot::new("pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b").is_ok());
        for bad in ["", "-x", "a b", "a\"b", "a;b", "ä", &"a".repeat(129)] {
            assert!(Slot::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nqns() {
        assert!(Nqn::new("nqn.2000-02.com.mikrotik:pvc-1").is_ok());
        assert!(Nqn::new(&format!("nqn.{}", "a".repeat(219))).is_ok());
        assert!(Nqn::new(&format!("nqn.{}", "a".repeat(220))).unwrap_err().why.contains("223"));
        for bad in ["pvc-1", "nqn.a b", "nqn.a\"b", "nqn.a,b"] {
            assert!(Nqn::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        let p = FilePath::new("/storage-pool/metal-csi/pvc-1.img").unwrap();
        assert_eq!(p.as_str(), "storage-pool/metal-csi/pvc-1.img");
        assert_eq!(p.absolute(), "/storage-pool/metal-csi/pvc-1.img");
        assert_eq!(p.mount_point(), "storage-pool");
        let dir = FilePath::new("storage-pool/metal-csi").unwrap();
        assert!(p.is_under(&dir));
        assert!(!dir.is_under(&dir));
        assert!(!FilePath::new("storage-pool/metal-csix/a").unwrap().is_under(&dir));
        for bad in ["", "/", "a//b", "a/../b", "a/./b", "a b", "a;b", "a$b"] {
            assert!(FilePath::new(bad).is_err(), "{bad}");
        }
    }
}

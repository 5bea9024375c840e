//! The REST side of the operations: each [`Op`] as a short sequence of `/rest` requests, and
//! their JSON answers (every value a string) parsed back. Pure: no I/O.

use serde_json::{Value, json};

use super::{Answer, Op, ReadFormat, answer_from_rows, objects, ssh_line};
use crate::{
    error::{RosError, classify},
    types::Nqn,
};

/// One REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCall {
    pub method: &'static str,
    /// Path below `/rest`, with the query string.
    pub path: String,
    pub body: Option<Value>,
}

fn call(method: &'static str, path: String, body: Option<Value>) -> RestCall {
    RestCall { method, path, body }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The REST requests of an op, in order (each is one round trip).
pub fn rest_calls(op: &Op) -> Vec<RestCall> {
    match op {
        Op::CreateDisk(d) => {
            let mut body = json!({
                "type": "file", "slot": d.slot.as_str(), "file-path": d.file.as_str(),
                "file-size": d.size.to_string(), "comment": d.comment,
            });
            if d.export {
                body["nvme-tcp-export"] = "yes".into();
                body["nvme-tcp-server-port"] = d.port.to_string().into();
                if d.server_nqn_supported {
                    body["nvme-tcp-server-nqn"] = d.nqn.as_str().into();
                }
                if !d.allowed_hosts.is_empty() {
                    let hosts: Vec<&str> = d.allowed_hosts.iter().map(Nqn::as_str).collect();
                    body["nvme-tcp-server-allow-host-name"] = hosts.join(",").into();
                }
            }
            if let Some(src) = &d.copy_from {
                body["copy-from"] = src.as_str().into();
            }
            vec![call("PUT", "/disk".into(), Some(body))]
        }
        Op::GetDisk(slot) => vec![call("GET", format!("/disk?slot={}", enc(slot.as_str())), None)],
        Op::ListDisks { .. } => vec![call("GET", "/disk?type=file".into(), None)],
        Op::SetFileSize { slot, size } => vec![
            call(
                "POST",
                "/disk/set".into(),
                Some(json!({"numbers": slot.as_str(), "file-size": size.to_string()})),
            ),
            call("GET", format!("/disk?slot={}", enc(slot.as_str())), None),
        ],
        Op::SetExport { slot, export, allowed_hosts } => {
            let hosts: Vec<&str> = allowed_hosts.iter().map(Nqn::as_str).collect();
            vec![call(
                "POST",
                "/disk/set".into(),
                Some(json!({
                    "numbers": slot.as_str(), "nvme-tcp-export": if *export { "yes" } else { "no" },
                    "nvme-tcp-server-allow-host-name": hosts.join(","),
                })),
            )]
        }
        Op::SetComment { slot, comment } => {
            vec![call(
                "POST",
                "/disk/set".into(),
                Some(json!({"numbers": slot.as_str(), "comment": comment})),
            )]
        }
        Op::SetCompress { slot, compress } => {
            vec![call(
                "POST",
                "/disk/set".into(),
                Some(
                    json!({"numbers": slot.as_str(), "compress": if *compress { "yes" } else { "no" }}),
                ),
            )]
        }
        // REST cannot join commands; /rest/execute runs the same joined line as SSH, so a
        // delete stays one request. It answers 200 even on failure: `ret` holds the text.
        Op::DeleteDisk { .. } | Op::DeleteVolumeDisk { .. } | Op::RemoveLeftover { .. } => {
            vec![call(
                "POST",
                "/execute".into(),
                Some(json!({"script": ssh_line(op, ReadFormat::Json)})),
            )]
        }
        Op::RemoveFile(file) => {
            vec![call("POST", "/file/remove".into(), Some(json!({"numbers": file.as_str()})))]
        }
        Op::ListFiles { .. } => vec![call("GET", "/file?type=file".into(), None)],
        Op::Pool { mount_point } => {
            vec![call("GET", format!("/disk?mount-point={}", enc(mount_point)), None)]
        }
        Op::CopyDisk { src, dst, range } => {
            let mut body = json!({"src": src.as_str(), "dst": dst.as_str()});
            if let Some((offset, len)) = range {
                body["src-offset"] = offset.to_string().into();
                body["dst-offset"] = offset.to_string().into();
                body["size"] = len.to_string().into();
            }
            vec![call("POST", "/disk/copy".into(), Some(body))]
        }
        Op::CopyFile { src, dst } => {
            vec![call(
                "POST",
                "/file/copy".into(),
                Some(json!({"numbers": src.as_str(), "name": dst.as_str()})),
            )]
        }
        Op::System => vec![
            call("GET", "/system/resource".into(), None),
            call("GET", "/system/identity".into(), None),
        ],
        Op::Clock => vec![call("GET", "/system/clock".into(), None)],
        Op::AddSubvolume(v) => {
            let mut body = json!({"fs": v.fs, "name": v.name.as_str()});
            if let Some(parent) = &v.parent {
                body["parent"] = parent.as_str().into();
                body["read-only"] = if v.read_only { "yes" } else { "no" }.into();
            }
            vec![call("PUT", "/disk/btrfs/subvolume".into(), Some(body))]
        }
        Op::GetSubvolume(name) => {
            vec![call("GET", format!("/disk/btrfs/subvolume?name={}", enc(name.as_str())), None)]
        }
        // `[find ...]` makes a missing subvolume a no-op; REST has no find: /rest/execute.
        Op::RemoveSubvolume(_) => {
            vec![call(
                "POST",
                "/execute".into(),
                Some(json!({"script": ssh_line(op, ReadFormat::Json)})),
            )]
        }
    }
}

/// Whether a REST failure of `call` within `op` means "already as wanted" (idempotent removes).
pub fn rest_tolerates(op: &Op, call: &RestCall, err: &RosError) -> bool {
    matches!(op, Op::DeleteDisk { .. } | Op::RemoveFile(_))
        && call.path.ends_with("/remove")
        && matches!(err, RosError::NotFound(_))
}

/// Maps an HTTP error answer (`{"error":N,"message":...,"detail":...}`) to a [`RosError`].
pub fn rest_error(status: u16, body: &str) -> RosError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let detail = v.get("detail").and_then(Value::as_str).unwrap_or("");
    let message = v.get("message").and_then(Value::as_str).unwrap_or("");
    let text =
        if detail.is_empty() { format!("HTTP {status} {message}") } else { detail.to_string() };
    match status {
        401 | 403 => RosError::PermissionDenied(text),
        404 => RosError::NotFound(text),
        406 => RosError::InvalidArgument(text),
        500..=599 => RosError::Unavailable(text),
        _ => classify(&text),
    }
}

/// Parses the JSON answers of [`rest_calls`] (one per call, in order).
pub fn parse_rest(op: &Op, bodies: &[Value]) -> Result<Answer, RosError> {
    let rows = |i: usize| bodies.get(i).cloned().map(objects).unwrap_or(Ok(Vec::new()));
    match op {
        Op::CreateDisk(_) => answer_from_rows(op, rows(0)?, None),
        Op::GetDisk(_)
        | Op::ListDisks { .. }
        | Op::ListFiles { .. }
        | Op::Pool { .. }
        | Op::GetSubvolume(_) => answer_from_rows(op, rows(0)?, None),
        Op::SetFileSize { .. } => answer_from_rows(op, rows(1)?, None),
        Op::DeleteDisk { .. }
        | Op::DeleteVolumeDisk { .. }
        | Op::RemoveLeftover { .. }
        | Op::RemoveSubvolume(_) => {
            // Errors come back inside a 200 answer (spec §3.1): read them from the text.
            let ret =
                bodies.first().and_then(|b| b.get("ret")).and_then(Value::as_str).unwrap_or("");
            if crate::error::looks_like_error(ret) {
                Err(crate::error::classify(ret))
            } else {
                Ok(Answer::Done)
            }
        }
        Op::System => {
            let identity = match bodies.get(1) {
                Some(Value::Object(m)) => Some(m.clone()),
                _ => None,
            };
            answer_from_rows(op, rows(0)?, identity)
        }
        Op::Clock => answer_from_rows(op, rows(0)?, None),
        _ => Ok(Answer::Done),
    }
}

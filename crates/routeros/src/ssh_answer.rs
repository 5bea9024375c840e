//! The answer to an SSH command line: RouterOS prints either JSON (`:serialize`, the default)
//! or its human `print detail` form (old firmware, [`crate::detail`]); this decides which
//! parser reads the output and detects errors from the text. Pure: no I/O.

use serde_json::Value;

use crate::{
    error::{RosError, classify, looks_like_error},
    ops::{Answer, Op, ReadFormat, answer_from_rows, objects},
};

/// Parses the output of [`crate::ops::ssh_line`]. Errors are detected from the text.
pub fn parse_ssh(op: &Op, output: &str, format: ReadFormat) -> Result<Answer, RosError> {
    let output = output.replace("\r\n", "\n");
    if looks_like_error(&output) && format == ReadFormat::Json {
        return Err(classify(&output));
    }
    let reads = !matches!(
        op,
        Op::SetExport { .. }
            | Op::SetComment { .. }
            | Op::SetCompress { .. }
            | Op::DeleteDisk { .. }
            | Op::DeleteVolumeDisk { .. }
            | Op::RemoveFile(_)
            | Op::RemoveLeftover { .. }
            | Op::CopyDisk { .. }
            | Op::CopyFile { .. }
            | Op::AddSubvolume(_)
            | Op::RemoveSubvolume(_)
    );
    if !reads {
        return if output.trim().is_empty() { Ok(Answer::Done) } else { Err(classify(&output)) };
    }
    match format {
        ReadFormat::Json => {
            let mut docs = output.lines().filter(|l| !l.trim().is_empty()).map(|l| {
                serde_json::from_str::<Value>(l)
                    .map_err(|e| RosError::Unexpected(format!("bad JSON ({e}): {l}")))
            });
            let rows = objects(docs.next().unwrap_or(Ok(Value::Array(Vec::new())))?)?;
            let extra = docs.next().transpose()?.and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            });
            answer_from_rows(op, rows, extra)
        }
        ReadFormat::Detail => crate::detail::answer(op, &output),
    }
}

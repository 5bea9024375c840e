//! The one runner for external commands (mkfs, blkid, resize2fs, xfs_growfs, mount, umount,
//! losetup): every call has a deadline, the process is killed when it passes, stdin is
//! `/dev/null` (so a tool that would ask a question gets EOF and stops), and the output is
//! captured into the error. The Go driver ran these without timeouts (incident 18).

use std::{process::Stdio, time::Duration};

use tokio::process::Command;

/// Every program the driver runs, by name through `PATH`; [`run`] refuses any other. The
/// container image holds exactly these (deploy/image/assemble-rootfs; a test keeps the two
/// lists equal), so a new call here without a new tool in the image cannot pass CI.
pub const TOOLS: &[&str] =
    &["blkid", "losetup", "mkfs.ext4", "mkfs.xfs", "mount", "resize2fs", "umount", "xfs_growfs"];

/// What a finished command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stderr and stdout together, trimmed, for error messages.
    pub fn text(&self) -> String {
        let mut s = self.stderr.trim().to_string();
        let out = self.stdout.trim();
        if !out.is_empty() {
            if !s.is_empty() {
                s.push_str(" | ");
            }
            s.push_str(out);
        }
        if s.len() > 2000 {
            let mut cut = 2000;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` is not one of the tools the node image holds ({})", TOOLS.join(", "))]
    NotATool { program: String },
    #[error("cannot run `{command}`: {source} (is it installed in the node image?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` did not finish within {}s and was killed", timeout.as_secs_f64())]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed (exit {}): {}", code.map_or("by signal".to_string(), |c| c.to_string()), output)]
    Failed { command: String, code: Option<i32>, output: String },
}

fn display(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args` and returns its output whatever the exit code; errors only when it
/// cannot start or passes `timeout` (then it is killed).
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Output, ExecError> {
    if !TOOLS.contains(&program) {
        return Err(ExecError::NotATool { program: program.to_string() });
    }
    run_any(program, args, timeout).await
}

async fn run_any(program: &str, args: &[&str], timeout: Duration) -> Result<Output, ExecError> {
    let command = display(program, args);
    tracing::debug!(%command, "exec");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn { command: command.clone(), source })?;
    // Dropping the future on timeout drops the child, which kills it (kill_on_drop).
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(ExecError::Timeout { command, timeout }),
        Ok(Err(source)) => Err(ExecError::Spawn { command, source }),
        Ok(Ok(out)) => Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}

/// Like [`run`], but a non-zero exit is an error carrying the output.
pub async fn run_ok(program: &str, args: &[&str], timeout: Duration) -> Result<Output, ExecError> {
    ok(program, args, run(program, args, timeout).await?)
}

fn ok(program: &str, args: &[&str], out: Output) -> Result<Output, ExecError> {
    if out.success() {
        Ok(out)
    } else {
        Err(ExecError::Failed {
            command: display(program, args),
            code: out.code,
            output: out.text(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = run_any("sh", &["-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        assert_eq!(out.text(), "err | out");
        let script = ["-c", "echo boom >&2; exit 1"];
        let out = run_any("sh", &script, Duration::from_secs(5)).await.unwrap();
        let err = ok("sh", &script, out).unwrap_err();
        assert_eq!(err.to_string(), "`sh -c echo boom >&2; exit 1` failed (exit 1): boom");
    }

    #[tokio::test]
    async fn kills_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("sleep 2; touch {}", marker.display());
        let started = Instant::now();
        let err = run_any("sh", &["-c", &script], Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the timed-out process was not killed");
    }

    #[tokio::test]
    async fn stdin_is_closed_so_questions_get_eof() {
        let out =
            run_any("sh", &["-c", "read answer; echo \"got:$answer:$?\""], Duration::from_secs(5))
                .await
                .unwrap();
        assert_eq!(out.stdout, "got::1\n");
    }

    #[tokio::test]
    async fn missing_program_says_so() {
        let err = run_any("no-such-tool-rds", &[], Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("is it installed"), "{err}");
    }

    #[tokio::test]
    async fn only_the_image_tools_run() {
        let err = run("sh", &["-c", "true"], Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, ExecError::NotATool { .. }), "{err}");
        assert!(err.to_string().contains("blkid, losetup"), "{err}");
        let mut sorted = TOOLS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, TOOLS, "kept sorted, as the image script lists them");
    }
}

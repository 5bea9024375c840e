//! [`Rds`]: the typed RDS API the controller uses, over either transport.
//!
//! - Reads are retried on transport failures (with backoff) until the call's deadline.
//! - Mutations are idempotent under partial failure: after an ambiguous failure (the
//!   connection dropped, a timeout) the client *looks* before acting again, so a create whose
//!   answer was lost converges on the disk it made: no duplicate, no spurious error.
//! - Every mutation is written once to the audit log (target `audit`): operation, subject,
//!   duration, outcome and the RouterOS text of a failure.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    error::RosError,
    ops::{Answer, Clock, Disk, FileEntry, NewDisk, NewSubvolume, Op, Pool, Subvolume, SystemInfo},
    transport::{Backoff, Transport},
    types::{FilePath, Nqn, Slot},
};

/// How long a call may keep retrying, and how fast.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total time a call may take including retries (CSI sidecars time out at 60–300 s).
    pub deadline: Duration,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(60),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(16),
        }
    }
}

#[derive(Clone)]
pub struct Rds {
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Rds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rds").field("transport", &self.transport.name()).finish()
    }
}

/// Whether `disk` is what `want` asked for (same file, size at least, same NQN when sent).
fn same_disk(disk: &Disk, want: &NewDisk) -> bool {
    disk.file.as_deref() == Some(want.file.as_str())
        && disk.size >= want.size
        && disk.export == want.export
        && (!want.export
            || !want.server_nqn_supported
            || disk.nqn.as_deref() == Some(want.nqn.as_str()))
}

fn unexpected(op: &Op, answer: Answer) -> RosError {
    RosError::Unexpected(format!("{} answered {answer:?}", op.name()))
}

impl Rds {
    pub fn new(transport: Arc<dyn Transport>, retry: RetryPolicy) -> Rds {
        Rds { transport, retry }
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Runs `op`, retrying transport failures; before re-sending a mutation after an
    /// ambiguous failure, `look` decides whether it already took effect.
    async fn run<F, Fut>(&self, op: &Op, look: F) -> Result<Answer, RosError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Answer>, RosError>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.retry.initial, self.retry.max);
        let mut ambiguous = false;
        let result = loop {
            if ambiguous && op.is_mutation() {
                match look().await {
                    Ok(Some(done)) => break Ok(done),
                    Ok(None) => {}
                    Err(e) if e.is_ambiguous() => {
                        if let Some(e) = self.wait(&mut backoff, started, e).await {
                            break Err(e);
                        }
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            match self.transport.call(op).await {
                Err(e) if e.is_ambiguous() => {
                    ambiguous = true;
                    if let Some(e) = self.wait(&mut backoff, started, e).await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        if op.is_mutation() {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(_) => {
                    tracing::info!(target: "audit", op = op.name(), subject = %op.subject(), duration_ms = ms, outcome = "ok", transport = self.transport.name())
                }
                Err(e) => {
                    tracing::warn!(target: "audit", op = op.name(), subject = %op.subject(), duration_ms = ms, outcome = e.label(), error = %e, transport = self.transport.name())
                }
            }
        }
        result
    }

    /// Sleeps the next backoff step, or gives up (returning the last error) at the deadline.
    async fn wait(
        &self,
        backoff: &mut Backoff,
        started: Instant,
        last: RosError,
    ) -> Option<RosError> {
        let delay = backoff.next_delay();
        if started.elapsed() + delay > self.retry.deadline {
            return Some(last);
        }
        tracing::debug!(error = %last, retry_in_ms = delay.as_millis() as u64, "RDS call failed; retrying");
        tokio::time::sleep(delay).await;
        None
    }

    async fn read(&self, op: Op) -> Result<Answer, RosError> {
        self.run(&op, || async { Ok(None) }).await
    }

    pub async fn get_disk(&self, slot: &Slot) -> Result<Option<Disk>, RosError> {
        let op = Op::GetDisk(slot.clone());
        match self.read(op.clone()).await? {
            Answer::MaybeDisk(d) => Ok(d),
            other => Err(unexpected(&op, other)),
        }
    }

    /// Creates a file disk exported over NVMe/TCP, or returns the identical disk that already
    /// exists (a retried create). A different disk in the slot is `AlreadyExists`.
    pub async fn create_disk(&self, want: &NewDisk) -> Result<Disk, RosError> {
        let op = Op::CreateDisk(want.clone());
        let look = || async {
            Ok(match self.transport.call(&Op::GetDisk(want.slot.clone())).await? {
                Answer::MaybeDisk(Some(d)) if same_disk(&d, want) => Some(Answer::Disk(d)),
                Answer::MaybeDisk(Some(d)) => {
                    return Err(RosError::AlreadyExists(format!(
                        "slot {} holds a different disk: {d:?}",
                        want.slot
                    )));
                }
                _ => None,
            })
        };
        match self.run(&op, look).await {
            Ok(Answer::Disk(d)) => Ok(d),
            Ok(other) => Err(unexpected(&op, other)),
            // The slot is taken: converge when it is our disk.
            Err(RosError::AlreadyExists(text)) => match self.get_disk(&want.slot).await? {
                Some(d) if same_disk(&d, want) => Ok(d),
                _ => Err(RosError::AlreadyExists(text)),
            },
            Err(e) => Err(e),
        }
    }

    /// Creates a file disk by sending the add first (one round trip when the slot is free),
    /// looking only when the add fails or its answer is lost. Returns the disk and whether
    /// it was there before (a different disk, or this one from an earlier call): the caller
    /// compares, as CSI's idempotency rule wants. RouterOS refuses an add into a taken slot
    /// before it touches any file (an item is addressed by its slot), so the add never
    /// changes a disk that exists; the emulator does the same.
    pub async fn create_or_find_disk(&self, want: &NewDisk) -> Result<(Disk, bool), RosError> {
        let op = Op::CreateDisk(want.clone());
        // After a lost answer: our own add (the same disk) counts as made now.
        let look = || async {
            Ok(match self.transport.call(&Op::GetDisk(want.slot.clone())).await? {
                Answer::MaybeDisk(Some(d)) if same_disk(&d, want) => Some(Answer::Disk(d)),
                Answer::MaybeDisk(Some(d)) => Some(Answer::MaybeDisk(Some(d))),
                _ => None,
            })
        };
        match self.run(&op, look).await {
            Ok(Answer::Disk(d)) => Ok((d, false)),
            Ok(Answer::MaybeDisk(Some(d))) => Ok((d, true)),
            Ok(other) => Err(unexpected(&op, other)),
            // Refused: the slot may be taken (RouterOS's exact words for that are not known,
            // spec §4), so look once whatever the text said.
            Err(e) if !e.is_ambiguous() => match self.get_disk(&want.slot).await? {
                Some(d) => Ok((d, true)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub async fn list_disks(&self, slot_prefix: &str) -> Result<Vec<Disk>, RosError> {
        let op = Op::ListDisks { slot_prefix: slot_prefix.to_string() };
        match self.read(op.clone()).await? {
            Answer::Disks(d) => Ok(d),
            other => Err(unexpected(&op, other)),
        }
    }

    /// Sets the exact file size and returns the disk as re-read.
    pub async fn set_file_size(&self, slot: &Slot, size: u64) -> Result<Disk, RosError> {
        let op = Op::SetFileSize { slot: slot.clone(), size };
        match self.run(&op, || async { Ok(None) }).await? {
            Answer::Disk(d) => Ok(d),
            other => Err(unexpected(&op, other)),
        }
    }

    pub async fn set_export(
        &self,
        slot: &Slot,
        export: bool,
        allowed_hosts: &[Nqn],
    ) -> Result<(), RosError> {
        let op =
            Op::SetExport { slot: slot.clone(), export, allowed_hosts: allowed_hosts.to_vec() };
        self.run(&op, || async { Ok(None) }).await.map(|_| ())
    }

    pub async fn set_comment(&self, slot: &Slot, comment: &str) -> Result<(), RosError> {
        let op = Op::SetComment { slot: slot.clone(), comment: comment.to_string() };
        self.run(&op, || async { Ok(None) }).await.map(|_| ())
    }

    /// Makes a btrfs subvolume (or a snapshot of `parent`), or finds the identical one a lost
    /// answer already made; another subvolume of that name is `AlreadyExists`.
    pub async fn add_subvolume(&self, want: &NewSubvolume) -> Result<(), RosError> {
        let op = Op::AddSubvolume(want.clone());
        let same = |v: &Subvolume| {
            v.read_only == (want.parent.is_some() && want.read_only)
                && v.parent.as_deref() == want.parent.as_ref().map(Slot::as_str)
        };
        let look = || async {
            match self.transport.call(&Op::GetSubvolume(want.name.clone())).await? {
                Answer::MaybeSubvolume(Some(v)) if same(&v) => Ok(Some(Answer::Done)),
                Answer::MaybeSubvolume(Some(v)) => Err(RosError::AlreadyExists(format!(
                    "subvolume {} exists and differs: {v:?}",
                    want.name
                ))),
                _ => Ok(None),
            }
        };
        match self.run(&op, look).await {
            Ok(_) => Ok(()),
            Err(RosError::AlreadyExists(text)) => match self.get_subvolume(&want.name).await? {
                Some(v) if same(&v) => Ok(()),
                _ => Err(RosError::AlreadyExists(text)),
            },
            Err(e) => Err(e),
        }
    }

    pub async fn get_subvolume(&self, name: &Slot) -> Result<Option<Subvolume>, RosError> {
        let op = Op::GetSubvolume(name.clone());
        match self.read(op.clone()).await? {
            Answer::MaybeSubvolume(v) => Ok(v),
            other => Err(unexpected(&op, other)),
        }
    }

    /// Removes a subvolume and what is in it; a missing one is success.
    pub async fn remove_subvolume(&self, name: &Slot) -> Result<(), RosError> {
        self.run(&Op::RemoveSubvolume(name.clone()), || async { Ok(None) }).await.map(|_| ())
    }

    /// Sets the disk's `compress` property (RouterOS 7.18+).
    pub async fn set_compress(&self, slot: &Slot, compress: bool) -> Result<(), RosError> {
        let op = Op::SetCompress { slot: slot.clone(), compress };
        self.run(&op, || async { Ok(None) }).await.map(|_| ())
    }

    /// Removes the disk and its file; a missing disk or file is success.
    pub async fn delete_disk(&self, slot: &Slot, file: &FilePath) -> Result<(), RosError> {
        let op = Op::DeleteDisk { slot: slot.clone(), file: file.clone() };
        self.run(&op, || async { Ok(None) }).await.map(|_| ())
    }

    /// DeleteVolume in one round trip ([`Op::DeleteVolumeDisk`]): `true` when the disk (or,
    /// with no disk, a leftover file) is gone; `false` when the slot holds a disk that is not
    /// the plain case, which is left untouched for the caller to look at.
    pub async fn delete_volume_disk(
        &self,
        slot: &Slot,
        bases: &[FilePath],
        keep_comment: &str,
    ) -> Result<bool, RosError> {
        if bases.is_empty() {
            return Err(RosError::InvalidArgument("no allowed base path to delete under".into()));
        }
        let op = Op::DeleteVolumeDisk {
            slot: slot.clone(),
            bases: bases.to_vec(),
            keep_comment: keep_comment.to_string(),
        };
        // Idempotent: sending it again after a lost answer is safe.
        match self.run(&op, || async { Ok(None) }).await {
            Ok(_) => Ok(true),
            Err(e) if !e.is_ambiguous() && e.to_string().contains(crate::ops::KEPT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_file(&self, file: &FilePath) -> Result<(), RosError> {
        self.run(&Op::RemoveFile(file.clone()), || async { Ok(None) }).await.map(|_| ())
    }

    /// Removes every file named `name` under the `bases` (one round trip; none is fine).
    pub async fn remove_leftover(&self, bases: &[FilePath], name: &str) -> Result<(), RosError> {
        let name = Slot::new(name).map_err(|e| RosError::InvalidArgument(e.to_string()))?;
        let op = Op::RemoveLeftover { bases: bases.to_vec(), name };
        self.run(&op, || async { Ok(None) }).await.map(|_| ())
    }

    pub async fn list_files(&self, under: &FilePath) -> Result<Vec<FileEntry>, RosError> {
        let op = Op::ListFiles { under: under.clone() };
        match self.read(op.clone()).await? {
            Answer::Files(f) => Ok(f),
            other => Err(unexpected(&op, other)),
        }
    }

    pub async fn pool(&self, mount_point: &str) -> Result<Option<Pool>, RosError> {
        let op = Op::Pool { mount_point: mount_point.to_string() };
        match self.read(op.clone()).await? {
            Answer::Pool(p) => Ok(p),
            other => Err(unexpected(&op, other)),
        }
    }

    /// Block copy `src` → `dst`, optionally only `(offset, length)` bytes. The range is
    /// copied again after an ambiguous failure (the same bytes to the same place: the result
    /// is the same), but only after looking that both disks still exist: a vanished side is
    /// NotFound, never a copy into or from something else.
    pub async fn copy_disk(
        &self,
        src: &Slot,
        dst: &Slot,
        range: Option<(u64, u64)>,
    ) -> Result<(), RosError> {
        let op = Op::CopyDisk { src: src.clone(), dst: dst.clone(), range };
        let look = || async {
            for side in [src, dst] {
                if let Answer::MaybeDisk(None) =
                    self.transport.call(&Op::GetDisk(side.clone())).await?
                {
                    return Err(RosError::NotFound(format!(
                        "disk {side} vanished during the copy"
                    )));
                }
            }
            Ok(None)
        };
        self.run(&op, look).await.map(|_| ())
    }

    /// `/file/copy` (RouterOS 7.23+). After an ambiguous failure it looks first: a
    /// destination of the source's size means the copy went through; a partial one is
    /// removed and copied again; a missing source is NotFound.
    pub async fn copy_file(&self, src: &FilePath, dst: &FilePath) -> Result<(), RosError> {
        let op = Op::CopyFile { src: src.clone(), dst: dst.clone() };
        let look = || async {
            // One listing when both files share a directory (a snapshot beside its volume).
            let list = |dir: Option<FilePath>| async move {
                let under = dir.ok_or_else(|| {
                    RosError::InvalidArgument("a file copy needs files inside a directory".into())
                })?;
                let op = Op::ListFiles { under };
                match self.transport.call(&op).await? {
                    Answer::Files(files) => Ok(files),
                    other => Err(unexpected(&op, other)),
                }
            };
            let src_dir = list(src.parent()).await?;
            let dst_dir = if dst.parent() == src.parent() {
                src_dir.clone()
            } else {
                list(dst.parent()).await?
            };
            let size_of = |files: &[FileEntry], f: &FilePath| {
                files.iter().find(|e| e.name == f.as_str()).map(|e| e.size)
            };
            let Some(want) = size_of(&src_dir, src) else {
                return Err(RosError::NotFound(format!("file {src} vanished during the copy")));
            };
            match size_of(&dst_dir, dst) {
                Some(got) if got.is_some() && got == want => Ok(Some(Answer::Done)),
                Some(_) => {
                    self.transport.call(&Op::RemoveFile(dst.clone())).await?;
                    Ok(None)
                }
                None => Ok(None),
            }
        };
        self.run(&op, look).await.map(|_| ())
    }

    pub async fn system(&self) -> Result<SystemInfo, RosError> {
        match self.read(Op::System).await? {
            Answer::System(s) => Ok(s),
            other => Err(unexpected(&Op::System, other)),
        }
    }

    /// The RDS's clock (`rds-csi doctor`).
    pub async fn clock(&self) -> Result<Clock, RosError> {
        match self.read(Op::Clock).await? {
            Answer::Clock(c) => Ok(c),
            other => Err(unexpected(&Op::Clock, other)),
        }
    }
}

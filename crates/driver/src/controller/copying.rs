//! The copy engine of snapshots, restores, clones and group snapshots (docs/snapshots.md).
//!
//! Copies run in the background in resumable chunks; an RPC waits at most [`QUICK_WAIT`].
//!
//! **Point in time.** A copy whose source may be written (exported to any host but the fenced
//! placeholder) holds the source's writes for the whole copy: it withdraws the NVMe/TCP export,
//! so the initiators queue their I/O (`ctrl_loss_tmo=-1`) and reconnect when it is given back.
//! The copy is then one instant of the source, and the sources of a group snapshot share that
//! instant. The pause is bounded (`--snapshot-pause-max-seconds`): a copy that the measured
//! rate says cannot finish in time is refused before it starts, and one that overruns is
//! stopped, its export given back and its partial data left not ready (never reported ready,
//! never restorable), answering FAILED_PRECONDITION. The comment of every destination records
//! the hold (`paused=<hosts>`) before the export is withdrawn, so a controller that dies
//! mid-copy gives the export back on the next call.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use routeros::{
    ops::Disk,
    types::{Nqn, Slot},
};

use super::{
    attachments::FENCED_HOST_NQN,
    backend::Backend,
    copies::{Copies, Failure, estimate},
};
use crate::{core::snapshots::CopyRecord, error::ServiceError};

/// Bytes copied per `/disk copy` command: short enough for the command deadline, and the unit
/// of resumption after a restart.
pub const CHUNK: u64 = 1 << 30;

/// Bytes per command while a copy holds its sources' writes: the bound is checked between
/// chunks, so a smaller chunk stops an overrunning copy sooner.
pub const HELD_CHUNK: u64 = 128 << 20;

/// How much older than the pause bound a recorded hold must be before a controller that does
/// not run its copy gives the export back.
pub const HOLD_MARGIN: Duration = Duration::from_secs(120);

/// How long an RPC waits for a fresh copy before answering "not ready yet".
pub const QUICK_WAIT: Duration = Duration::from_secs(2);

/// One copy: `total` bytes of `src` into `dst`, whose comment is `record`.
#[derive(Debug, Clone)]
pub struct Job {
    pub src: Slot,
    pub dst: Slot,
    pub total: u64,
    pub record: CopyRecord,
}

/// Whether `disk`'s export lets any initiator in: exported, to any host but the fence
/// placeholder.
fn open_export(disk: &Disk) -> bool {
    disk.export && !(disk.allowed_hosts.len() == 1 && disk.allowed_hosts[0] == FENCED_HOST_NQN)
}

/// Bytes the jobs still have to copy.
fn remaining(jobs: &[Job]) -> u64 {
    jobs.iter().map(|j| j.total - j.record.copying.unwrap_or(j.total)).sum()
}

/// The sources whose writes this copy holds (with their allowed hosts), released in
/// [`Copies`] when the copy ends, however it ends.
struct Holds<'a> {
    copies: &'a Copies,
    held: Vec<(Slot, Vec<String>)>,
}

impl Drop for Holds<'_> {
    fn drop(&mut self) {
        for (s, _) in &self.held {
            self.copies.release(s.as_str());
        }
    }
}

fn retry(context: &str) -> impl Fn(routeros::error::RosError) -> Failure + '_ {
    move |e| Failure::Retry(format!("{context}: {e}"))
}

impl Backend {
    /// Whether a node may be writing `disk`: its export lets initiators in and a node holds it
    /// (a VolumeAttachment, or this process's grant). A node detaches only after NodeUnstage
    /// disconnected it, and ControllerPublish waits while a copy reads the volume, so a volume
    /// no node holds has no writer. An unreadable attachment record is an error: never guess.
    pub(super) async fn may_be_written(&self, disk: &Disk) -> Result<bool, ServiceError> {
        if !open_export(disk) {
            return Ok(false);
        }
        let vid = self.external(&disk.slot);
        let rec = self.fencing.cluster.recorded(&vid).await.map_err(|e| {
            ServiceError::Unavailable(format!(
                "cannot tell whether {} is attached ({e}); the CO retries",
                disk.slot
            ))
        })?;
        // Every holder counts, also one whose Node object is gone: a partitioned node may
        // still be writing.
        Ok(!self.fencing.holders(&vid, &rec).is_empty())
    }

    /// The guard of volume `slot`, waiting for a running RPC on it to end (at most 30 s).
    async fn volume_guard(&self, slot: &Slot) -> Result<crate::locks::Guard, Failure> {
        for _ in 0..300 {
            if let Ok(g) = self.locks.try_lock(slot.as_str(), "volume") {
                return Ok(g);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Failure::Retry(format!("volume {slot} stayed busy with another call for 30 s")))
    }

    /// Starts `jobs` (one copy, or every member of a group, sharing one instant) unless they
    /// run here already; returns whether all are complete after a short wait. The failure of
    /// the previous attempt is reported (UNAVAILABLE, and the copy starts again; or
    /// FAILED_PRECONDITION when the pause bound refused it).
    pub(super) async fn ensure_copies(
        self: &Arc<Self>,
        jobs: Vec<Job>,
    ) -> Result<bool, ServiceError> {
        let dsts: Vec<String> = jobs.iter().map(|j| j.dst.to_string()).collect();
        let earlier = {
            let mut failed = self.copies.failed.lock().expect("copies");
            dsts.iter().find_map(|d| failed.remove(d))
        };
        let started = {
            let mut running = self.copies.running.lock().expect("copies");
            if dsts.iter().any(|d| running.contains_key(d)) {
                false
            } else {
                for j in &jobs {
                    running.insert(j.dst.to_string(), j.src.to_string());
                }
                true
            }
        };
        let report = |f: Failure, context: &str| match f {
            Failure::Retry(why) => ServiceError::Unavailable(format!(
                "{context} failed: {why}; the copy has been restarted, the CO retries"
            )),
            Failure::Refused(why) => ServiceError::FailedPrecondition(why),
        };
        let context = match jobs.as_slice() {
            [one] => format!("copying {} to {}", one.src, one.dst),
            many => format!("the group copy of {} volumes", many.len()),
        };
        if started {
            let this = self.clone();
            let dsts = dsts.clone();
            let ctx = context.clone();
            tokio::spawn(async move {
                if let Err(f) = this.run_copies(jobs).await {
                    tracing::warn!(copy = %ctx, failure = ?f, "copy failed; the next call reports it");
                    let mut failed = this.copies.failed.lock().expect("copies");
                    for d in &dsts {
                        failed.insert(d.clone(), f.clone());
                    }
                }
                let mut running = this.copies.running.lock().expect("copies");
                for d in &dsts {
                    running.remove(d);
                }
            });
        }
        if let Some(f) = earlier {
            return Err(report(f, &context));
        }
        let deadline = tokio::time::Instant::now() + QUICK_WAIT;
        while tokio::time::Instant::now() < deadline {
            if !dsts.iter().any(|d| self.copies.is_running(d)) {
                let failure = {
                    let mut failed = self.copies.failed.lock().expect("copies");
                    dsts.iter().find_map(|d| failed.remove(d))
                };
                if let Some(f) = failure {
                    return Err(report(f, &context));
                }
                // Finished: every comment says so.
                for d in &dsts {
                    let slot = Slot::new(d).expect("a slot");
                    let ready = matches!(self.rds.get_disk(&slot).await, Ok(Some(disk))
                        if CopyRecord::from_comment(&disk.comment).is_some_and(|r| r.ready()));
                    if !ready {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(false)
    }

    /// Gives `src` its export back with `hosts` (empty: any host). The client retries what
    /// may be transient within its deadline (an export left withdrawn stalls its initiators).
    pub(super) async fn give_back(
        &self,
        src: &Slot,
        hosts: &[String],
    ) -> Result<(), routeros::error::RosError> {
        let nqns: Vec<Nqn> = hosts.iter().filter_map(|h| Nqn::new(h).ok()).collect();
        self.rds.set_export(src, true, &nqns).await
    }

    /// A copy that recorded a hold and no longer runs here (the controller restarted, or the
    /// copy's destination is being deleted): gives the source its export back. A hold younger
    /// than the pause bound plus [`HOLD_MARGIN`] may belong to a copy running in another
    /// controller instance (a replica that led the sidecars until just now): UNAVAILABLE until
    /// it is older, never a give-back under a running copy.
    pub(super) async fn release_stale_hold(&self, record: &CopyRecord) -> Result<(), ServiceError> {
        let Some(hosts) = &record.paused else { return Ok(()) };
        let Ok(src) = Slot::new(&record.source) else { return Ok(()) };
        if self.copies.holds(src.as_str()) {
            return Ok(());
        }
        let age = super::attachments::now_s() - record.held_since.unwrap_or(0);
        let wait = (self.cfg.pause_max + HOLD_MARGIN).as_secs() as i64;
        if age < wait {
            return Err(ServiceError::Unavailable(format!(
                "the writes of {src} are held by a copy that started {age} s ago, maybe in another controller instance; \
                 if it does not end, the export is given back {} s from now; the CO retries",
                wait - age
            )));
        }
        let context = format!("giving {src} its export back after an interrupted copy");
        match self.rds.get_disk(&src).await.map_err(ServiceError::rds(&context))? {
            Some(d) if !d.export => {
                tracing::warn!(source = %src, "an interrupted copy left the export withdrawn; giving it back");
                self.give_back(&src, hosts).await.map_err(ServiceError::rds(&context))
            }
            _ => Ok(()),
        }
    }

    /// An interrupted copy's hold (`record` of `dst`): the export given back
    /// ([`Self::release_stale_hold`]) and the record reset to copy again from the start (the
    /// data copied before is not of one instant). Returns the reset record.
    pub(super) async fn abandon_hold(
        &self,
        dst: &Slot,
        record: &CopyRecord,
    ) -> Result<CopyRecord, ServiceError> {
        self.release_stale_hold(record).await?;
        let restart =
            CopyRecord { paused: None, held_since: None, copying: Some(0), ..record.clone() };
        self.rds
            .set_comment(dst, &restart.to_comment())
            .await
            .map_err(ServiceError::rds(format!("recording the restart of the copy into {dst}")))?;
        Ok(restart)
    }

    async fn run_copies(&self, mut jobs: Vec<Job>) -> Result<(), Failure> {
        for job in &mut jobs {
            if job.record.paused.is_some() {
                job.record = self
                    .abandon_hold(&job.dst, &job.record)
                    .await
                    .map_err(|e| Failure::Retry(e.to_string()))?;
            }
        }
        let mut holds = Holds { copies: &self.copies, held: Vec::new() };
        for job in jobs.iter().filter(|j| !j.record.ready()) {
            if holds.held.iter().any(|(s, _)| *s == job.src) {
                continue;
            }
            // Decided, and the hold taken, under the volume's guard, which
            // ControllerPublishVolume holds from its "is a copy reading it?" check to its grant
            // and ControllerUnpublishVolume while it changes the allowed hosts: a publish either
            // comes first (and the copy holds the writes) or waits for the copy, and an
            // unpublish is never undone by the give-back.
            let _guard = self.volume_guard(&job.src).await?;
            let Some(src) =
                self.rds.get_disk(&job.src).await.map_err(retry("reading the source"))?
            else {
                continue;
            };
            if !self.may_be_written(&src).await.map_err(|e| Failure::Retry(e.to_string()))? {
                continue;
            }
            if !self.copies.hold(job.src.as_str()) {
                return Err(Failure::Retry(format!(
                    "another copy holds the writes of {}; this one starts when it ends",
                    job.src
                )));
            }
            holds.held.push((job.src.clone(), src.allowed_hosts));
        }
        if holds.held.is_empty() {
            for job in &mut jobs {
                self.copy_job(job, CHUNK, None).await?;
            }
            return Ok(());
        }
        self.run_held(jobs, &holds.held).await
    }

    /// The copies of sources that may be written: their writes are held for the whole copy.
    async fn run_held(
        &self,
        mut jobs: Vec<Job>,
        holds: &[(Slot, Vec<String>)],
    ) -> Result<(), Failure> {
        let bound = self.cfg.pause_max;
        let left = remaining(&jobs);
        let sources: Vec<String> = holds.iter().map(|(s, _)| s.to_string()).collect();
        let refuse = |why: String| {
            Failure::Refused(format!(
                "{} may be written (published) and a point-in-time copy holds its writes for the whole copy: {why}. \
                 Take the snapshot while the volume is unpublished, or raise --snapshot-pause-max-seconds (docs/snapshots.md)",
                sources.join(", ")
            ))
        };
        if bound.is_zero() {
            return Err(refuse(
                "the controller runs with --snapshot-pause-max-seconds 0, which refuses every such copy".into(),
            ));
        }
        if let Some(rate) = self.copies.rate() {
            let need = estimate(left, rate);
            if need > bound {
                return Err(refuse(format!(
                    "copying {left} bytes at the measured {:.0} MB/s takes about {:.1} s, more than the {} s pause bound",
                    rate / 1e6,
                    need.as_secs_f64(),
                    bound.as_secs()
                )));
            }
        }
        let result = self.copy_held(&mut jobs, holds, bound).await;
        // Always give the exports back, whatever the copy did.
        let mut gave_back = Ok(());
        for (src, hosts) in holds {
            if let Err(e) = self.give_back(src, hosts).await {
                tracing::error!(source = %src, error = %e, "could not give the export back; the next call retries");
                gave_back = Err(Failure::Retry(format!("giving {src} its export back: {e}")));
            }
        }
        gave_back?;
        for job in &mut jobs {
            job.record.paused = None;
            job.record.held_since = None;
            job.record.copying = if result.is_ok() { None } else { Some(0) };
            self.rds
                .set_comment(&job.dst, &job.record.to_comment())
                .await
                .map_err(retry("recording the copy's end"))?;
        }
        match &result {
            Ok(paused) => {
                tracing::info!(sources = ?sources, paused_ms = paused.as_millis() as u64, bytes = left, "point-in-time copy done; writes were held");
                self.heal.held_copy("done", Some(*paused));
            }
            Err(Failure::Refused(_)) => self.heal.held_copy("refused", None),
            Err(Failure::Retry(_)) => self.heal.held_copy("failed", None),
        }
        result.map(|_| ()).map_err(|f| match f {
            Failure::Refused(why) => refuse(why),
            other => other,
        })
    }

    /// Withdraws the exports, copies every job, and answers how long the writes were held.
    /// Stops with `Refused` when the measured rate says the rest cannot finish in `bound`.
    async fn copy_held(
        &self,
        jobs: &mut [Job],
        holds: &[(Slot, Vec<String>)],
        bound: Duration,
    ) -> Result<Duration, Failure> {
        for job in jobs.iter_mut() {
            // Every destination's comment is written from its job (a group member recopied
            // for the instant may still say ready on the RDS); those of held sources name the
            // hosts to give back.
            job.record.paused = holds.iter().find(|(s, _)| *s == job.src).map(|(_, h)| h.clone());
            job.record.held_since = job.record.paused.as_ref().map(|_| super::attachments::now_s());
            self.rds
                .set_comment(&job.dst, &job.record.to_comment())
                .await
                .map_err(retry("recording the hold"))?;
        }
        let started = Instant::now();
        for (src, _) in holds {
            self.rds
                .set_export(src, false, &[])
                .await
                .map_err(retry("withdrawing the export to hold writes"))?;
        }
        let mut left = remaining(jobs);
        for job in jobs.iter_mut() {
            self.copy_job(job, HELD_CHUNK, Some((started, bound, &mut left))).await?;
        }
        // Still withdrawn: nobody (another controller instance taking the hold for stale)
        // gave an export back during the copy, so the copy is of one instant.
        for (src, _) in holds {
            let d = self.rds.get_disk(src).await.map_err(retry("checking the hold"))?;
            if d.is_some_and(|d| d.export) {
                return Err(Failure::Retry(format!(
                    "the export of {src} came back during the copy (another controller instance?); the copy is not of one instant and is taken again"
                )));
            }
        }
        Ok(started.elapsed())
    }

    /// Copies the rest of one job in chunks of `chunk`, recording progress in the destination's
    /// comment. `held`: (start of the hold, bound, bytes left over all jobs), to stop in time;
    /// a held job records nothing here and is marked ready only after its source's export is
    /// given back.
    async fn copy_job(
        &self,
        job: &mut Job,
        chunk: u64,
        mut held: Option<(Instant, Duration, &mut u64)>,
    ) -> Result<(), Failure> {
        let context = format!("copying {} to {}", job.src, job.dst);
        let mut done = job.record.copying.unwrap_or(job.total);
        while done < job.total {
            if let Some((started, bound, left)) = held.as_mut() {
                let elapsed = started.elapsed();
                let need = self.copies.rate().map_or(Duration::ZERO, |r| estimate(**left, r));
                if elapsed + need > *bound {
                    return Err(Failure::Refused(format!(
                        "the copy overran the {} s pause bound ({:.1} s held, about {:.1} s still to copy); it was stopped and the export given back",
                        bound.as_secs(),
                        elapsed.as_secs_f64(),
                        need.as_secs_f64()
                    )));
                }
            }
            let len = chunk.min(job.total - done);
            let t = Instant::now();
            self.rds
                .copy_disk(&job.src, &job.dst, Some((done, len)))
                .await
                .map_err(retry(&context))?;
            self.copies.observe(len, t.elapsed());
            done += len;
            if let Some((_, _, left)) = held.as_mut() {
                **left = left.saturating_sub(len);
            }
            if held.is_some() {
                // No progress while held: an interrupted held copy starts again anyway, and
                // every round trip here lengthens the pause.
                continue;
            }
            job.record.copying = (done < job.total).then_some(done);
            self.rds
                .set_comment(&job.dst, &job.record.to_comment())
                .await
                .map_err(retry(&context))?;
        }
        if job.total == 0 && held.is_none() {
            job.record.copying = None;
            self.rds
                .set_comment(&job.dst, &job.record.to_comment())
                .await
                .map_err(retry(&context))?;
        }
        Ok(())
    }
}

//! `rds-csi orphans [--delete [--older-than D] [--yes]]`: the managed disks and files on the
//! RDS that no PV uses, by the reconciler's own rule
//! ([`crate::core::inventory::orphan_candidates`]: never a snapshot, never a disk a copy is
//! filling, never anything outside the allowed base paths). Deletes only with `--delete`,
//! after a confirmation on a terminal (`--yes` elsewhere), and only what a second look just
//! before deleting still finds orphaned (a PV may have appeared meanwhile).

use std::{
    collections::HashSet,
    io::{BufRead, IsTerminal, Write},
    process::ExitCode,
    time::Instant,
};

use routeros::types::{FilePath, Slot};

use super::{
    OrphansArgs,
    session::{Session, bounded, now_s},
    table::{age, opt, print, render},
};
use crate::core::inventory::{OrphanCandidate, orphan_candidates};

async fn candidates(s: &Session, older_than_s: i64) -> Result<Vec<OrphanCandidate>, String> {
    let Some(cluster) = &s.cluster else {
        return Err(format!(
            "orphans needs cluster access: only the PVs say which disks are in use ({}); pass --kubeconfig or run it in the controller pod",
            s.cluster_note.clone().unwrap_or_default()
        ));
    };
    let (disks, files) = s.rds_state().await?;
    let handles = cluster.view().await?.handles();
    Ok(orphan_candidates(&disks, &files, &handles, |f| s.is_managed(f), now_s(), older_than_s))
}

/// Asks on the terminal; only `yes` confirms.
async fn confirm(question: String) -> Result<bool, String> {
    tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr();
        let _ = write!(err, "{question} Type 'yes' to delete: ");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim() == "yes")
    })
    .await
    .map_err(|e| e.to_string())?
}

pub async fn run(args: &OrphansArgs) -> Result<ExitCode, String> {
    let s = Session::open(&args.tool).await?;
    let older_than_s = match args.older_than {
        Some(d) => d.as_secs() as i64,
        None => s.cfg.reconcile.rds_orphan_grace_s,
    };
    let found = candidates(&s, older_than_s).await?;
    let action = if args.delete { "delete" } else { "report" };
    print(args.tool.output, &found, || {
        let cells: Vec<Vec<String>> = found
            .iter()
            .map(|c| {
                let would = match (c.age_s, args.delete) {
                    (None, _) => "kept: age unknown",
                    (Some(_), true) => "delete",
                    (Some(_), false) => "report",
                };
                vec![
                    c.kind.to_string(),
                    c.name.clone(),
                    opt(c.age_s.map(age)),
                    would.to_string(),
                    c.file.clone(),
                ]
            })
            .collect();
        let mut out = render(&["KIND", "NAME", "AGE", "ACTION", "FILE"], &cells);
        out.push_str(&format!(
            "{} orphan(s) older than {} ({action})\n",
            found.len(),
            age(older_than_s)
        ));
        out
    })?;
    if !args.delete {
        return Ok(ExitCode::SUCCESS);
    }
    // One of unknown age is never deleted (as the reconciler).
    let doomed: Vec<&OrphanCandidate> = found.iter().filter(|c| c.age_s.is_some()).collect();
    if doomed.is_empty() {
        eprintln!("nothing to delete");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(
                "--delete asks for confirmation on a terminal; with no terminal, add --yes".into(),
            );
        }
        let question =
            format!("Delete {} orphan(s) from the RDS? This cannot be undone.", doomed.len());
        if !confirm(question).await? {
            eprintln!("nothing deleted");
            return Ok(ExitCode::FAILURE);
        }
    }
    // A second look: only what is still an orphan now is deleted.
    let still: HashSet<(String, String)> = candidates(&s, older_than_s)
        .await?
        .into_iter()
        .map(|c| (c.kind.to_string(), c.name))
        .collect();
    let (total, mut failed) = (doomed.len(), 0);
    for (i, c) in doomed.into_iter().enumerate() {
        let started = Instant::now();
        eprint!("[{}/{total}] deleting {} {} ... ", i + 1, c.kind, c.name);
        let outcome = if !still.contains(&(c.kind.to_string(), c.name.clone())) {
            "skipped: no longer an orphan".to_string()
        } else {
            match delete(&s, c).await {
                Ok(()) => format!("deleted ({} ms)", started.elapsed().as_millis()),
                Err(e) => {
                    failed += 1;
                    format!("FAILED: {e}")
                }
            }
        };
        eprintln!("{outcome}");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn delete(s: &Session, c: &OrphanCandidate) -> Result<(), String> {
    let file = FilePath::new(&c.file).map_err(|e| e.to_string())?;
    if !s.is_managed(&file) {
        return Err(format!("{} is outside the allowed base paths", file.absolute()));
    }
    let t = s.call_timeout;
    match c.kind {
        "disk" => {
            let slot = Slot::new(&c.name).map_err(|e| e.to_string())?;
            bounded(t, "deleting the disk", s.rds.delete_disk(&slot, &file)).await
        }
        _ => bounded(t, "removing the file", s.rds.remove_file(&file)).await,
    }
}

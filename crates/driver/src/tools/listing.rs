//! `rds-csi volumes`, `rds-csi snapshots`, `rds-csi attachments`: what is on the RDS, joined
//! with what the cluster says ([`crate::core::inventory`]).

use std::process::ExitCode;

use super::{
    ToolArgs,
    session::{Session, bounded, now_s},
    table::{age, opt, print, render, size},
};
use crate::core::{fencing::host_nqn_for, inventory};

/// Prints why the cluster was not read (on stderr: the table stays parseable).
fn note_cluster(s: &Session) {
    if let Some(note) = &s.cluster_note {
        eprintln!("note: {note}");
    }
}

async fn cluster_view(s: &Session) -> Result<Option<inventory::ClusterView>, String> {
    match &s.cluster {
        Some(c) => c.view().await.map(Some),
        None => Ok(None),
    }
}

pub async fn volumes(args: &ToolArgs) -> Result<ExitCode, String> {
    let s = Session::open(args).await?;
    let (disks, files) = s.rds_state().await?;
    let view = cluster_view(&s).await?;
    let grace = s.cfg.reconcile.rds_orphan_grace_s;
    let rows =
        inventory::volumes(&disks, &files, view.as_ref(), |f| s.is_managed(f), now_s(), grace);
    note_cluster(&s);
    print(args.output, &rows, || {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.volume.clone(),
                    r.state.to_string(),
                    opt(r.size.map(size)),
                    opt(r.pvc.as_ref()),
                    r.holders.join(","),
                    if r.exported { "nvme-tcp" } else { "no" }.to_string(),
                    r.allows.clone(),
                    opt(r.age_s.map(age)),
                    r.file.clone(),
                ]
            })
            .collect();
        let headers =
            ["VOLUME", "STATE", "SIZE", "PVC", "HOLDERS", "EXPORT", "ALLOWS", "AGE", "FILE"];
        let mut out = render(&headers, &cells);
        out.push_str(&format!("{} volume(s)\n", rows.len()));
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(args: &ToolArgs) -> Result<ExitCode, String> {
    let s = Session::open(args).await?;
    let disks = bounded(s.call_timeout, "listing the RDS disks", s.rds.list_disks("snap-")).await?;
    let rows = inventory::snapshots(&disks, now_s());
    print(args.output, &rows, || {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let state = match (r.state, r.copied) {
                    ("copying", Some(n)) if r.size > 0 => {
                        format!("copying {}%", n.saturating_mul(100) / r.size)
                    }
                    (st, _) => st.to_string(),
                };
                let state =
                    if r.holding_writes { format!("{state}, holding writes") } else { state };
                vec![
                    r.snapshot.clone(),
                    opt(r.source.as_ref()),
                    opt(r.mechanism.as_ref()),
                    state,
                    size(r.size),
                    opt(r.group.as_ref()),
                    opt(r.age_s.map(age)),
                ]
            })
            .collect();
        let headers = ["SNAPSHOT", "SOURCE", "MECHANISM", "STATE", "SIZE", "GROUP", "AGE"];
        let mut out = render(&headers, &cells);
        out.push_str(&format!("{} snapshot(s)\n", rows.len()));
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn attachments(args: &ToolArgs) -> Result<ExitCode, String> {
    let s = Session::open(args).await?;
    let Some(view) = cluster_view(&s).await? else {
        return Err(format!(
            "attachments are VolumeAttachments: this needs cluster access ({}); pass --kubeconfig or run it in the controller pod",
            s.cluster_note.clone().unwrap_or_default()
        ));
    };
    let disks = bounded(s.call_timeout, "listing the RDS disks", s.rds.list_disks("pvc-")).await?;
    let rows = inventory::attachments(&view, Some(&disks), host_nqn_for, now_s());
    print(args.output, &rows, || {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let state = match (r.attached, r.deleting) {
                    (_, true) => "detaching",
                    (true, false) => "attached",
                    (false, false) => "attaching",
                };
                let migration = match r.migration_left_s {
                    Some(left) if left >= 0 => format!("{} left", age(left)),
                    Some(left) => format!("expired {} ago", age(-left)),
                    None => String::new(),
                };
                vec![
                    r.volume.clone(),
                    opt(r.pvc.as_ref()),
                    r.node.clone(),
                    state.to_string(),
                    r.fence.to_string(),
                    migration,
                    r.attachment.clone(),
                    opt(r.error.as_ref()),
                ]
            })
            .collect();
        let headers =
            ["VOLUME", "PVC", "NODE", "STATE", "FENCE", "MIGRATION", "ATTACHMENT", "ERROR"];
        let mut out = render(&headers, &cells);
        let migrations = rows.iter().filter(|r| r.migration_left_s.is_some()).count() / 2;
        out.push_str(&format!(
            "{} attachment(s), {migrations} migration(s) in progress\n",
            rows.len()
        ));
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

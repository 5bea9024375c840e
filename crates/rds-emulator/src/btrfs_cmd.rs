//! `/disk/btrfs/subvolume` (RouterOS 7.18+, storage package): subvolumes and their snapshots,
//! made for real with btrfs-progs on a pool whose directory is a btrfs filesystem
//! (docs/emulator.md). A subvolume `name` of filesystem `fs` (the pool's label,
//! `<slot>-fs`) lives at `<pool mount point>/<name>` (INFERRED: RouterOS does not document
//! where; docs/snapshots.md).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use routeros::syntax::{Expr, Statement};

use crate::{
    exec::{Args, Exec, ExecError, RValue, failure, no_such_item, reject_unknown, split_args},
    model::{PropValue, Subvolume},
    render::Row,
};

/// Deadline of one btrfs-progs command.
const BTRFS_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `btrfs <args>` under [`BTRFS_TIMEOUT`]; the error is its output.
fn btrfs(args: &[&str]) -> Result<(), String> {
    let mut child = Command::new("btrfs")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("btrfs: {e}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(err.trim().to_string());
        }
        if started.elapsed() > BTRFS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("btrfs {} did not finish in {BTRFS_TIMEOUT:?}", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A subvolume's print row, its as-value properties, and its id.
type SubvolumeRow = (Row, Vec<(String, PropValue)>, u32);

fn props(v: &Subvolume) -> Vec<(String, PropValue)> {
    vec![
        ("name".into(), PropValue::Str(v.name.clone())),
        ("fs".into(), PropValue::Str(v.fs.clone())),
        ("parent".into(), PropValue::Str(v.parent.clone().unwrap_or_default())),
        ("read-only".into(), PropValue::Bool(v.read_only)),
    ]
}

impl Exec<'_> {
    fn subvolume_rows(&mut self, filter: Option<&Expr>) -> Result<Vec<SubvolumeRow>, ExecError> {
        let mut out = Vec::new();
        for (index, v) in self.store.subvolumes().to_vec().iter().enumerate() {
            let p = props(v);
            let mut values = vec![(".id".to_string(), PropValue::Bare(format!("*{:X}", v.id)))];
            values.extend(p.iter().cloned());
            if let Some(expr) = filter
                && !self.matches(expr, &values)?
            {
                continue;
            }
            out.push((
                Row { index, flags: Vec::new(), comment: String::new(), props: p },
                values,
                v.id,
            ));
        }
        Ok(out)
    }

    pub(crate) fn print_subvolumes(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let (rows, values): (Vec<_>, Vec<_>) =
            self.subvolume_rows(args.filter)?.into_iter().map(|(r, v, _)| (r, v)).unzip();
        self.print(&args, rows, values, &["name", "fs", "parent", "read-only"])
    }

    pub(crate) fn find_subvolumes(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let rows = self.subvolume_rows(args.filter)?;
        Ok(RValue::Ids(rows.into_iter().map(|(_, v, _)| v[0].1.raw()).collect()))
    }

    fn named(&mut self, args: &Args, name: &str) -> Result<Option<String>, ExecError> {
        match args.named.get(name) {
            Some((v, _)) => Ok(Some(self.text(v)?)),
            None => Ok(None),
        }
    }

    /// `add fs=<label> name=<name> [parent=<subvolume> read-only=yes|no]`.
    pub(crate) fn subvolume_add(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        reject_unknown(&args, &["fs", "name", "parent", "read-only"])?;
        let fs = self.named(&args, "fs")?.ok_or_else(|| failure("missing value for fs"))?;
        let name = self.named(&args, "name")?.ok_or_else(|| failure("missing value for name"))?;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(failure("invalid value for argument name"));
        }
        let parent = self.named(&args, "parent")?;
        let read_only = match self.named(&args, "read-only")? {
            Some(v) => routeros::values::parse_bool(&v)
                .ok_or_else(|| failure("invalid value for argument read-only"))?,
            None => false,
        };
        let mount =
            self.store.btrfs_mount(&fs).ok_or_else(|| failure("no such btrfs filesystem"))?;
        if self.store.subvolumes().iter().any(|v| v.fs == fs && v.name == name) {
            return Err(failure("subvolume with such name already exists"));
        }
        let path = self.store.host_path(&format!("{mount}/{name}"));
        let shown = |p: &Path| p.display().to_string();
        let made = match &parent {
            Some(p) => {
                if !self.store.subvolumes().iter().any(|v| v.fs == fs && v.name == *p) {
                    return Err(no_such_item());
                }
                let src = self.store.host_path(&format!("{mount}/{p}"));
                let mut a = vec!["subvolume", "snapshot"];
                if read_only {
                    a.push("-r");
                }
                let (src, dst) = (shown(&src), shown(&path));
                a.extend([src.as_str(), dst.as_str()]);
                btrfs(&a)
            }
            None => btrfs(&["subvolume", "create", &shown(&path)]),
        };
        made.map_err(failure)?;
        let id = self
            .store
            .insert_subvolume(Subvolume {
                id: 0,
                name,
                fs,
                parent,
                read_only: read_only && args.named.contains_key("parent"),
            })
            .map_err(crate::exec::io_failure)?;
        self.mutated = true;
        Ok(RValue::Ids(vec![format!("*{id:X}")]))
    }

    /// `remove <ids or names>`: deletes the subvolume and everything in it.
    pub(crate) fn subvolume_remove(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        reject_unknown(&args, &[])?;
        let all = self.subvolume_rows(None)?;
        let mut ids = Vec::new();
        for r in self.item_refs(&args)? {
            let found = all.iter().find(|(row, v, _)| {
                v[0].1.raw() == r || row.props.first().is_some_and(|(_, n)| n.raw() == r)
            });
            ids.push(found.ok_or_else(no_such_item)?.2);
        }
        for id in ids {
            let v = self
                .store
                .subvolumes()
                .iter()
                .find(|v| v.id == id)
                .cloned()
                .ok_or_else(no_such_item)?;
            let mount =
                self.store.btrfs_mount(&v.fs).ok_or_else(|| failure("no such btrfs filesystem"))?;
            let path = self.store.host_path(&format!("{mount}/{}", v.name));
            btrfs(&["subvolume", "delete", &path.display().to_string()]).map_err(failure)?;
            self.store.remove_subvolume(id).map_err(crate::exec::io_failure)?;
            self.mutated = true;
        }
        Ok(RValue::Nothing)
    }
}

//! `/disk add|set|remove|copy` semantics (spec §2.1, §2.3). The backing file is real: `add`
//! creates it (sparse unless preallocating), `set file-size` resizes it, `remove` leaves it.

use routeros::{
    syntax::{Pos, Statement, Value},
    values::{parse_bool, parse_size_arg},
};

use crate::{
    exec::{
        Args, Exec, ExecError, RValue, failure, io_failure, no_match, no_such_item, split_args,
    },
    grammar::{DISK_TYPES, MODELLED_DISK_ARGS, disk_arg_allowed},
    model::{Disk, FileDisk, Kind, NvmeExport},
    store::normalize_path,
};

const DEFAULT_NVME_PORT: u16 = 4420;

/// The items a `set`/`remove` names: its unnamed values plus `numbers=`.
fn item_refs<'s>(args: &Args<'s>) -> Vec<(&'s Value, Pos)> {
    let mut refs = args.unnamed.clone();
    if let Some((value, pos)) = args.named.get("numbers") {
        refs.push((*value, *pos));
    }
    refs
}

impl Exec<'_> {
    /// Checks every named argument against the version's table for `/disk <command>`.
    fn check_disk_args(&self, command: &str, args: &Args) -> Result<(), ExecError> {
        let mut named: Vec<(&str, Pos)> = args.named.iter().map(|(k, (_, p))| (*k, *p)).collect();
        named.sort_by_key(|(_, p)| (p.line, p.column));
        for (name, pos) in named {
            if !disk_arg_allowed(self.b.version, command, name) {
                return Err(crate::exec::end_of_command(pos));
            }
            if !MODELLED_DISK_ARGS.contains(&name) {
                tracing::debug!(argument = name, "accepted and ignored (not modelled)");
            }
        }
        Ok(())
    }

    fn arg_text(&mut self, args: &Args, name: &str) -> Result<Option<String>, ExecError> {
        match args.named.get(name) {
            Some((value, _)) => Ok(Some(self.text(value)?)),
            None => Ok(None),
        }
    }

    fn arg_bool(&mut self, args: &Args, name: &str) -> Result<Option<bool>, ExecError> {
        match self.arg_text(args, name)? {
            Some(t) => parse_bool(&t).map(Some).ok_or_else(|| no_match(name)),
            None => Ok(None),
        }
    }

    fn arg_u64(
        &mut self,
        args: &Args,
        name: &str,
        parse: fn(&str) -> Option<u64>,
    ) -> Result<Option<u64>, ExecError> {
        match self.arg_text(args, name)? {
            Some(t) => parse(&t)
                .map(Some)
                .ok_or_else(|| ExecError::Message(format!("invalid value for argument {name}"))),
            None => Ok(None),
        }
    }

    /// Resolves item references: `*1F` ids, slot names, comma lists, `[find ...]` results.
    pub fn resolve_disks(&mut self, values: &[(&Value, Pos)]) -> Result<Vec<u32>, ExecError> {
        let mut ids = Vec::new();
        for (value, _) in values {
            let refs: Vec<String> = match self.eval(value)? {
                RValue::Ids(list) => list,
                RValue::Text(t) => t.split(',').map(str::to_string).collect(),
                RValue::Nothing => Vec::new(),
                _ => return Err(no_such_item()),
            };
            for r in refs {
                let disk = match r.strip_prefix('*') {
                    Some(hex) => {
                        u32::from_str_radix(hex, 16).ok().and_then(|id| self.store.disk(id))
                    }
                    None => self.store.disks().iter().find(|d| d.slot == r),
                };
                ids.push(disk.ok_or_else(no_such_item)?.id);
            }
        }
        Ok(ids)
    }

    fn slot_taken(&self, slot: &str, except: Option<u32>) -> bool {
        self.store.disks().iter().any(|d| d.slot == slot && Some(d.id) != except)
    }

    /// Fails when growing `path` by `extra` bytes would overflow its pool.
    fn check_space(&self, path: &str, extra: u64) -> Result<(), ExecError> {
        if self.b.force_disk_full && extra > 0 {
            return Err(ExecError::Message(self.b.disk_full_error.clone()));
        }
        if let Some(pool) = self.store.pool_for(path) {
            let free = pool.size.saturating_sub(self.store.usage(pool).used);
            if extra > free {
                return Err(ExecError::Message(self.b.disk_full_error.clone()));
            }
        }
        Ok(())
    }

    pub fn disk_add(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        if let Some((_, pos)) = args.unnamed.first() {
            return Err(crate::exec::end_of_command(*pos));
        }
        self.check_disk_args("add", &args)?;
        let template = match args.named.get("copy-from") {
            Some((value, pos)) => {
                let ids = self.resolve_disks(&[(*value, *pos)])?;
                let id = *ids.first().ok_or_else(no_such_item)?;
                Some(self.store.disk(id).ok_or_else(no_such_item)?.clone())
            }
            None => None,
        };
        let type_name = match self.arg_text(&args, "type")? {
            Some(t) if !DISK_TYPES.contains(&t.as_str()) => return Err(no_match("type")),
            Some(t) => t,
            None => match &template {
                Some(Disk { kind: Kind::File(_), .. }) => "file".into(),
                Some(_) => "raid".into(),
                None => return Err(failure("type not specified")),
            },
        };
        if type_name != "file" {
            return Err(failure(format!("type={type_name} is not emulated (only type=file)")));
        }
        let template_file = match &template {
            Some(Disk { kind: Kind::File(f), .. }) => Some(f.clone()),
            _ => None,
        };
        let path = match self.arg_text(&args, "file-path")? {
            Some(p) => normalize_path(&p).ok_or_else(|| no_match("file-path"))?,
            None => template_file
                .as_ref()
                .map(|f| f.path.clone())
                .ok_or_else(|| failure("file-path not specified"))?,
        };
        let requested = self.arg_u64(&args, "file-size", |s| parse_size_arg(s).ok())?;
        let offset = self.arg_u64(&args, "file-offset", |s| s.parse().ok())?;
        let existing = self.store.file_len(&path);
        let size = match (requested, existing, &template_file) {
            (Some(s), _, _) => s,
            (None, Some(len), _) => len,
            (None, None, Some(f)) => f.size,
            (None, None, None) => return Err(failure("file-size not specified")),
        };
        let slot = match self.arg_text(&args, "slot")? {
            Some(s) if s.is_empty() => return Err(no_match("slot")),
            Some(s) => s,
            None => format!("file-{}", path.replace('/', "-")),
        };
        if self.slot_taken(&slot, None) {
            return Err(failure("item with this name already exists"));
        }
        let base = template.as_ref().map(|t| t.nvme.clone()).unwrap_or_default();
        let nvme = self.nvme_args(&args, base)?;
        self.check_space(&path, size.saturating_sub(existing.unwrap_or(0)))?;

        self.store
            .size_file(&path, size.max(existing.unwrap_or(0)), self.b.preallocate)
            .map_err(io_failure)?;
        if let (Some(src), true) = (&template_file, self.b.copy_from_data)
            && src.path != path
        {
            let len = src.size.min(size);
            self.store.copy_range(&src.path, 0, &path, 0, len).map_err(io_failure)?;
        }
        let comment = match self.arg_text(&args, "comment")? {
            Some(c) => c,
            None => template.as_ref().map(|t| t.comment.clone()).unwrap_or_default(),
        };
        let disabled = self.arg_bool(&args, "disabled")?.unwrap_or(false);
        let disk = Disk {
            id: 0,
            slot,
            comment,
            disabled,
            kind: Kind::File(FileDisk {
                path,
                size: size.max(existing.unwrap_or(0)),
                offset: offset.unwrap_or(0),
            }),
            nvme,
            compress: self.arg_bool(&args, "compress")?.unwrap_or(false),
        };
        let id = self.store.insert(disk).map_err(io_failure)?;
        self.mutated = true;
        Ok(RValue::Ids(vec![format!("*{id:X}")]))
    }

    /// Applies the `nvme-tcp-*` server arguments on top of `base`.
    fn nvme_args(&mut self, args: &Args, mut nvme: NvmeExport) -> Result<NvmeExport, ExecError> {
        if let Some(export) = self.arg_bool(args, "nvme-tcp-export")? {
            nvme.export = export;
        }
        if let Some(port) = self.arg_text(args, "nvme-tcp-server-port")? {
            nvme.port = port.parse().map_err(|_| {
                ExecError::Message("value of nvme-tcp-server-port out of range (0..65535)".into())
            })?;
        }
        if nvme.port == 0 {
            nvme.port = DEFAULT_NVME_PORT;
        }
        if let Some(nqn) = self.arg_text(args, "nvme-tcp-server-nqn")? {
            nvme.nqn = nqn;
        }
        if let Some(hosts) = self.arg_text(args, "nvme-tcp-server-allow-host-name")? {
            nvme.allow_host_name = hosts;
        }
        Ok(nvme)
    }

    pub fn disk_set(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        self.check_disk_args("set", &args)?;
        let refs = item_refs(&args);
        if refs.is_empty() {
            return Err(no_such_item());
        }
        for id in self.resolve_disks(&refs)? {
            let mut disk = self.store.disk(id).ok_or_else(no_such_item)?.clone();
            if let Some(slot) = self.arg_text(&args, "slot")? {
                if slot.is_empty() {
                    return Err(no_match("slot"));
                }
                if self.slot_taken(&slot, Some(id)) {
                    return Err(failure("item with this name already exists"));
                }
                disk.slot = slot;
            }
            if let Some(comment) = self.arg_text(&args, "comment")? {
                disk.comment = comment;
            }
            if let Some(disabled) = self.arg_bool(&args, "disabled")? {
                disk.disabled = disabled;
            }
            if let Some(compress) = self.arg_bool(&args, "compress")? {
                disk.compress = compress;
            }
            disk.nvme = self.nvme_args(&args, disk.nvme.clone())?;
            if let Kind::File(file) = &mut disk.kind {
                if let Some(path) = self.arg_text(&args, "file-path")? {
                    file.path = normalize_path(&path).ok_or_else(|| no_match("file-path"))?;
                }
                if let Some(size) = self.arg_u64(&args, "file-size", |s| parse_size_arg(s).ok())? {
                    if size < file.size && self.b.refuse_shrink {
                        return Err(failure("file-size can not be decreased"));
                    }
                    self.check_space(&file.path, size.saturating_sub(file.size))?;
                    self.store
                        .size_file(&file.path, size, self.b.preallocate)
                        .map_err(io_failure)?;
                    file.size = size;
                }
            } else if args.named.contains_key("file-size") || args.named.contains_key("file-path") {
                return Err(failure("not a file disk"));
            }
            self.store.update(disk).map_err(io_failure)?;
            self.mutated = true;
        }
        Ok(RValue::Nothing)
    }

    /// Removes the items; their files stay (VERIFIED: removing the disk item does not delete
    /// the file). An empty `[find ...]` is a silent no-op; an unknown name is `no such item`.
    pub fn disk_remove(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        crate::exec::reject_unknown(&args, &["numbers"])?;
        for id in self.resolve_disks(&item_refs(&args))? {
            if matches!(self.store.disk(id).map(|d| &d.kind), Some(Kind::Raid(_))) {
                return Err(failure("can not remove raid with mounted filesystem"));
            }
            self.store.remove(id).map_err(io_failure)?;
            self.mutated = true;
        }
        Ok(RValue::Nothing)
    }

    /// `/disk copy src=A dst=B [src-offset=] [dst-offset=] [size=]`: block copy between two
    /// file disks (a full copy, not copy-on-write).
    pub fn disk_copy(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        crate::exec::reject_unknown(&args, &["src", "dst", "src-offset", "dst-offset", "size"])?;
        let file_of = |exec: &mut Self, name: &str| -> Result<FileDisk, ExecError> {
            let (value, pos) = *args
                .named
                .get(name)
                .ok_or_else(|| failure(format!("missing value for {name}")))?;
            let id = *exec.resolve_disks(&[(value, pos)])?.first().ok_or_else(no_such_item)?;
            match &exec.store.disk(id).ok_or_else(no_such_item)?.kind {
                Kind::File(f) => Ok(f.clone()),
                _ => Err(failure("can only copy file disks")),
            }
        };
        let src = file_of(self, "src")?;
        let dst = file_of(self, "dst")?;
        let number = |s: &str| parse_size_arg(s).ok();
        let src_off = self.arg_u64(&args, "src-offset", number)?.unwrap_or(0);
        let dst_off = self.arg_u64(&args, "dst-offset", number)?.unwrap_or(0);
        let available = src.size.saturating_sub(src_off).min(dst.size.saturating_sub(dst_off));
        let len = self.arg_u64(&args, "size", number)?.unwrap_or(available);
        if len > available {
            return Err(failure("size exceeds disk"));
        }
        self.store.copy_range(&src.path, src_off, &dst.path, dst_off, len).map_err(io_failure)?;
        self.mutated = true;
        Ok(RValue::Nothing)
    }
}

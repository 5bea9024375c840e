//! Executes parsed RouterOS statements against the store: evaluation of `[find ...]`,
//! `where`, `:put`, `:serialize`, and the `/file` and `/system` menus. `/disk` mutations live
//! in `disk_cmd.rs`, `/disk/btrfs/subvolume` in `btrfs_cmd.rs`, `:if`/`:len`/`:error` in
//! `script_cmd.rs`.
//!
//! Like RouterOS, a line runs statement by statement and stops at the first error, whose text
//! is printed after any output so far (exit status 0 by default, see `Behaviour`).

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use regex::Regex;
use routeros::{
    syntax::{Arg, CmpOp, Expr, Pos, Statement, SyntaxError, Value, parse_line},
    values::{human_size, parse_bool},
};

use crate::{
    grammar::{PRINT_WORDS, RdsGrammar},
    model::PropValue,
    render::{self, Layout, Row},
    store::{FileKind, Store},
    version::Version,
};

/// Emulated behaviour where the facts are UNKNOWN or INFERRED (each switchable; see
/// docs/emulator.md).
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub version: Version,
    pub preallocate: bool,
    /// `copy-from` also copies the data of the source file (default: properties only).
    pub copy_from_data: bool,
    /// Refuse `set file-size` below the current size (default: truncate, like a loop file).
    pub refuse_shrink: bool,
    /// Exec-mode wrap width of `print detail` (0 = never wrap).
    pub exec_width: usize,
    pub header_on_empty: bool,
    /// The error printed when a file does not fit in the pool.
    pub disk_full_error: String,
    pub board_name: String,
    /// Fault: every allocation fails with `disk_full_error`.
    pub force_disk_full: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            version: Version { major: 7, minor: 21, patch: 0 },
            preallocate: false,
            copy_from_data: false,
            refuse_shrink: false,
            exec_width: 80,
            header_on_empty: true,
            disk_full_error: "failure: not enough disk space".into(),
            board_name: "RDS2216-2XG-4S+4XS-2XQ".into(),
            force_disk_full: false,
        }
    }
}

/// A failed statement: the text RouterOS prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("{0}")]
    Message(String),
}

pub fn failure(text: impl std::fmt::Display) -> ExecError {
    ExecError::Message(format!("failure: {text}"))
}

pub fn no_such_item() -> ExecError {
    ExecError::Message("no such item".into())
}

pub fn no_match(arg: &str) -> ExecError {
    ExecError::Message(format!("input does not match any value of {arg}"))
}

pub fn end_of_command(pos: Pos) -> ExecError {
    ExecError::Syntax(SyntaxError::ExpectedEndOfCommand { pos })
}

/// What evaluating a statement yields (used by `:put`, `:serialize`, and as an item list).
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    Nothing,
    Text(String),
    /// Internal ids (`*1F`) of found or added items.
    Ids(Vec<String>),
    /// `print as-value` of a table.
    Rows(Vec<Vec<(String, PropValue)>>),
    /// `print as-value` of a singleton menu (`/system resource`).
    Object(Vec<(String, PropValue)>),
}

/// The result of one exec line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub output: String,
    pub failed: bool,
    /// Whether any statement changed state (for fault injection "after the mutation").
    pub mutated: bool,
}

/// Runs one exec line.
pub fn run_line(line: &str, store: &mut Store, behaviour: &Behaviour, started: Instant) -> Outcome {
    let mut exec = Exec { store, b: behaviour, started, out: String::new(), mutated: false };
    let result = parse_line(
        line,
        &RdsGrammar {
            file_copy: behaviour.version.has_file_copy(),
            btrfs: behaviour.version.has_compress(),
        },
    )
    .map_err(ExecError::from)
    .and_then(|statements| statements.iter().try_for_each(|s| exec.top(s)));
    let failed = result.is_err();
    if let Err(e) = result {
        exec.out.push_str(&format!("{e}\n"));
    }
    Outcome { output: exec.out, failed, mutated: exec.mutated }
}

pub(crate) struct Exec<'a> {
    pub store: &'a mut Store,
    pub b: &'a Behaviour,
    started: Instant,
    out: String,
    pub mutated: bool,
}

/// Named arguments by name, with positions; unnamed values in order.
pub(crate) struct Args<'s> {
    pub named: HashMap<&'s str, (&'s Value, Pos)>,
    pub unnamed: Vec<(&'s Value, Pos)>,
    pub filter: Option<&'s Expr>,
    /// `:if`'s condition.
    pub cond: Option<(&'s Value, CmpOp, &'s Value)>,
}

pub(crate) fn split_args(stmt: &Statement) -> Args<'_> {
    let mut a = Args { named: HashMap::new(), unnamed: Vec::new(), filter: None, cond: None };
    for arg in &stmt.args {
        match arg {
            Arg::Named { name, value, pos } => {
                a.named.insert(name.as_str(), (value, *pos));
            }
            Arg::Unnamed { value, pos } => a.unnamed.push((value, *pos)),
            Arg::Where { expr, .. } => a.filter = Some(expr),
            Arg::Cond { left, op, right, .. } => a.cond = Some((left, *op, right)),
        }
    }
    a
}

impl Exec<'_> {
    pub(crate) fn top(&mut self, stmt: &Statement) -> Result<(), ExecError> {
        // At top level, values are discarded except what commands print themselves.
        self.eval_statement(stmt).map(|_| ())
    }

    /// Evaluates a value: literal text, or a sub-statement's result.
    pub fn eval(&mut self, value: &Value) -> Result<RValue, ExecError> {
        match value {
            Value::Text { text, .. } => Ok(RValue::Text(text.clone())),
            Value::Sub(stmt) => self.eval_statement(stmt),
            Value::Block(_) => Err(failure("a block is not a value here")),
        }
    }

    /// A value that must be text (argument values).
    pub fn text(&mut self, value: &Value) -> Result<String, ExecError> {
        match self.eval(value)? {
            RValue::Text(t) => Ok(t),
            RValue::Ids(ids) => Ok(ids.join(",")),
            RValue::Nothing => Ok(String::new()),
            RValue::Rows(_) | RValue::Object(_) => Err(failure("cannot use an array here")),
        }
    }

    fn eval_statement(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let Some(command) = stmt.command.as_deref() else { return Ok(RValue::Nothing) };
        let menu: Vec<&str> = stmt.menu.iter().map(String::as_str).collect();
        match (menu.as_slice(), command) {
            ([], ":put") => self.put(stmt),
            ([], ":serialize") => self.serialize(stmt),
            ([], ":len") => self.len(stmt),
            ([], ":error") => self.error(stmt),
            ([], ":if") => self.script_if(stmt),
            ([], other) => Err(ExecError::Message(format!("bad command name {}", &other[1..]))),
            (["disk"], "print") => self.print_disks(stmt),
            (["disk"], "find") => self.find_disks(stmt),
            (["disk"], "add") => self.disk_add(stmt),
            (["disk"], "set") => self.disk_set(stmt),
            (["disk"], "remove") => self.disk_remove(stmt),
            (["disk"], "copy") => self.disk_copy(stmt),
            (["disk", "btrfs", "subvolume"], "print") => self.print_subvolumes(stmt),
            (["disk", "btrfs", "subvolume"], "find") => self.find_subvolumes(stmt),
            (["disk", "btrfs", "subvolume"], "add") => self.subvolume_add(stmt),
            (["disk", "btrfs", "subvolume"], "remove") => self.subvolume_remove(stmt),
            (["file"], "print") => self.print_files(stmt),
            (["file"], "find") => self.find_files(stmt),
            (["file"], "remove") => self.file_remove(stmt),
            (["file"], "copy") => self.file_copy(stmt),
            (["system", "resource"], "print") => self.print_singleton(stmt, self.resource()),
            (["system", "clock"], "print") => self.print_singleton(stmt, clock(SystemTime::now())),
            (["system", "identity"], "print") => {
                let name = vec![("name".to_string(), PropValue::Str(self.store.identity().into()))];
                self.print_singleton(stmt, name)
            }
            (["system", "identity"], "set") => {
                let args = split_args(stmt);
                reject_unknown(&args, &["name"])?;
                if let Some((v, _)) = args.named.get("name") {
                    let name = self.text(v)?;
                    self.store.set_identity(name).map_err(io_failure)?;
                    self.mutated = true;
                }
                Ok(RValue::Nothing)
            }
            _ => Err(ExecError::Message(format!("bad command name {command}"))),
        }
    }

    fn put(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let mut text = String::new();
        if let Some((value, _)) = args.unnamed.first() {
            text = match self.eval(value)? {
                RValue::Nothing => String::new(),
                RValue::Text(t) => t,
                RValue::Ids(ids) => ids.join(";"),
                RValue::Rows(rows) => rows.iter().map(|r| kv_line(r)).collect::<Vec<_>>().join(";"),
                RValue::Object(o) => kv_line(&o),
            };
        }
        self.out.push_str(&text);
        self.out.push('\n');
        Ok(RValue::Nothing)
    }

    fn serialize(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        match args.named.get("to") {
            Some((v, _)) if v.as_text() == Some("json") => {}
            Some((_, _)) => return Err(no_match("to")),
            None => return Err(failure("missing value for to")),
        }
        let Some((value, _)) = args.unnamed.first() else { return Ok(RValue::Text("[]".into())) };
        let json = match self.eval(value)? {
            RValue::Rows(rows) => {
                serde_json::Value::Array(rows.iter().map(|r| render::json_row(r)).collect())
            }
            RValue::Object(o) => render::json_row(&o),
            RValue::Ids(ids) => serde_json::Value::Array(ids.into_iter().map(Into::into).collect()),
            RValue::Text(t) => t.into(),
            RValue::Nothing => serde_json::Value::Null,
        };
        Ok(RValue::Text(json.to_string()))
    }

    /// Rows of `/disk` (table position, flags, display properties) with their
    /// `as-value` properties, optionally filtered; usage is computed once per disk.
    fn disk_rows(&mut self, filter: Option<&Expr>) -> Result<Vec<(Row, PropList)>, ExecError> {
        let mut rows = Vec::new();
        let disks = self.store.disks().to_vec();
        for (index, disk) in disks.iter().enumerate() {
            let usage = self.store.usage_of(disk);
            let values = disk.value_properties(self.b.version, usage);
            if let Some(expr) = filter
                && !self.matches(expr, &values)?
            {
                continue;
            }
            let row = Row {
                index,
                flags: disk.flags(),
                comment: disk.comment.clone(),
                props: disk
                    .properties(self.b.version, usage)
                    .into_iter()
                    .map(|(k, v)| (k.into(), v))
                    .collect(),
            };
            rows.push((row, values));
        }
        Ok(rows)
    }

    fn find_disks(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let disks = self.store.disks().to_vec();
        let rows = self.disk_rows(args.filter)?;
        Ok(RValue::Ids(rows.iter().map(|(r, _)| disks[r.index].dot_id()).collect()))
    }

    fn print_disks(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let (rows, values) = self.disk_rows(args.filter)?.into_iter().unzip();
        self.print(&args, rows, values, &["slot", "model", "size", "free", "fs"])
    }

    /// Shared tail of every table `print`: word options, proplist, and the output form.
    pub(crate) fn print(
        &mut self,
        args: &Args,
        mut rows: Vec<Row>,
        mut as_value: Vec<PropList>,
        columns: &[&str],
    ) -> Result<RValue, ExecError> {
        let mut words = Vec::new();
        for (value, pos) in &args.unnamed {
            match value.as_text() {
                Some(w) if PRINT_WORDS.contains(&w) => words.push(w),
                _ => return Err(end_of_command(*pos)),
            }
        }
        reject_unknown(args, &["proplist", ".proplist"])?;
        if let Some((v, _)) = args.named.get("proplist").or(args.named.get(".proplist")) {
            let list = self.text(v)?;
            let keep: Vec<&str> = list.split(',').collect();
            for r in &mut rows {
                r.props.retain(|(k, _)| keep.contains(&k.as_str()));
            }
            for r in &mut as_value {
                r.retain(|(k, _)| keep.contains(&k.as_str()));
            }
        }
        if words.contains(&"as-value") {
            return Ok(RValue::Rows(as_value));
        }
        let text = if words.contains(&"count-only") {
            format!("{}\n", rows.len())
        } else if words.contains(&"terse") {
            render::terse(&rows)
        } else if words.contains(&"detail") {
            render::detail(
                &rows,
                Layout { width: self.b.exec_width, header_on_empty: self.b.header_on_empty },
            )
        } else {
            render::table(&rows, columns, self.b.exec_width)
        };
        self.out.push_str(&text);
        Ok(RValue::Nothing)
    }

    /// `name: value` lines of a singleton menu, names right-aligned; or its as-value object.
    fn print_singleton(
        &mut self,
        stmt: &Statement,
        props: Vec<(String, PropValue)>,
    ) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        reject_unknown(&args, &[])?;
        let mut as_value = false;
        for (value, pos) in &args.unnamed {
            match value.as_text() {
                Some("as-value") => as_value = true,
                Some("without-paging") => {}
                _ => return Err(end_of_command(*pos)),
            }
        }
        if as_value {
            return Ok(RValue::Object(props));
        }
        let width = props.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &props {
            let shown = match v {
                PropValue::Str(s) => s.clone(),
                other => other.display(),
            };
            self.out.push_str(&format!("{k:>w$}: {shown}\n", w = width + 2));
        }
        Ok(RValue::Nothing)
    }

    fn resource(&self) -> Vec<(String, PropValue)> {
        let up = self.started.elapsed().as_secs();
        let uptime = format!("{}d{}h{}m{}s", up / 86_400, up / 3600 % 24, up / 60 % 60, up % 60);
        let uptime =
            uptime.trim_start_matches("0d").trim_start_matches("0h").trim_start_matches("0m");
        let b = |s: &str| PropValue::Bare(s.to_string());
        vec![
            ("uptime".into(), b(if uptime.is_empty() { "0s" } else { uptime })),
            ("version".into(), b(&format!("{} (stable)", self.b.version))),
            ("build-time".into(), b("2026-01-15 10:00:00")),
            ("factory-software".into(), b("7.17")),
            ("free-memory".into(), b(&human_size(30 << 30))),
            ("total-memory".into(), b(&human_size(32 << 30))),
            ("cpu".into(), b("ARM64")),
            ("cpu-count".into(), PropValue::Int(16)),
            ("cpu-load".into(), PropValue::Percent(1)),
            ("free-hdd-space".into(), b(&human_size(100 << 20))),
            ("total-hdd-space".into(), b(&human_size(128 << 20))),
            ("architecture-name".into(), b("arm64")),
            ("board-name".into(), b(&self.b.board_name)),
            ("platform".into(), b("MikroTik")),
        ]
    }

    /// Evaluates a `where`/`find` expression against an item's as-value properties.
    pub fn matches(
        &mut self,
        expr: &Expr,
        props: &[(String, PropValue)],
    ) -> Result<bool, ExecError> {
        let get = |name: &str| props.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        Ok(match expr {
            Expr::Not(e) => !self.matches(e, props)?,
            Expr::And(a, b) => self.matches(a, props)? && self.matches(b, props)?,
            Expr::Or(a, b) => self.matches(a, props)? || self.matches(b, props)?,
            Expr::Truthy { property, .. } => matches!(get(property), Some(PropValue::Bool(true))),
            Expr::Cmp { property, op, value, .. } => {
                let wanted = self.text(value)?;
                let Some(actual) = get(property) else { return Ok(*op == CmpOp::Ne) };
                let raw = actual.raw();
                let equal = match actual {
                    PropValue::Bool(b) => parse_bool(&wanted) == Some(*b),
                    _ => raw == wanted,
                };
                match op {
                    CmpOp::Eq => equal,
                    CmpOp::Ne => !equal,
                    CmpOp::Regex => Regex::new(&wanted)
                        .map_err(|_| failure(format!("invalid regular expression {wanted:?}")))?
                        .is_match(&raw),
                    CmpOp::Lt | CmpOp::Gt => match (raw.parse::<u64>(), wanted.parse::<u64>()) {
                        (Ok(a), Ok(b)) => {
                            if *op == CmpOp::Lt {
                                a < b
                            } else {
                                a > b
                            }
                        }
                        _ => {
                            if *op == CmpOp::Lt {
                                raw < wanted
                            } else {
                                raw > wanted
                            }
                        }
                    },
                }
            }
        })
    }

    // ---- /file ---------------------------------------------------------------------------

    fn file_rows(&mut self, filter: Option<&Expr>) -> Result<Vec<FileRow>, ExecError> {
        let mut out = Vec::new();
        for (index, entry) in self.store.files().into_iter().enumerate() {
            let mut props = vec![
                ("name".to_string(), PropValue::Str(entry.name.clone())),
                ("type".to_string(), PropValue::Str(entry.kind.name().into())),
            ];
            if entry.kind == FileKind::File {
                props.push(("size".to_string(), PropValue::Size(entry.size)));
            }
            props.push(("last-modified".to_string(), PropValue::Bare(timestamp(entry.modified))));
            let id = format!("*{:X}", index + 1);
            let mut values = vec![(".id".to_string(), PropValue::Bare(id))];
            values.extend(props.iter().cloned());
            if let Some(expr) = filter
                && !self.matches(expr, &values)?
            {
                continue;
            }
            let row = Row { index, flags: Vec::new(), comment: String::new(), props };
            out.push((row, values, entry.name));
        }
        Ok(out)
    }

    fn print_files(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let rows = self.file_rows(args.filter)?;
        let (rows, values): (Vec<_>, Vec<_>) = rows.into_iter().map(|(r, v, _)| (r, v)).unzip();
        self.print(&args, rows, values, &["name", "type", "size", "last-modified"])
    }

    fn find_files(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let rows = self.file_rows(args.filter)?;
        Ok(RValue::Ids(rows.into_iter().map(|(_, v, _)| v[0].1.raw()).collect()))
    }

    /// The item references of a command's unnamed arguments: names, or `*N` ids from
    /// `[find ...]` (an empty find gives none).
    pub(crate) fn item_refs(&mut self, args: &Args) -> Result<Vec<String>, ExecError> {
        let mut refs = Vec::new();
        for (value, _) in &args.unnamed {
            match self.eval(value)? {
                RValue::Ids(ids) => refs.extend(ids),
                RValue::Text(t) => refs.push(t),
                _ => return Err(no_such_item()),
            }
        }
        Ok(refs)
    }

    /// Resolves file references (names or `*N` ids from `find`) to names.
    fn file_names(&mut self, args: &Args) -> Result<Vec<String>, ExecError> {
        let all = self.file_rows(None)?;
        let mut names = Vec::new();
        for r in self.item_refs(args)? {
            let found = all
                .iter()
                .find(|(_, v, name)| v[0].1.raw() == r || *name == r.trim_start_matches('/'));
            names.push(found.ok_or_else(no_such_item)?.2.clone());
        }
        Ok(names)
    }

    fn file_remove(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        reject_unknown(&args, &[])?;
        for name in self.file_names(&args)? {
            if !name.contains('/') {
                return Err(failure("can not remove disk"));
            }
            self.store.remove_file(&name).map_err(|e| match e.kind() {
                std::io::ErrorKind::DirectoryNotEmpty => failure("directory not empty"),
                _ => io_failure(e),
            })?;
            self.mutated = true;
        }
        Ok(RValue::Nothing)
    }

    /// `/file/copy SRC name=DST` (7.23+): a full, sparse-preserving copy of one file.
    fn file_copy(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        reject_unknown(&args, &["name"])?;
        let src = self.file_names(&args)?.into_iter().next().ok_or_else(no_such_item)?;
        let (dst, _) = args.named.get("name").ok_or_else(|| failure("missing value for name"))?;
        let dst = self.text(dst)?;
        let dst = crate::store::normalize_path(&dst).ok_or_else(|| no_match("name"))?;
        let len = self.store.file_len(&src).ok_or_else(|| failure("can only copy files"))?;
        if self.store.file_len(&dst).is_some() {
            return Err(failure("file already exists"));
        }
        self.store.size_file(&dst, len, false).map_err(io_failure)?;
        self.store.copy_range(&src, 0, &dst, 0, len).map_err(io_failure)?;
        self.mutated = true;
        Ok(RValue::Nothing)
    }
}

/// A `/file` entry: its print row, its as-value properties, and its name.
/// `as-value` properties of one row, in print order.
type PropList = Vec<(String, PropValue)>;
type FileRow = (Row, PropList, String);

/// Named arguments outside `allowed` are `expected end of command` at their position.
pub(crate) fn reject_unknown(args: &Args, allowed: &[&str]) -> Result<(), ExecError> {
    let mut bad: Vec<Pos> =
        args.named.iter().filter(|(k, _)| !allowed.contains(k)).map(|(_, (_, p))| *p).collect();
    bad.sort_by_key(|p| (p.line, p.column));
    bad.first().map_or(Ok(()), |p| Err(end_of_command(*p)))
}

pub(crate) fn io_failure(e: std::io::Error) -> ExecError {
    failure(e)
}

fn kv_line(props: &[(String, PropValue)]) -> String {
    props.iter().map(|(k, v)| format!("{k}={}", v.raw())).collect::<Vec<_>>().join(";")
}

/// `/system clock` at `t`: the emulator's clock runs in UTC.
fn clock(t: SystemTime) -> Vec<(String, PropValue)> {
    let stamp = timestamp(t);
    let (date, time) = stamp.split_once(' ').unwrap_or_default();
    let b = |s: &str| PropValue::Bare(s.to_string());
    vec![
        ("time".into(), b(time)),
        ("date".into(), b(date)),
        ("time-zone-autodetect".into(), b("no")),
        ("time-zone-name".into(), b("UTC")),
        ("gmt-offset".into(), b("+00:00")),
        ("dst-active".into(), b("no")),
    ]
}

/// `2026-11-22 00:50:00` (RouterOS 7.10+ style), UTC.
pub fn timestamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;

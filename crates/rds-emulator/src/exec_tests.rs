use std::time::Instant;

use super::*;
use crate::store::InitOptions;

struct Rds {
    _dir: tempfile::TempDir,
    store: Store,
    b: Behaviour,
}

impl Rds {
    fn new() -> Rds {
        Self::with(Behaviour::default())
    }
    fn with(b: Behaviour) -> Rds {
        let dir = tempfile::tempdir().unwrap();
        let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: 100 << 30 };
        let store = Store::open(dir.path(), &init).unwrap();
        Rds { _dir: dir, store, b }
    }
    fn run(&mut self, line: &str) -> Outcome {
        run_line(line, &mut self.store, &self.b, Instant::now())
    }
    /// Output of a line that must succeed.
    fn ok(&mut self, line: &str) -> String {
        let o = self.run(line);
        assert!(!o.failed, "{line}: {}", o.output);
        o.output
    }
    fn err(&mut self, line: &str) -> String {
        let o = self.run(line);
        assert!(o.failed, "{line} should fail: {}", o.output);
        o.output.trim_end().to_string()
    }
    fn json(&mut self, inner: &str) -> serde_json::Value {
        let out = self.ok(&format!(":put [:serialize to=json [{inner}]]"));
        serde_json::from_str(out.trim_end()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

const ADD: &str = r#"/disk add type=file slot=pvc-1 file-path=/storage-pool/csi/pvc-1.img file-size=10G nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-1" comment="rds-csi""#;

#[test]
fn add_creates_a_real_sparse_file_and_prints_nothing() {
    let mut rds = Rds::new();
    assert_eq!(rds.ok(ADD), "");
    assert_eq!(rds.store.file_len("storage-pool/csi/pvc-1.img"), Some(10 << 30));
    let rows = rds.json(r#"/disk print detail as-value where slot="pvc-1""#);
    let d = &rows[0];
    assert_eq!(d["size"], 10u64 << 30);
    assert_eq!(d["file-path"], "/storage-pool/csi/pvc-1.img");
    assert_eq!(d["model"], "/storage-pool/csi/pvc-1.img");
    assert_eq!(d["nvme-tcp-server-nqn"], "nqn.2000-02.com.mikrotik:pvc-1");
    assert_eq!(d["nvme-tcp-export"], true);
    assert_eq!(d["comment"], "rds-csi");
    assert_eq!(d[".id"], "*2");
    assert!(d.get("status").is_none());
}

#[test]
fn detail_print_is_the_real_format() {
    let mut rds = Rds::new();
    rds.ok(ADD);
    let out = rds.ok(r#"/disk print detail where slot="pvc-1""#);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT");
    assert_eq!(lines[1], "1 Bt ;;; rds-csi", "index is the position in the whole table");
    assert!(
        lines[2].starts_with(r#"     type=file slot="pvc-1" slot-default="" parent="" fs=-"#),
        "{out}"
    );
    assert!(out.contains("size=10 737 418 240"), "{out}");
    assert!(out.contains("file-size=10.0GiB"), "{out}");
    assert!(out.contains("file-path=/storage-pool/csi/pvc-1.img"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
}

#[test]
fn pool_tracks_the_files_on_it() {
    let mut rds = Rds::new();
    let pool = rds.json(r#"/disk print detail as-value where mount-point="storage-pool""#);
    assert_eq!(pool[0]["free"], 100u64 << 30);
    rds.ok(ADD);
    let pool = rds.json(r#"/disk print as-value where slot="storage-pool""#);
    assert_eq!(pool[0]["free"], 90u64 << 30);
    assert_eq!(pool[0]["use"], 10);
    assert_eq!(pool[0]["mounted"], true);
    // Removing the disk leaves the file, and the space stays used (VERIFIED semantics).
    rds.ok(r#"/disk remove [find slot="pvc-1"]"#);
    assert_eq!(rds.store.file_len("storage-pool/csi/pvc-1.img"), Some(10 << 30));
    assert_eq!(rds.json("/disk print as-value where slot=storage-pool")[0]["free"], 90u64 << 30);
    rds.ok(r#"/file remove "storage-pool/csi/pvc-1.img""#);
    assert_eq!(rds.store.file_len("storage-pool/csi/pvc-1.img"), None);
    assert_eq!(rds.json("/disk print as-value where slot=storage-pool")[0]["free"], 100u64 << 30);
}

#[test]
fn routeros_error_texts() {
    let mut rds = Rds::new();
    rds.ok(ADD);
    assert_eq!(rds.err("/disk frob"), "bad command name frob (line 1 column 7)");
    assert_eq!(
        rds.err("/disk add type=file bogus=1"),
        "expected end of command (line 1 column 21)"
    );
    assert_eq!(rds.err("/disk add type=floppy"), "input does not match any value of type");
    assert_eq!(rds.err("/disk remove nosuch"), "no such item");
    assert_eq!(rds.err("/disk set nosuch comment=x"), "no such item");
    assert_eq!(
        rds.err("/disk add type=file slot=pvc-1 file-path=storage-pool/other.img file-size=1G"),
        "failure: item with this name already exists"
    );
    assert_eq!(
        rds.err("/disk set pvc-1 nvme-tcp-export=maybe"),
        "input does not match any value of nvme-tcp-export"
    );
    assert_eq!(rds.err("/disk set pvc-1 file-size=lots"), "invalid value for argument file-size");
    // status/creation-time/nvme-tcp-host-nqn do not exist on RouterOS (spec §1.2).
    assert!(rds.err("/disk set pvc-1 status=ready").starts_with("expected end of command"));
}

#[test]
fn empty_find_is_a_silent_no_op() {
    let mut rds = Rds::new();
    assert_eq!(rds.ok(r#"/disk remove [find slot="missing"]"#), "");
    assert_eq!(rds.ok(r#"/disk set [find slot="missing"] comment=x"#), "");
}

#[test]
fn version_gates() {
    let mut old = Rds::with(Behaviour { version: "7.20".parse().unwrap(), ..Behaviour::default() });
    let line = "/disk add type=file slot=a file-path=storage-pool/a.img file-size=1G nvme-tcp-server-nqn=x";
    assert!(old.err(line).starts_with("expected end of command (line 1 column 70)"));
    old.ok(
        "/disk add type=file slot=a file-path=storage-pool/a.img file-size=1G nvme-tcp-export=yes",
    );
    let d = old.json("/disk print as-value where slot=a");
    assert!(d[0].get("nvme-tcp-server-nqn").is_none());
    let mut older =
        Rds::with(Behaviour { version: "7.16".parse().unwrap(), ..Behaviour::default() });
    assert!(
        older.err("/disk add type=file file-path=x.img").starts_with("expected end of command")
    );
    assert!(rds_err_starts(&mut old, "/file/copy a b", "bad command name copy"));
}

fn rds_err_starts(rds: &mut Rds, line: &str, prefix: &str) -> bool {
    rds.err(line).starts_with(prefix)
}

#[test]
fn resize_grows_and_shrinks_the_real_file() {
    let mut rds = Rds::new();
    rds.ok(ADD);
    rds.ok("/disk set pvc-1 file-size=20G");
    assert_eq!(rds.store.file_len("storage-pool/csi/pvc-1.img"), Some(20 << 30));
    rds.ok("/disk set [find slot=pvc-1] file-size=21474836480");
    rds.ok("/disk set pvc-1 file-size=5G");
    assert_eq!(
        rds.store.file_len("storage-pool/csi/pvc-1.img"),
        Some(5 << 30),
        "shrink truncates by default"
    );
    let mut careful = Rds::with(Behaviour { refuse_shrink: true, ..Behaviour::default() });
    careful.ok(ADD);
    assert_eq!(
        careful.err("/disk set pvc-1 file-size=5G"),
        "failure: file-size can not be decreased"
    );
    assert_eq!(rds.err("/disk set pvc-1 file-size=200G"), "failure: not enough disk space");
}

#[test]
fn where_operators_and_find_ids() {
    let mut rds = Rds::new();
    rds.ok(ADD);
    rds.ok("/disk add type=file slot=pvc-2 file-path=storage-pool/csi/pvc-2.img file-size=1G");
    assert_eq!(rds.ok(r#":put [/disk find slot~"^pvc-"]"#), "*2;*3\n");
    assert_eq!(rds.ok(r#":put [/disk find where slot~"^pvc-" and nvme-tcp-export]"#), "*2\n");
    assert_eq!(rds.ok(r#":put [/disk find slot!="pvc-1" type=file]"#), "*3\n");
    assert_eq!(rds.ok("/disk print count-only where type=file"), "2\n");
    assert_eq!(rds.ok("/disk print count-only where size>2000000000"), "2\n", "pool and pvc-1");
    assert_eq!(
        rds.ok(":put [/disk add type=file slot=pvc-3 file-path=storage-pool/p3.img file-size=1G]"),
        "*4\n"
    );
}

#[test]
fn joined_statements_stop_at_the_first_error() {
    let mut rds = Rds::new();
    let o = rds.run("/disk add type=file slot=a file-path=storage-pool/a.img file-size=1G; /disk remove nosuch; /disk remove a");
    assert!(o.failed && o.mutated);
    assert_eq!(o.output, "no such item\n");
    assert_eq!(rds.json("/disk print as-value where slot=a").as_array().unwrap().len(), 1);
}

#[test]
fn copy_from_copies_properties_and_optionally_data() {
    for copy_data in [false, true] {
        let mut rds = Rds::with(Behaviour { copy_from_data: copy_data, ..Behaviour::default() });
        rds.ok(ADD);
        let src = rds.store.host_path("storage-pool/csi/pvc-1.img");
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::File::options().write(true).open(&src).unwrap(),
            b"DATA",
            4096,
        )
        .unwrap();
        rds.ok(r#"/disk add copy-from=[find slot=pvc-1] slot=snap-1 file-path=storage-pool/csi/snap-1.img nvme-tcp-export=no"#);
        let snap = &rds.json("/disk print as-value where slot=snap-1")[0];
        assert_eq!(snap["size"], 10u64 << 30, "file-size copied");
        assert_eq!(snap["comment"], "rds-csi", "comment copied");
        let mut buf = [0u8; 4];
        let dst = std::fs::File::open(rds.store.host_path("storage-pool/csi/snap-1.img")).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&dst, &mut buf, 4096).unwrap();
        assert_eq!(&buf == b"DATA", copy_data, "data copied only with the switch");
    }
}

#[test]
fn block_copy_between_disks() {
    let mut rds = Rds::new();
    rds.ok(ADD);
    rds.ok("/disk add type=file slot=b file-path=storage-pool/b.img file-size=10G");
    let src = std::fs::File::options()
        .write(true)
        .open(rds.store.host_path("storage-pool/csi/pvc-1.img"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&src, b"BLOCK", 1 << 30).unwrap();
    rds.ok("/disk copy src=pvc-1 dst=b");
    let mut buf = [0u8; 5];
    let dst = std::fs::File::open(rds.store.host_path("storage-pool/b.img")).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&dst, &mut buf, 1 << 30).unwrap();
    assert_eq!(&buf, b"BLOCK");
}

#[test]
fn file_menu() {
    let mut rds = Rds::with(Behaviour { version: "7.23".parse().unwrap(), ..Behaviour::default() });
    rds.ok(ADD);
    let files = rds.json("/file print as-value");
    let names: Vec<&str> =
        files.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["storage-pool", "storage-pool/csi", "storage-pool/csi/pvc-1.img"],
        "no leading slash"
    );
    assert_eq!(files[0]["type"], "disk");
    assert_eq!(files[2]["size"], 10u64 << 30);
    rds.ok(r#"/file/copy "storage-pool/csi/pvc-1.img" name="storage-pool/csi/clone.img""#);
    assert_eq!(rds.store.file_len("storage-pool/csi/clone.img"), Some(10 << 30));
    assert_eq!(rds.err(r#"/file remove "storage-pool/csi""#), "failure: directory not empty");
    assert_eq!(rds.err(r#"/file remove "storage-pool""#), "failure: can not remove disk");
    assert_eq!(rds.err(r#"/file remove "nope.img""#), "no such item");
    rds.ok(r#"/file remove [find name~"clone"]"#);
    assert_eq!(rds.store.file_len("storage-pool/csi/clone.img"), None);
    let detail = rds.ok("/file print detail where type=file");
    assert!(
        detail.contains(r#"name="storage-pool/csi/pvc-1.img" type="file" size=10.0GiB"#),
        "{detail}"
    );
}

#[test]
fn system_menus() {
    let mut rds = Rds::new();
    let out = rds.ok("/system resource print");
    assert!(out.contains("  version: 7.21 (stable)\n"), "{out}");
    assert!(out.lines().all(|l| l.contains(": ")), "{out}");
    assert_eq!(rds.json("/system resource print as-value")["version"], "7.21 (stable)");
    rds.ok(r#"/system identity set name="rds-lab""#);
    assert_eq!(rds.ok("/system/identity/print"), "  name: rds-lab\n");
}

#[test]
fn disk_full_and_slot_derivation() {
    let mut rds = Rds::new();
    assert_eq!(
        rds.err("/disk add type=file slot=big file-path=storage-pool/big.img file-size=101G"),
        "failure: not enough disk space"
    );
    assert_eq!(rds.store.file_len("storage-pool/big.img"), None, "nothing created on failure");
    rds.ok("/disk add type=file file-path=storage-pool/swapfile file-size=1G");
    assert_eq!(
        rds.json("/disk print as-value where type=file")[0]["slot"],
        "file-storage-pool-swapfile"
    );
}

#[test]
fn script_if_len_and_error() {
    let mut r = Rds::new();
    r.ok("/disk add type=file slot=pvc-a file-path=storage-pool/v/pvc-a.img file-size=1M comment=\"x\"");
    assert_eq!(r.ok(":put [:len [/disk find where slot=\"pvc-a\"]]"), "1\n");
    assert_eq!(r.ok(":put [:len [/disk find where slot=\"pvc-a\" and file-path=\"/storage-pool/v/pvc-a.img\"]]"), "1\n");
    assert_eq!(
        r.ok(":put [:len [/disk find where slot=\"pvc-a\" and !(comment~\" paused=\")]]"),
        "1\n"
    );
    assert_eq!(r.ok(":put [:len [/disk find where slot=\"pvc-b\"]]"), "0\n");
}

#[test]
fn script_if_runs_one_branch_and_error_stops_the_line() {
    let mut r = Rds::new();
    r.ok("/disk add type=file slot=pvc-a file-path=storage-pool/v/pvc-a.img file-size=1M");
    let line = |slot: &str| {
        format!(
            ":if ([:len [/disk find where slot=\"{slot}\"]] > 0) do={{:error \"kept {slot}\"}} else={{:put \"free\"}}; :put \"after\""
        )
    };
    assert_eq!(r.err(&line("pvc-a")), "kept pvc-a", "the error stops the line");
    assert_eq!(r.ok(&line("pvc-b")), "free\nafter\n");
    assert_eq!(
        r.ok(":if (2 < 10) do={:put yes} else={:put no}"),
        "yes\n",
        "numbers compare as numbers"
    );
    assert_eq!(r.ok(":if (\"b\" != \"b\") do={:put yes}"), "", "no else: nothing");
    assert_eq!(r.ok(":put [:len \"abc\"]"), "3\n");
    assert!(r.err(":if [:len 1] do={:put x}").contains("syntax error"));
    assert!(r.err(":if (1 = 1) do=\"x\"").contains("needs a { block }"));
}

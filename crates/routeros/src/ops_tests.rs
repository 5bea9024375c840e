use proptest::prelude::*;

use super::*;
use crate::{
    grammar::RdsGrammar,
    ssh_answer::parse_ssh,
    syntax::{Statement, parse_line, tests::named},
};

fn new_disk(comment: &str) -> NewDisk {
    NewDisk {
        slot: Slot::new("pvc-1").unwrap(),
        file: FilePath::new("storage-pool/metal-csi/pvc-1.img").unwrap(),
        size: 10 << 30,
        nqn: Nqn::new("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
        port: 4420,
        comment: comment.into(),
        copy_from: None,
        server_nqn_supported: true,
        export: true,
        allowed_hosts: Vec::new(),
    }
}

fn parse(line: &str) -> Vec<Statement> {
    parse_line(line, &RdsGrammar { file_copy: true, btrfs: true }).unwrap()
}

/// Both RouterOS file time formats read as the same instant (UTC); nonsense is `None`.
#[test]
fn file_times_in_both_formats() {
    assert_eq!(file_time("2025-11-11 16:47:07"), Some(1_762_879_627));
    assert_eq!(file_time("nov/11/2025 16:47:07"), Some(1_762_879_627));
    assert_eq!(file_time("1970-01-01 00:00:00"), Some(0));
    assert_eq!(file_time("2024-02-29 12:00:00"), Some(1_709_208_000));
    assert_eq!(file_time("13/11/2025 16:47:07"), None);
    assert_eq!(file_time("2025-13-11 16:47:07"), None);
    assert_eq!(file_time("yesterday"), None);
}

#[test]
fn create_is_one_line_with_the_confirming_read() {
    let line = ssh_line(&Op::CreateDisk(new_disk("rds-csi")), ReadFormat::Json);
    assert_eq!(
        line,
        r#"/disk add type=file slot="pvc-1" file-path="storage-pool/metal-csi/pvc-1.img" file-size=10737418240 nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-1" comment="rds-csi"; :put [:serialize to=json [/disk print detail as-value where slot="pvc-1"]]"#
    );
    let stmts = parse(&line);
    assert_eq!(stmts.len(), 2);
    let mut old = new_disk("x");
    old.server_nqn_supported = false;
    assert!(
        !ssh_line(&Op::CreateDisk(old), ReadFormat::Json).contains("nvme-tcp-server-nqn"),
        "7.20 and older"
    );
}

#[test]
fn delete_is_one_idempotent_line() {
    let op = Op::DeleteDisk {
        slot: Slot::new("pvc-1").unwrap(),
        file: FilePath::new("/storage-pool/a/pvc-1.img").unwrap(),
    };
    assert_eq!(
        ssh_line(&op, ReadFormat::Json),
        r#"/disk remove [find slot="pvc-1"]; /file remove [find name="storage-pool/a/pvc-1.img"]"#
    );
    assert_eq!(parse_ssh(&op, "", ReadFormat::Json), Ok(Answer::Done));
    let calls = rest_calls(&op);
    assert_eq!(
        (calls.len(), calls[0].path.as_str()),
        (1, "/execute"),
        "REST delete is one request"
    );
    let failed = serde_json::json!({"ret": "failure: busy"});
    assert_eq!(
        parse_rest(&op, &[failed]).unwrap_err().label(),
        "unexpected",
        "errors hide in a 200 answer"
    );
    assert_eq!(parse_rest(&op, &[serde_json::json!({"ret": ""})]), Ok(Answer::Done));
}

#[test]
fn list_prefix_is_an_anchored_escaped_regex() {
    let line = ssh_line(&Op::ListDisks { slot_prefix: "pvc-".into() }, ReadFormat::Json);
    assert!(line.ends_with(r#"where slot~"^pvc-"]]"#), "{line}");
    let line = ssh_line(
        &Op::ListFiles { under: FilePath::new("storage-pool/metal-csi").unwrap() },
        ReadFormat::Json,
    );
    assert!(line.contains(r#"name~"^storage-pool/metal-csi/""#), "{line}");
    let line = ssh_line(&Op::ListDisks { slot_prefix: "a.b".into() }, ReadFormat::Json);
    assert!(line.contains(r#"slot~"^a\\.b""#), "{line}");
}

#[test]
fn json_answers_and_errors() {
    let op = Op::CreateDisk(new_disk("c"));
    let out = "[{\".id\":\"*2\",\"type\":\"file\",\"slot\":\"pvc-1\",\"size\":10737418240,\"file-path\":\"/storage-pool/metal-csi/pvc-1.img\",\"file-size\":10737418240,\"nvme-tcp-export\":true,\"nvme-tcp-server-port\":4420,\"nvme-tcp-server-nqn\":\"nqn.2000-02.com.mikrotik:pvc-1\",\"nvme-tcp-server-allow-host-name\":\"\",\"comment\":\"c\",\"disabled\":false}]\r\n";
    let Ok(Answer::Disk(d)) = parse_ssh(&op, out, ReadFormat::Json) else { panic!() };
    assert_eq!((d.id.as_str(), d.size, d.export, d.port), ("*2", 10 << 30, true, Some(4420)));
    assert_eq!(d.file.as_deref(), Some("storage-pool/metal-csi/pvc-1.img"));
    assert_eq!(d.nqn.as_deref(), Some("nqn.2000-02.com.mikrotik:pvc-1"));
    let err = parse_ssh(&op, "failure: item with this name already exists\r\n", ReadFormat::Json)
        .unwrap_err();
    assert_eq!(err, RosError::AlreadyExists("failure: item with this name already exists".into()));
    let err = parse_ssh(&Op::GetDisk(Slot::new("x").unwrap()), "[{\"slot\":1", ReadFormat::Json)
        .unwrap_err();
    assert_eq!(err.label(), "unexpected");
    assert_eq!(
        parse_ssh(&Op::GetDisk(Slot::new("x").unwrap()), "[]\r\n", ReadFormat::Json),
        Ok(Answer::MaybeDisk(None))
    );
    let sys = "{\"uptime\":\"1s\",\"version\":\"7.21 (stable)\",\"board-name\":\"RDS2216\"}\r\n{\"name\":\"rds-lab\"}\r\n";
    let Ok(Answer::System(s)) = parse_ssh(&Op::System, sys, ReadFormat::Json) else { panic!() };
    assert_eq!((s.identity.as_str(), s.version_number()), ("rds-lab", Some((7, 21))));
}

#[test]
fn rest_strings_are_parsed_and_errors_mapped() {
    let body: Value = serde_json::from_str(r#"[{".id":"*2","slot":"pvc-1","size":"10737418240","nvme-tcp-export":"true","disabled":"false","nvme-tcp-server-port":"4420"}]"#).unwrap();
    let Ok(Answer::MaybeDisk(Some(d))) =
        parse_rest(&Op::GetDisk(Slot::new("pvc-1").unwrap()), &[body])
    else {
        panic!()
    };
    assert_eq!((d.size, d.export, d.port), (10 << 30, true, Some(4420)));
    assert_eq!(
        rest_error(
            400,
            r#"{"error":400,"message":"Bad Request","detail":"failure: not enough disk space"}"#
        )
        .label(),
        "no_space"
    );
    assert_eq!(
        rest_error(401, r#"{"error":401,"message":"Unauthorized"}"#).label(),
        "permission_denied"
    );
    assert_eq!(rest_error(404, r#"{"error":404,"message":"Not Found"}"#).label(), "not_found");
    assert_eq!(
        rest_error(400, r#"{"detail":"Session closed","error":400,"message":"Bad Request"}"#)
            .label(),
        "timeout"
    );
    let create = rest_calls(&Op::CreateDisk(new_disk("c")));
    assert_eq!((create.len(), create[0].method, create[0].path.as_str()), (1, "PUT", "/disk"));
    assert_eq!(create[0].body.as_ref().unwrap()["file-size"], "10737418240");
}

fn slot() -> impl Strategy<Value = Slot> {
    "[a-z0-9][a-z0-9.-]{0,40}".prop_map(|s| Slot::new(&s).unwrap())
}

fn path() -> impl Strategy<Value = FilePath> {
    "[a-z0-9-]{1,12}(/[a-z0-9._-]{1,12}){0,3}"
        .prop_filter("no dot segments", |s| s.split('/').all(|p| p != "." && p != ".."))
        .prop_map(|s| FilePath::new(&s).unwrap())
}

proptest! {
    /// Whatever the comment (any Unicode), the create line is exactly two statements: the add
    /// with exactly the intended arguments, and the read.
    #[test]
    fn op_lines_cannot_be_injected(comment in "\\PC*", s in slot(), p in path(), size in 1u64..u64::MAX / 2) {
        let mut d = new_disk(&comment);
        d.slot = s.clone();
        d.file = p.clone();
        d.size = size;
        let stmts = parse(&ssh_line(&Op::CreateDisk(d), ReadFormat::Json));
        prop_assert_eq!(stmts.len(), 2);
        prop_assert_eq!(named(&stmts[0]), vec![
            ("type".to_string(), "file".to_string()),
            ("slot".to_string(), s.to_string()),
            ("file-path".to_string(), p.to_string()),
            ("file-size".to_string(), size.to_string()),
            ("nvme-tcp-export".to_string(), "yes".to_string()),
            ("nvme-tcp-server-port".to_string(), "4420".to_string()),
            ("nvme-tcp-server-nqn".to_string(), "nqn.2000-02.com.mikrotik:pvc-1".to_string()),
            ("comment".to_string(), comment.clone()),
        ]);
        let set = parse(&ssh_line(&Op::SetComment { slot: s, comment: comment.clone() }, ReadFormat::Json));
        prop_assert_eq!(set.len(), 1);
        prop_assert_eq!(named(&set[0]), vec![("comment".to_string(), comment)]);
    }

    #[test]
    fn json_parsing_never_panics(out in "\\PC*") {
        let _ = parse_ssh(&Op::ListDisks { slot_prefix: "pvc-".into() }, &out, ReadFormat::Json);
        let _ = parse_ssh(&Op::System, &out, ReadFormat::Json);
    }
}

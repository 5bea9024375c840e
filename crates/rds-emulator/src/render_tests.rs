//! Golden tests: real RDS output from spec §1.5 reproduced byte for byte.

use super::*;
use crate::{
    model::{Disk, FileDisk, Kind, NvmeExport, Usage},
    version::Version,
};

/// The capture's terminal was between 230 and 240 columns wide (both captures agree).
const CAPTURE_WIDTH: usize = 235;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn capture_disk() -> Disk {
    Disk {
        id: 0x1F,
        slot: "vm-storage-001".into(),
        comment: String::new(),
        disabled: false,
        kind: Kind::File(FileDisk {
            path: "raid10/vm-storage-001.img".into(),
            size: 1 << 40,
            offset: 0,
        }),
        nvme: NvmeExport {
            export: true,
            port: 4420,
            nqn: "nqn.2026-09.com.mikrotik:rds2216.vm-storage-001".into(),
            allow_host_name: String::new(),
        },
        compress: false,
    }
}

fn row_of(disk: &Disk, index: usize, version: Version) -> Row {
    Row {
        index,
        flags: disk.flags(),
        comment: disk.comment.clone(),
        props: disk
            .properties(version, Usage::default())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

#[test]
fn file_disk_detail_matches_the_real_capture() {
    let expected = concat!(
        "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT\n",
        r#"31 Bt type=file slot="vm-storage-001" slot-default="" parent="" fs=- model="/raid10/vm-storage-001.img" size=1 099 511 627 776 mount-filesystem=no mount-read-only=no compress=no sector-size=512 raid-master=none nvme-tcp-export=yes"#,
        "\n",
        r#"      nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2026-09.com.mikrotik:rds2216.vm-storage-001" nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no media-interface=none swap=no"#,
        "\n",
        "      file-path=/raid10/vm-storage-001.img file-size=1024.0GiB file-offset=0\n",
    );
    let row = row_of(&capture_disk(), 31, v("7.21"));
    let got = detail(&[row], Layout { width: CAPTURE_WIDTH, header_on_empty: true });
    assert_eq!(got, expected);
}

#[test]
fn pool_entries_match_the_real_capture_layout() {
    // The pool capture with its elided UUIDs restored to full length.
    let s = |x: &str| PropValue::Str(x.into());
    let b = |x: &str| PropValue::Bare(x.into());
    let i = PropValue::Int;
    let props = vec![
        ("type", b("raid")),
        ("slot", s("raid10")),
        ("slot-default", s("")),
        ("parent", s("")),
        ("fs-label", s("ocp-storage")),
        ("fs-uuid", s("4043a1b2-0c3d-4e5f-8a9b-0c1d2e3f4a5b")),
        ("fs", b("xfs")),
        ("model", s("RAID0 striped")),
        ("size", i(16_003_143_565_312)),
        ("free", i(14_789_895_307_264)),
        ("total-inodes", i(1_562_806_656)),
        ("free-inodes", i(1_562_806_652)),
        ("use", PropValue::Percent(8)),
        ("mount-point", s("raid10")),
        ("mount-filesystem", PropValue::Bool(true)),
    ];
    let rows = [
        Row {
            index: 26,
            flags: vec!['B', 'M'],
            comment: String::new(),
            props: props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        },
        Row {
            index: 27,
            flags: vec!['B', 'r'],
            comment: String::new(),
            props: vec![("type".into(), b("raid"))],
        },
    ];
    let got = detail(&rows, Layout { width: CAPTURE_WIDTH, header_on_empty: true });
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "Flags: B - BLOCK-DEVICE; M - MOUNTED; r - RAID-MEMBER");
    assert!(
        lines[1].starts_with(
            r#"26 BM  type=raid slot="raid10" slot-default="" parent="" fs-label="ocp-storage""#
        ),
        "{got}"
    );
    assert!(lines[1].ends_with("total-inodes=1 562 806 656"), "{got}");
    assert_eq!(
        lines[2],
        "       free-inodes=1 562 806 652 use=8% mount-point=\"raid10\" mount-filesystem=yes"
    );
    assert_eq!(lines[3], " ", "entries are separated by a line holding one space");
    assert_eq!(lines[4], "27 B r type=raid");
}

#[test]
fn exec_width_splits_a_long_token_mid_token() {
    let mut disk = capture_disk();
    let uuid = "0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
    disk.slot = format!("pvc-{uuid}");
    disk.kind = Kind::File(FileDisk {
        path: format!("storage-pool/metal-csi/pvc-{uuid}.img"),
        size: 10 << 30,
        offset: 0,
    });
    let got = detail(&[row_of(&disk, 3, v("7.21"))], Layout { width: 80, header_on_empty: true });
    for line in got.lines() {
        assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
    }
    let token = format!("file-path=/storage-pool/metal-csi/pvc-{uuid}.img");
    assert!(!got.lines().any(|l| l.contains(&token)), "the 80+ column token must be split:\n{got}");
    let rejoined: String = got.lines().map(|l| l.trim_start()).collect::<Vec<_>>().join("");
    assert!(rejoined.contains(&token), "split pieces rejoin:\n{got}");
    // Continuation lines are indented under the first property: "3 Bt " is 5 columns.
    assert!(got.lines().skip(2).all(|l| l.starts_with("     ")), "{got}");
}

#[test]
fn flags_header_wraps_between_groups() {
    let rows = [Row {
        index: 0,
        flags: vec!['B', 'M', 'S', 'g', 'p'],
        comment: String::new(),
        props: vec![],
    }];
    let got = detail(&rows, Layout { width: 60, header_on_empty: true });
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "Flags: B - BLOCK-DEVICE; M - MOUNTED, S - SWAP-ENABLED");
    assert_eq!(lines[1], "       g - GUID-PARTITION-TABLE, p - PARTITION");
    assert_eq!(lines[2], "0 BMg ");
}

#[test]
fn comment_line_and_empty_prints() {
    let mut disk = capture_disk();
    disk.comment = "rds-csi: pvc demo/data".into();
    let got = detail(&[row_of(&disk, 1, v("7.21"))], Layout { width: 80, header_on_empty: true });
    assert_eq!(got.lines().nth(1), Some("1 Bt ;;; rds-csi: pvc demo/data"));
    assert!(got.lines().nth(2).unwrap().starts_with("     type=file "));
    let empty = detail(&[], Layout { width: 80, header_on_empty: true });
    assert!(empty.starts_with("Flags: X - DISABLED; A - ACQUIRED"), "{empty}");
    assert_eq!(detail(&[], Layout { width: 80, header_on_empty: false }), "");
}

#[test]
fn before_7_21_there_is_no_server_nqn_and_before_7_18_no_compress() {
    let text = detail(
        &[row_of(&capture_disk(), 0, v("7.20"))],
        Layout { width: 0, header_on_empty: true },
    );
    assert!(!text.contains("nvme-tcp-server-nqn"), "{text}");
    assert!(text.contains("compress=no"));
    let text = detail(
        &[row_of(&capture_disk(), 0, v("7.17"))],
        Layout { width: 0, header_on_empty: true },
    );
    assert!(!text.contains("compress"), "{text}");
    assert!(!text.contains("status"), "no status field anywhere");
}

#[test]
fn unexported_disks_omit_server_fields_and_terse_is_raw() {
    let mut disk = capture_disk();
    disk.nvme.export = false;
    let row = row_of(&disk, 0, v("7.21"));
    let text = detail(std::slice::from_ref(&row), Layout { width: 0, header_on_empty: true });
    assert!(!text.contains("nvme-tcp-server-port"), "{text}");
    assert!(text.starts_with("Flags: B - BLOCK-DEVICE\n0 B type=file"), "{text}");
    let t = terse(&[row]);
    assert!(t.contains(" slot=vm-storage-001 "), "{t}");
    assert!(t.contains(" size=1099511627776 "), "{t}");
    assert!(t.contains(" file-size=1099511627776 "), "{t}");
    assert_eq!(t.lines().count(), 1);
}

#[test]
fn table_drops_columns_that_do_not_fit() {
    let row = row_of(&capture_disk(), 0, v("7.21"));
    let wide = table(std::slice::from_ref(&row), &["slot", "model", "size", "fs"], 200);
    assert!(wide.contains("Columns: SLOT, MODEL, SIZE, FS"), "{wide}");
    let narrow = table(&[row], &["slot", "model", "size", "fs"], 40);
    assert!(narrow.contains("Columns: SLOT\n"), "{narrow}");
}

#[test]
fn json_rows_are_typed() {
    let disk = capture_disk();
    let props = disk.value_properties(v("7.21"), Usage::default());
    let json = json_row(&props);
    assert_eq!(json[".id"], "*1F");
    assert_eq!(json["size"], 1_099_511_627_776u64);
    assert_eq!(json["nvme-tcp-export"], true);
    assert_eq!(json["block-device"], true);
    assert_eq!(json["disabled"], false);
    assert_eq!(json["file-path"], "/raid10/vm-storage-001.img");
    assert_eq!(json["comment"], "");
}

#[test]
fn a_long_token_at_the_end_of_a_full_line_starts_a_new_line() {
    // Found by `rendered_detail_parses_back`: the line before the long model= token used to end
    // with a trailing space at column 81.
    let path = "a-/a_0a-aa0a00_--a_--___a0a0_0aaaa/aaa_aa-0a-__a0aa0_a-_-0--0_aaa_";
    let disk = Disk {
        id: 2,
        slot: "0aa--0-a0--a-0aa-aa-a-0a0a".into(),
        comment: String::new(),
        disabled: false,
        kind: Kind::File(FileDisk { path: path.into(), size: 0, offset: 0 }),
        nvme: NvmeExport {
            export: false,
            port: 4420,
            nqn: "nqn.-".into(),
            allow_host_name: String::new(),
        },
        compress: false,
    };
    let text =
        detail(&[row_of(&disk, 100, v("7.21"))], Layout { width: 80, header_on_empty: true });
    assert!(text.lines().all(|l| l.chars().count() <= 80 && !l.ends_with(' ')), "{text}");
    let entry = &routeros::detail::parse(&text)[0];
    let back = routeros::ops::disk_from(&routeros::detail::to_object(entry)).unwrap();
    assert_eq!(back.file.as_deref(), Some(path), "{text}");
}

mod parse_back {
    use proptest::prelude::*;
    use routeros::detail;

    use super::*;

    fn disk() -> impl Strategy<Value = (Disk, usize)> {
        (
            "[a-z0-9][a-z0-9.-]{0,60}",
            "[a-z0-9-]{1,20}(/[a-z0-9._-]{1,40}){1,3}",
            0u64..(1 << 50),
            any::<bool>(),
            "nqn\\.[a-z0-9.:-]{1,120}",
            "[ -~]{0,60}",
            1usize..3000,
        )
            .prop_map(|(slot, path, size, export, nqn, comment, index)| {
                let disk = Disk {
                    id: 2,
                    slot,
                    comment: comment.trim().to_string(),
                    disabled: false,
                    kind: Kind::File(FileDisk { path, size, offset: 0 }),
                    nvme: NvmeExport { export, port: 4420, nqn, allow_host_name: String::new() },
                    compress: false,
                };
                (disk, index)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the values, the client's detail parser recovers exactly what the
        /// emulator's renderer printed, at the exec width, the capture's width and unwrapped.
        #[test]
        fn rendered_detail_parses_back(entries in proptest::collection::vec(disk(), 1..4), width in prop_oneof![Just(80usize), Just(235), Just(0)]) {
            let rows: Vec<Row> = entries.iter().map(|(d, i)| row_of(d, *i, v("7.21"))).collect();
            let text = detail(&rows, Layout { width, header_on_empty: true });
            let parsed = detail::parse(&text);
            prop_assert_eq!(parsed.len(), entries.len(), "{}", text);
            for ((disk, _), entry) in entries.iter().zip(&parsed) {
                let obj = detail::to_object(entry);
                let back = routeros::ops::disk_from(&obj).unwrap();
                let Kind::File(f) = &disk.kind else { unreachable!() };
                prop_assert_eq!(&back.slot, &disk.slot, "{}", text);
                prop_assert_eq!(back.size, f.size, "{}", text);
                prop_assert_eq!(back.file.as_deref(), Some(f.path.as_str()), "{}", text);
                prop_assert_eq!(back.export, disk.nvme.export);
                prop_assert_eq!(&back.comment, &disk.comment, "{}", text);
                if disk.nvme.export {
                    prop_assert_eq!(back.nqn.as_deref(), Some(disk.nvme.nqn.as_str()), "{}", text);
                    prop_assert_eq!(back.port, Some(4420));
                }
            }
        }
    }
}

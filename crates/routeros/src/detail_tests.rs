use proptest::prelude::*;

use super::*;
use crate::{ops::ReadFormat, types::Slot};

/// Real RDS output (spec §1.5), as captured in a wide terminal.
const CAPTURE: &str = concat!(
    "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT\r\n",
    r#"31 Bt type=file slot="vm-storage-001" slot-default="" parent="" fs=- model="/raid10/vm-storage-001.img" size=1 099 511 627 776 mount-filesystem=no mount-read-only=no compress=no sector-size=512 raid-master=none nvme-tcp-export=yes"#,
    "\r\n",
    r#"      nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2026-09.com.mikrotik:rds2216.vm-storage-001" nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no media-interface=none swap=no"#,
    "\r\n",
    "      file-path=/raid10/vm-storage-001.img file-size=1024.0GiB file-offset=0\r\n",
);

/// An entry at the 80-column exec width as the emulator renders it: two values split
/// mid-token, and one line (the 4th) that is exactly 80 columns at a token boundary.
const EXEC_80: &str = "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT
1 Bt ;;; rds-csi: default/data
     type=file slot=\"pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b\" slot-default=\"\"
     parent=\"\" fs=- model=\"/storage-pool/metal-csi/pvc-0f8e4b1c-2a3d-4e5f-9a8b-7
     c6d5e4f3a2b.img\" size=10 737 418 240 mount-filesystem=no mount-read-only=no
     compress=no sector-size=512 raid-master=none nvme-tcp-export=yes
     nvme-tcp-server-port=4420 nvme-tcp-server-nqn=\"nqn.2000-02.com.mikrotik:pvc
     -0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b\" nvme-tcp-server-allow-host-name=\"\"
     iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no
     media-interface=none swap=no file-path=/storage-pool/metal-csi/pvc-0f8e4b1c
     -2a3d-4e5f-9a8b-7c6d5e4f3a2b.img file-size=10.0GiB file-offset=0
";

fn prop<'a>(e: &'a Entry, key: &str) -> &'a str {
    e.props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {e:?}"))
}

#[test]
fn the_real_capture() {
    let entries = parse(CAPTURE);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.flags, ['B', 't']);
    assert_eq!(prop(e, "size"), "1 099 511 627 776");
    assert_eq!(prop(e, "model"), "/raid10/vm-storage-001.img");
    assert_eq!(prop(e, "nvme-tcp-server-nqn"), "nqn.2026-09.com.mikrotik:rds2216.vm-storage-001");
    assert_eq!(prop(e, "file-path"), "/raid10/vm-storage-001.img");
    assert_eq!(prop(e, "nvme-tcp-server-allow-host-name"), "");
    let Ok(Answer::MaybeDisk(Some(d))) =
        answer(&Op::GetDisk(Slot::new("vm-storage-001").unwrap()), CAPTURE)
    else {
        panic!()
    };
    assert_eq!(d.size, 1_099_511_627_776, "exact bytes from size, not from file-size=1024.0GiB");
    assert!(d.export);
    assert_eq!(d.port, Some(4420));
}

#[test]
fn exec_width_wraps_and_mid_token_splits_are_undone() {
    let entries = parse(EXEC_80);
    let e = &entries[0];
    assert_eq!(e.comment, "rds-csi: default/data");
    assert_eq!(
        prop(e, "model"),
        "/storage-pool/metal-csi/pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b.img"
    );
    assert_eq!(
        prop(e, "file-path"),
        "/storage-pool/metal-csi/pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b.img"
    );
    assert_eq!(prop(e, "size"), "10 737 418 240");
    assert_eq!(prop(e, "nvme-tcp-server-port"), "4420");
    assert_eq!(prop(e, "file-size"), "10.0GiB");
    let Ok(Answer::Disks(disks)) = answer(&Op::ListDisks { slot_prefix: "pvc-".into() }, EXEC_80)
    else {
        panic!()
    };
    assert_eq!(disks[0].size, 10 << 30);
    assert_eq!(disks[0].comment, "rds-csi: default/data");
}

#[test]
fn a_split_tail_that_looks_like_an_entry_number_is_a_continuation() {
    // Found by the emulator's render/parse property test.
    let out = concat!(
        "Flags: B - BLOCK-DEVICE\n",
        "1 B type=file slot=\"0\" slot-default=\"\" parent=\"\" fs=-\n",
        "    model=\"/-0a0a0a/-0-0___a-0a_0-__a-a-a000--aa0/0aaa-a-00--00_a0-__/_-a0_-00\"\n",
        "    size=10 000 mount-filesystem=no mount-read-only=no compress=no\n",
        "    sector-size=512 raid-master=none nvme-tcp-export=no iscsi-export=no\n",
        "    nfs-sharing=no smb-sharing=no media-sharing=no media-interface=none swap=no\n",
        "    file-path=/-0a0a0a/-0-0___a-0a_0-__a-a-a000--aa0/0aaa-a-00--00_a0-__/_-a0_-0\n",
        "    0 file-size=10000B file-offset=0\n",
    );
    let entries = parse(out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        prop(&entries[0], "file-path"),
        "/-0a0a0a/-0-0___a-0a_0-__a-a-a000--aa0/0aaa-a-00--00_a0-__/_-a0_-00"
    );
    assert_eq!(prop(&entries[0], "size"), "10 000");
}

#[test]
fn pool_entries_and_separators() {
    let out = "Flags: B - BLOCK-DEVICE; M - MOUNTED\n0 BM type=raid slot=\"storage-pool\" fs=xfs size=1 099 511 627 776\n     free=1 088 774 209 536 use=1% mount-point=\"storage-pool\"\n \n1 B  type=file slot=\"a\" size=1 048 576\n";
    let entries = parse(out);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].flags, ['B', 'M']);
    let Ok(Answer::Pool(Some(pool))) =
        answer(&Op::Pool { mount_point: "storage-pool".into() }, out)
    else {
        panic!()
    };
    assert_eq!((pool.size, pool.free), (1 << 40, 1_088_774_209_536));
}

#[test]
fn errors_and_empty_prints() {
    assert_eq!(
        answer(&Op::GetDisk(Slot::new("x").unwrap()), "no such item\r\n").unwrap_err().label(),
        "not_found"
    );
    let header_only = "Flags: X - DISABLED; A - ACQUIRED; E - EMPTY; B - BLOCK-DEVICE\n";
    assert_eq!(
        answer(&Op::GetDisk(Slot::new("x").unwrap()), header_only),
        Ok(Answer::MaybeDisk(None))
    );
    assert_eq!(answer(&Op::GetDisk(Slot::new("x").unwrap()), ""), Ok(Answer::MaybeDisk(None)));
    let sys = "  version: 7.20.8 (stable)\n  board-name: RDS2216\n  name: lab\n";
    let Ok(Answer::System(s)) = crate::ssh_answer::parse_ssh(&Op::System, sys, ReadFormat::Detail)
    else {
        panic!()
    };
    assert_eq!((s.version_number(), s.identity.as_str()), (Some((7, 20)), "lab"));
    // `/system clock print` of RouterOS before 7.10 writes the date as `dec/01/2026`.
    let clock = "      time: 21:15:00\n      date: dec/01/2026\n  time-zone-name: Europe/Riga\n      gmt-offset: +02:00\n";
    let Ok(Answer::Clock(c)) = crate::ssh_answer::parse_ssh(&Op::Clock, clock, ReadFormat::Detail)
    else {
        panic!()
    };
    assert_eq!(c.time, crate::values::file_time("2026-12-01 21:15:00"));
    assert_eq!((c.zone.as_str(), c.gmt_offset.as_deref()), ("Europe/Riga", Some("+02:00")));
    assert_eq!(
        answer(&Op::Clock, "bad command name clock\n").unwrap_err().label(),
        "invalid_argument"
    );
}

proptest! {
    #[test]
    fn never_panics(out in "(\\PC|\n| {6}|[0-9]+ B?t? |[a-z-]+=|\"){0,300}") {
        let _ = parse(&out);
        let _ = answer(&Op::ListDisks { slot_prefix: String::new() }, &out);
        let _ = answer(&Op::System, &out);
    }
}

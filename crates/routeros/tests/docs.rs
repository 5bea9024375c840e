//! docs/routeros.md lists every command the client sends, over both transports, exactly as
//! sent for these sample values. This test keeps the document true.

use routeros::{
    ops::{NewDisk, NewSubvolume, Op, ReadFormat, rest_calls, ssh_line},
    types::{FilePath, Nqn, Slot},
};

pub fn samples() -> Vec<Op> {
    let slot = Slot::new("pvc-1").unwrap();
    let file = FilePath::new("storage-pool/metal-csi/pvc-1.img").unwrap();
    let nqn = Nqn::new("nqn.2000-02.com.mikrotik:pvc-1").unwrap();
    let disk = NewDisk {
        slot: slot.clone(),
        file: file.clone(),
        size: 10737418240,
        nqn,
        port: 4420,
        comment: "rds-csi".into(),
        copy_from: None,
        server_nqn_supported: true,
        export: true,
        // With storage fencing (the default) a new volume allows no node until published.
        allowed_hosts: vec![Nqn::new("nqn.2000-02.io.srvlab.rds-csi:fenced").unwrap()],
    };
    vec![
        Op::CreateDisk(disk),
        Op::GetDisk(slot.clone()),
        Op::ListDisks { slot_prefix: "pvc-".into() },
        Op::SetFileSize { slot: slot.clone(), size: 21474836480 },
        Op::SetExport {
            slot: slot.clone(),
            export: true,
            allowed_hosts: vec![Nqn::new("nqn.2014-08.org.nvmexpress:uuid:1").unwrap()],
        },
        Op::SetComment { slot: slot.clone(), comment: "rds-csi".into() },
        Op::SetCompress { slot: slot.clone(), compress: true },
        Op::DeleteDisk { slot: slot.clone(), file: file.clone() },
        Op::DeleteVolumeDisk {
            slot: slot.clone(),
            bases: vec![FilePath::new("storage-pool/metal-csi").unwrap()],
            keep_comment: " paused=".into(),
        },
        Op::RemoveFile(file.clone()),
        Op::RemoveLeftover {
            bases: vec![FilePath::new("storage-pool/metal-csi").unwrap()],
            name: Slot::new("pvc-1.img").unwrap(),
        },
        Op::ListFiles { under: FilePath::new("storage-pool/metal-csi").unwrap() },
        Op::Pool { mount_point: "storage-pool".into() },
        Op::CopyDisk { src: slot.clone(), dst: Slot::new("pvc-2").unwrap(), range: None },
        Op::CopyDisk {
            src: slot,
            dst: Slot::new("snap-2").unwrap(),
            range: Some((1073741824, 1073741824)),
        },
        Op::CopyFile { src: file, dst: FilePath::new("storage-pool/metal-csi/pvc-2.img").unwrap() },
        Op::System,
        Op::Clock,
        Op::AddSubvolume(NewSubvolume {
            fs: "btrfs-pool-fs".into(),
            name: Slot::new("pvc-1").unwrap(),
            parent: None,
            read_only: false,
        }),
        Op::AddSubvolume(NewSubvolume {
            fs: "btrfs-pool-fs".into(),
            name: Slot::new("snap-1").unwrap(),
            parent: Some(Slot::new("pvc-1").unwrap()),
            read_only: true,
        }),
        Op::GetSubvolume(Slot::new("pvc-1").unwrap()),
        Op::RemoveSubvolume(Slot::new("snap-1").unwrap()),
    ]
}

#[test]
fn docs_list_every_command_exactly() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/routeros.md"))
            .unwrap();
    let mut missing = Vec::new();
    for op in samples() {
        for format in [ReadFormat::Json, ReadFormat::Detail] {
            let line = ssh_line(&op, format);
            if !doc.contains(&line) {
                missing.push(format!("{} ({format:?}): {line}", op.name()));
            }
        }
        for call in rest_calls(&op) {
            let request = format!("{} /rest{}", call.method, call.path);
            let body = call.body.map(|b| format!(" {b}")).unwrap_or_default();
            if !doc.contains(&format!("{request}{body}")) {
                missing.push(format!("{}: {request}{body}", op.name()));
            }
        }
    }
    assert!(missing.is_empty(), "docs/routeros.md does not list:\n{}", missing.join("\n"));
}

// The ops whose answers are parsed, with fixed sample values (shared by the answer targets).
use routeros::{
    ops::{NewDisk, Op},
    types::{FilePath, Nqn, Slot},
};

pub fn ops() -> Vec<Op> {
    let slot = Slot::new("pvc-1").unwrap();
    let file = FilePath::new("storage-pool/metal-csi/pvc-1.img").unwrap();
    let base = FilePath::new("storage-pool/metal-csi").unwrap();
    vec![
        Op::GetDisk(slot.clone()),
        Op::ListDisks { slot_prefix: "pvc-".into() },
        Op::ListFiles { under: base.clone() },
        Op::Pool { mount_point: "storage-pool".into() },
        Op::System,
        Op::Clock,
        Op::GetSubvolume(slot.clone()),
        Op::SetFileSize { slot: slot.clone(), size: 1 << 30 },
        Op::CreateDisk(NewDisk {
            slot: slot.clone(),
            file,
            size: 1 << 30,
            nqn: Nqn::new("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            port: 4420,
            comment: "rds-csi".into(),
            copy_from: None,
            server_nqn_supported: true,
            export: true,
            allowed_hosts: Vec::new(),
        }),
        Op::DeleteVolumeDisk { slot, bases: vec![base], keep_comment: " paused=".into() },
    ]
}

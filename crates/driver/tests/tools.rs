//! The operator tools (`rds-csi volumes|snapshots|attachments|orphans|doctor`), black-box: the
//! real binary against the in-process emulator over real SSH, with the cluster read from a mock
//! Kubernetes API server on loopback (HTTP, a kubeconfig naming it) that answers fixed objects
//! and records every request, so the tests assert the exact reads (and that nothing is
//! written). The orphan deletion's confirmation runs on a real pseudo-terminal.

mod support;

use std::{
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use csi::v1::{
    ControllerPublishVolumeRequest, CreateSnapshotRequest, volume_capability::access_mode::Mode,
};
use serde_json::{Value, json};
use support::{
    BIN, Daemon, cap,
    controller::{GIB, create, start_with_flags},
    kube::{pv, va},
    rds::{Rds, rds},
};

const DRIVER: &str = "rds.csi.srvlab.io";
const A: &str = "pvc-0a0a0a0a-0000-4000-8000-00000000000a";
const B: &str = "pvc-0b0b0b0b-0000-4000-8000-00000000000b";
const LEFTOVER: &str = "pvc-0c0c0c0c-0000-4000-8000-00000000000c";

/// A mock API server on loopback: lists and gets answered from fixed objects, every request
/// recorded as `METHOD path?query`.
struct Api {
    kubeconfig: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

async fn api(pvs: Vec<Value>, vas: Vec<Value>) -> Api {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let list = |kind: &str, version: &str, items: &[Value]| json!({ "apiVersion": version, "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items });
    let pv_list = list("PersistentVolume", "v1", &pvs);
    let va_list = list("VolumeAttachment", "storage.k8s.io/v1", &vas);
    let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "rds-csi-controller-0", "namespace": "kube-system" },
        "spec": { "containers": [
            { "name": "rds-csi", "image": "ghcr.io/srvlab/rds-csi:0.1.0" },
            { "name": "csi-provisioner", "image": "registry.k8s.io/sig-storage/csi-provisioner:v5.3.0" },
            { "name": "csi-snapshotter", "image": "registry.k8s.io/sig-storage/csi-snapshotter:v6.3.3" } ] } });
    let pod_list = list("Pod", "v1", &[pod]);
    let csidriver = json!({ "apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": { "name": DRIVER },
        "spec": { "attachRequired": true, "podInfoOnMount": true } });
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (record, pv_list, va_list, pod_list, csidriver) =
            (record.clone(), pv_list.clone(), va_list.clone(), pod_list.clone(), csidriver.clone());
        async move {
            let uri = req.uri().clone();
            let line = format!("{} {}", req.method(), uri.path_and_query().unwrap());
            record.lock().unwrap().push(line);
            let body = match (req.method().as_str(), uri.path()) {
                ("GET", "/api/v1/persistentvolumes") => pv_list,
                ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => va_list,
                ("GET", "/api/v1/namespaces/kube-system/pods") => pod_list,
                ("GET", p) if p == format!("/apis/storage.k8s.io/v1/csidrivers/{DRIVER}") => {
                    csidriver
                }
                _ => {
                    let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound" });
                    return (axum::http::StatusCode::NOT_FOUND, axum::Json(status));
                }
            };
            (axum::http::StatusCode::OK, axum::Json(body))
        }
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tcp, app).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://{address}\n\
             users:\n- name: operator\n  user:\n    token: t0ken\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: operator\n\
             current-context: mock\n"
        ),
    )
    .unwrap();
    Api { kubeconfig, seen, _dir: dir }
}

impl Api {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The tool's flags to reach `rds` over SSH and the cluster through `api`.
fn flags(rds: &Rds, api: Option<&Api>) -> Vec<String> {
    let mut f: Vec<String> = vec![
        "--rds-address".into(),
        rds.address.clone(),
        "--rds-ssh-key-file".into(),
        rds.key_file.display().to_string(),
        "--rds-host-key".into(),
        rds.fingerprint.clone(),
        "--rds-orphan-grace-seconds".into(),
        "0".into(),
    ];
    match api {
        Some(a) => f.extend(["--kubeconfig".into(), a.kubeconfig.display().to_string()]),
        None => f.push("--no-cluster".into()),
    }
    f
}

/// Runs `rds-csi <tool> <args>` (off the async runtime: the emulator and the API server run
/// on it) with stdin closed.
async fn tool(tool: &str, args: Vec<String>) -> Output {
    let tool = tool.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg(&tool)
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// An RDS with volume A (claim db/data, bound, held by two nodes: a migration), volume B
/// (claim web/cache in its comment, no PV: an orphan), a snapshot of A, and a managed file no
/// disk uses (a leftover).
async fn scene() -> (Rds, Daemon, Api) {
    let (rds, daemon, mut c) =
        start_with_flags(rds().await, "ssh", &["--known-node-id", "node-1"]).await;
    for (id, ns, name) in [(A, "db", "data"), (B, "web", "cache")] {
        let params =
            [("csi.storage.k8s.io/pvc/namespace", ns), ("csi.storage.k8s.io/pvc/name", name)];
        c.create_volume(create(id, GIB, &params)).await.unwrap();
    }
    let snap = CreateSnapshotRequest {
        name: "nightly".into(),
        source_volume_id: A.into(),
        ..Default::default()
    };
    c.create_snapshot(snap).await.unwrap();
    // Published to node-1: with storage fencing the disk allows node-1's host NQN only.
    let publish = ControllerPublishVolumeRequest {
        volume_id: A.into(),
        node_id: "node-1".into(),
        volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    c.controller_publish_volume(publish).await.unwrap();
    let leftover =
        rds.emu.with_store(|s| s.host_path(&format!("storage-pool/metal-csi/{LEFTOVER}.img")));
    std::fs::write(leftover, vec![0u8; 4096]).unwrap();
    let now = k8s_now(-30);
    let api = api(
        vec![pv(DRIVER, "pv-a", A, "db", "data", json!({ "migrationTimeoutSeconds": "600" }))],
        vec![
            va(DRIVER, "csi-a1", "pv-a", "node-1", true, &k8s_now(-3600)),
            va(DRIVER, "csi-a2", "pv-a", "node-2", true, &now),
        ],
    )
    .await;
    (rds, daemon, api)
}

/// RFC 3339 time `offset_s` from now.
fn k8s_now(offset_s: i64) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64
        + offset_s;
    k8s_openapi::jiff::Timestamp::from_second(t).unwrap().to_string()
}

fn rows<'a>(doc: &'a Value, key: &str) -> Vec<(&'a str, &'a Value)> {
    doc.as_array().unwrap().iter().map(|r| (r[key].as_str().unwrap(), r)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_snapshots_and_attachments_join_the_rds_and_the_cluster() {
    let (rds, _daemon, api) = scene().await;

    let doc = json_of(
        &tool("volumes", [flags(&rds, Some(&api)), vec!["-o".into(), "json".into()]].concat())
            .await,
    );
    let v = rows(&doc, "volume");
    let view: Vec<(&str, &str, &str)> = v
        .iter()
        .map(|(id, r)| (*id, r["state"].as_str().unwrap(), r["pvc"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        view,
        [(A, "bound", "db/data"), (B, "orphan", "web/cache"), (LEFTOVER, "leftover-file", "-")],
        "the PV's claim, the comment's, and a file without a disk: {doc:#}"
    );
    assert_eq!(v[0].1["holders"], json!(["node-1", "node-2"]));
    assert_eq!(v[0].1["allows"], "node-1", "the allow list, by node name");
    assert_eq!(v[0].1["pv"], "pv-a");
    assert_eq!(v[0].1["size"], GIB);
    assert_eq!(
        api.take(),
        ["GET /api/v1/persistentvolumes?", "GET /apis/storage.k8s.io/v1/volumeattachments?"],
        "two lists, nothing written"
    );

    let doc = json_of(
        &tool("snapshots", [flags(&rds, None), vec!["-o".into(), "json".into()]].concat()).await,
    );
    let s = doc.as_array().unwrap();
    assert_eq!(s.len(), 1, "{doc:#}");
    assert_eq!(
        (&s[0]["source"], &s[0]["mechanism"], &s[0]["state"], &s[0]["size"]),
        (&json!(A), &json!("disk-copy"), &json!("ready"), &json!(GIB))
    );

    let doc = json_of(
        &tool("attachments", [flags(&rds, Some(&api)), vec!["-o".into(), "json".into()]].concat())
            .await,
    );
    let a = rows(&doc, "node");
    assert_eq!(a.len(), 2);
    for (_, r) in &a {
        assert_eq!(r["pvc"], "db/data");
        let left = r["migration_left_s"].as_i64().unwrap();
        assert!((560..=600).contains(&left), "a 600 s window opened 30 s ago: {left}");
    }
    // The controller granted node-1 only: node-2's VolumeAttachment is not backed by the disk.
    assert_eq!(
        (a[0].1["fence"].as_str(), a[1].1["fence"].as_str()),
        (Some("allowed"), Some("fenced-out"))
    );

    let table = tool("attachments", flags(&rds, Some(&api))).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("2 attachment(s), 1 migration(s) in progress"), "{text}");
    assert!(text.lines().next().unwrap().starts_with("VOLUME"), "{text}");

    // Without cluster access attachments cannot be known: a clear error.
    let out = tool("attachments", flags(&rds, None)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs cluster access"));
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_without_the_cluster_show_the_comment_and_the_leftover_file() {
    let (rds, _daemon, _api) = scene().await;
    let out = tool("volumes", [flags(&rds, None), vec!["-o".into(), "json".into()]].concat()).await;
    let doc = json_of(&out);
    let states: Vec<(&str, &str)> = rows(&doc, "volume")
        .into_iter()
        .map(|(id, r)| (id, r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(A, "unknown"), (B, "unknown"), (LEFTOVER, "leftover-file")]);
    assert_eq!(doc[0]["pvc"], "db/data", "from the disk comment");
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: --no-cluster"));

    let out = tool("volumes", vec![]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no RDS to read") && err.contains("kubectl -n <namespace> exec"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_and_explains() {
    let (rds, _daemon, api) = scene().await;
    let sysfs = tempfile::tempdir().unwrap();
    for m in ["nvme_tcp", "nvme_fabrics"] {
        std::fs::create_dir_all(sysfs.path().join("module").join(m)).unwrap();
    }
    let hostnqn = sysfs.path().join("hostnqn");
    std::fs::write(
        &hostnqn,
        "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n",
    )
    .unwrap();
    // The NVMe/TCP port: a listener on loopback stands for the RDS's.
    let nvme = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = vec![
        "-o".to_string(),
        "json".into(),
        "--namespace".into(),
        "kube-system".into(),
        "--sysfs".into(),
        sysfs.path().display().to_string(),
        "--host-nqn-file".into(),
        hostnqn.display().to_string(),
        "--nvme-address".into(),
        "127.0.0.1".into(),
        "--nvme-port".into(),
        nvme.local_addr().unwrap().port().to_string(),
    ];
    let out = tool("doctor", [flags(&rds, Some(&api)), extra.clone()].concat()).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: Vec<(&str, &str)> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("rds-reachable", "OK"),
            ("host-key", "OK"),
            ("routeros-version", "OK"),
            ("pool-space", "OK"),
            ("clock", "OK"),
            ("nvme-tcp-port", "OK"),
            ("kernel-modules", "OK"),
            ("host-nqn", "OK"),
            ("nqn-prefix", "OK"),
            ("csidriver", "OK"),
            ("sidecars", "WARN"),
        ],
        "{doc:#}"
    );
    assert!(out.status.success(), "warnings only: exit 0");
    let sidecars = &doc[10];
    assert!(sidecars["found"].as_str().unwrap().contains("csi-snapshotter v6.3 < v8.2"));
    assert!(sidecars["fix"].as_str().unwrap().contains("values.yaml"));
    assert_eq!(
        api.take(),
        [
            format!("GET /apis/storage.k8s.io/v1/csidrivers/{DRIVER}"),
            "GET /api/v1/namespaces/kube-system/pods?&labelSelector=app.kubernetes.io%2Fname%3Drds-csi".to_string(),
        ]
    );

    // A wrong host key and a closed NVMe/TCP port: FAIL lines with the fix, exit code 1.
    drop(nvme);
    let mut bad = flags(&rds, Some(&api));
    let i = bad.iter().position(|f| f == "--rds-host-key").unwrap();
    bad[i + 1] = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let out = tool("doctor", [bad, extra].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by =
        |name: &str| doc.as_array().unwrap().iter().find(|c| c["check"] == name).unwrap().clone();
    assert_eq!(by("host-key")["status"], "FAIL");
    assert!(by("host-key")["fix"].as_str().unwrap().contains("ssh-keygen -lf"));
    assert_eq!(by("nvme-tcp-port")["status"], "FAIL");
    assert_eq!(by("pool-space")["status"], "SKIP");

    // In a node pod (no RDS credentials): the node's checks only.
    let node = [
        "--no-cluster",
        "-o",
        "json",
        "--sysfs",
        sysfs.path().to_str().unwrap(),
        "--host-nqn-file",
        hostnqn.to_str().unwrap(),
        "--nvme-address",
        "127.0.0.1",
        "--nvme-port",
        "1",
    ];
    let out = tool("doctor", node.map(String::from).to_vec()).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: Vec<&str> =
        doc.as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(
        status,
        ["SKIP", "SKIP", "SKIP", "SKIP", "SKIP", "FAIL", "OK", "OK", "OK", "SKIP", "SKIP"],
        "{doc:#}"
    );
    assert!(doc[0]["found"].as_str().unwrap().contains("controller pod"));
}

/// A pseudo-terminal: (controller side, the terminal's path side as an fd for the child).
fn pty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the pointers; no name, termios or size given.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds were just opened by openpty and are owned here.
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs `rds-csi orphans` on a terminal, answers `answer` to its question, returns what the
/// terminal showed and the exit code.
async fn on_terminal(args: Vec<String>, answer: &'static str) -> (String, Option<i32>) {
    tokio::task::spawn_blocking(move || {
        let (mut master, slave) = pty();
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        let mut child = Command::new(BIN)
            .arg("orphans")
            .args(&args)
            .stdin(fd(&slave))
            .stdout(fd(&slave))
            .stderr(fd(&slave))
            .spawn()
            .unwrap();
        drop(slave);
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let started = Instant::now();
        let mut answered = false;
        // SAFETY: a plain fcntl on an fd owned by `master`.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        loop {
            assert!(started.elapsed() < Duration::from_secs(60), "no end: {seen}");
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Drain what is left.
                        while let Ok(n) = master.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                        return (seen, status.code());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break, // EIO: the terminal's last holder exited
            }
            if !answered && seen.contains("Type 'yes' to delete:") {
                master.write_all(answer.as_bytes()).unwrap();
                answered = true;
            }
        }
        (seen, child.wait().unwrap().code())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_asks_on_a_terminal_and_deletes_only_orphans() {
    let (rds, _daemon, api) = scene().await;
    let base = flags(&rds, Some(&api));
    let disk_exists = |id: &str| rds.emu.with_store(|s| s.disks().iter().any(|d| d.slot == id));

    // The report: B and the leftover file; never A (its PV) or the snapshot.
    let doc =
        json_of(&tool("orphans", [base.clone(), vec!["-o".into(), "json".into()]].concat()).await);
    let names: Vec<&str> = rows(&doc, "name").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [B, &format!("storage-pool/metal-csi/{LEFTOVER}.img")[..]]);

    // --delete without a terminal and without --yes: refused, nothing deleted.
    let out = tool("orphans", [base.clone(), vec!["--delete".into()]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    assert!(disk_exists(B));

    // On a terminal, anything but "yes" keeps everything.
    let (seen, code) = on_terminal([base.clone(), vec!["--delete".into()]].concat(), "no\n").await;
    assert_eq!(code, Some(1), "{seen}");
    assert!(
        seen.contains("Delete 2 orphan(s) from the RDS?") && seen.contains("nothing deleted"),
        "{seen}"
    );
    assert!(disk_exists(B));

    // "yes": both deleted, with progress; A and the snapshot stay.
    let (seen, code) = on_terminal([base.clone(), vec!["--delete".into()]].concat(), "yes\n").await;
    assert_eq!(code, Some(0), "{seen}");
    assert!(seen.contains(&format!("[1/2] deleting disk {B} ... deleted")), "{seen}");
    assert!(
        seen.contains(&format!(
            "[2/2] deleting file storage-pool/metal-csi/{LEFTOVER}.img ... deleted"
        )),
        "{seen}"
    );
    assert!(!disk_exists(B) && disk_exists(A));
    let snaps =
        rds.emu.with_store(|s| s.disks().iter().filter(|d| d.slot.starts_with("snap-")).count());
    assert_eq!(snaps, 1, "snapshots are never orphans");
    let leftover =
        rds.emu.with_store(|s| s.file_len(&format!("storage-pool/metal-csi/{LEFTOVER}.img")));
    assert_eq!(leftover, None);

    // --older-than: nothing that young.
    let out = tool("orphans", [base, vec!["--older-than".into(), "1d".into()]].concat()).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 orphan(s) older than 1d0h"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_reach_a_running_emulator_through_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rds_dir = dir.path().join("rds");
    let _daemon = Daemon::start_with(&[
        "--controller",
        "--emulated-rds",
        rds_dir.to_str().unwrap(),
        "--metrics-address",
        "",
    ]);
    let endpoint = rds_dir.join("ssh-endpoint");
    for _ in 0..200 {
        if endpoint.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = std::fs::read_to_string(&endpoint).unwrap();
    let args =
        vec!["--emulated-rds".to_string(), rds_dir.display().to_string(), "--no-cluster".into()];
    let out = tool("volumes", args.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 volume(s)"));
    assert_eq!(
        std::fs::read_to_string(&endpoint).unwrap(),
        before,
        "the running emulator answered: none was opened"
    );
    let out = tool("doctor", args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK    rds-reachable") && text.contains("SKIP  nvme-tcp-port"), "{text}");
}

/// Several RDS (docs/topology.md): a volume of backend rds-b has the PV handle
/// `rds-b:pvc-...` while its RDS knows the bare slot. With `--backend rds-b` the tools join
/// them (bound, no orphan); the PVs of other backends do not count for this RDS; without the
/// flag the tool reads the cluster as backend `default`'s and its volume looks orphaned,
/// which is why the flag exists.
#[tokio::test(flavor = "multi_thread")]
async fn tools_join_a_backends_volumes_by_their_prefixed_handles() {
    let (rds, _daemon, mut c) = start_with_flags(rds().await, "ssh", &[]).await;
    for (id, ns, name) in [(A, "db", "data"), (B, "web", "cache")] {
        let params =
            [("csi.storage.k8s.io/pvc/namespace", ns), ("csi.storage.k8s.io/pvc/name", name)];
        c.create_volume(create(id, GIB, &params)).await.unwrap();
    }
    // In the cluster A is rds-b's volume; a PV of backend rds-c has B's slot (another RDS).
    let api = api(
        vec![
            pv(DRIVER, "pv-a", &format!("rds-b:{A}"), "db", "data", json!({})),
            pv(DRIVER, "pv-c", &format!("rds-c:{B}"), "web", "cache", json!({})),
        ],
        vec![],
    )
    .await;
    let on_b = [
        flags(&rds, Some(&api)),
        vec!["--backend".into(), "rds-b".into(), "-o".into(), "json".into()],
    ]
    .concat();
    let doc = json_of(&tool("orphans", on_b.clone()).await);
    let names: Vec<&str> = rows(&doc, "name").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [B], "A is bound (as rds-b:{A}); B's PV is another RDS's");
    let doc = json_of(&tool("volumes", on_b).await);
    let a = rows(&doc, "volume").into_iter().find(|(v, _)| *v == A).unwrap().1;
    assert_eq!(a["pv"], "pv-a", "{a}");
    let as_default = [flags(&rds, Some(&api)), vec!["-o".into(), "json".into()]].concat();
    let doc = json_of(&tool("orphans", as_default).await);
    let names: Vec<&str> = rows(&doc, "name").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [A, B], "read as backend default, nothing is bound");
}

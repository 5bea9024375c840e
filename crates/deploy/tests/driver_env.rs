//! The real `rds-csi` binary started the way the manifests start it: the container's
//! arguments and the variables of its ConfigMap. A name the binary does not know would be
//! ignored silently (tests/manifests.rs checks names against docs/configuration.md); this
//! checks that every value parses and the settings pass start-up validation together.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use deploy::{helm, root};
use serde_json::{Value, json};

/// `RDS_CSI_BIN`, else the workspace's target/debug/rds-csi (`cargo build --bin rds-csi`).
fn binary() -> PathBuf {
    let bin = std::env::var_os("RDS_CSI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/rds-csi"));
    assert!(bin.exists(), "{} is missing: cargo build --bin rds-csi", bin.display());
    bin
}

/// The container `container` of the workload `kind`/`name`: its args and its environment
/// (the ConfigMap's data, then the literal `env` entries).
fn container(objects: &[Value], kind: &str, name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let w = objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap();
    let c = &w["spec"]["template"]["spec"]["containers"][0];
    let args = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();
    let mut env = Vec::new();
    for from in c["envFrom"].as_array().unwrap() {
        let cm = from["configMapRef"]["name"].as_str().unwrap();
        let data = &objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm)
            .unwrap()["data"];
        for (k, v) in data.as_object().unwrap() {
            env.push((k.clone(), v.as_str().unwrap().to_string()));
        }
    }
    (args, env)
}

/// Runs the binary for at most `secs`; returns (still running, stderr).
fn run(args: &[String], env: &[(String, String)], secs: u64) -> (bool, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut running = true;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            running = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (running, reader.join().unwrap())
}

#[test]
fn the_node_starts_with_the_manifests_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let objects = helm(&json!({})).unwrap();
    let (mut args, mut env) = container(&objects, "DaemonSet", "rds-csi-node");
    // The pod's paths and ports, moved into a scratch directory of this machine.
    args.retain(|a| !a.starts_with("--endpoint"));
    args.push(format!("--endpoint=unix://{}/csi.sock", dir.display()));
    env.retain(|(k, _)| k != "RDS_CSI_HOST_NQN_FILE" && k != "RDS_CSI_METRICS_ADDRESS");
    env.push(("RDS_CSI_HOST_NQN_FILE".into(), format!("{}/hostnqn", dir.display())));
    env.push(("RDS_CSI_METRICS_ADDRESS".into(), "127.0.0.1:0".into()));
    env.push(("RDS_CSI_NODE_ID".into(), "node-1".into())); // the downward API's spec.nodeName
    // Node events (on by default) need an API client: a kubeconfig stands in for the pod's
    // service account (the client connects only when an event is posted).
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n",
    )
    .unwrap();
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let (running, log) = run(&args, &env, 5);
    assert!(running, "the node exited:\n{log}");
    assert!(log.contains("CSI gRPC server listening"), "{log}");
    assert!(log.contains("\"node_id\":\"node-1\""), "JSON logs, as logFormat says: {log}");
}

#[test]
fn the_controller_accepts_the_manifests_settings_and_needs_its_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("rds-private-key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(keygen.success());
    let objects = helm(&json!({ "rds": { "address": "127.0.0.1:1" } })).unwrap();
    let (mut args, mut env) = container(&objects, "Deployment", "rds-csi-controller");
    args.retain(|a| !a.starts_with("--endpoint"));
    args.push(format!("--endpoint=unix://{}/csi.sock", dir.display()));
    assert!(
        env.contains(&("RDS_CSI_RDS_SSH_KEY_FILE".into(), "/etc/rds-csi/rds-private-key".into()))
    );
    env.retain(|(k, _)| k != "RDS_CSI_RDS_SSH_KEY_FILE" && k != "RDS_CSI_METRICS_ADDRESS");
    env.push(("RDS_CSI_RDS_SSH_KEY_FILE".into(), key.display().to_string()));
    env.push(("RDS_CSI_METRICS_ADDRESS".into(), "127.0.0.1:0".into()));
    env.push((
        "RDS_CSI_RDS_HOST_KEY".into(),
        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".into(),
    ));
    env.push(("POD_NAME".into(), "rds-csi-controller-0".into()));
    env.push(("POD_NAMESPACE".into(), "kube-system".into()));
    // Outside a cluster the controller refuses to start, after every flag was accepted: the
    // error is about Kubernetes, not about a setting.
    env.push(("KUBECONFIG".into(), dir.join("none").display().to_string()));
    let (running, log) = run(&args, &env, 20);
    assert!(!running, "the controller started outside a cluster:\n{log}");
    assert!(
        log.contains("the controller reads VolumeAttachments for fencing"),
        "not the Kubernetes error: {log}"
    );
}

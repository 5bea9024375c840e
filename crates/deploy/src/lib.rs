//! Checks of the manifests in `deploy/`: rendering (Helm's own engine through
//! `tools/helm-render`, and `kubectl kustomize`), a schema check of every object by a
//! round trip through the typed Kubernetes API of k8s-openapi (a field the type does not
//! know, or a value of the wrong type, fails), and an object-by-object comparison.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run(cmd: &mut Command, input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    if let Some(bytes) = input {
        child.stdin.take().unwrap().write_all(bytes).map_err(|e| format!("{what}: {e}"))?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

/// Objects of the chart rendered with `values` merged over values.yaml (release `rds-csi`
/// in `kube-system`, as the kustomize base).
pub fn helm(values: &Value) -> Result<Vec<Value>, String> {
    let out = run(
        Command::new("python3")
            .arg(root().join("tools/helm-render"))
            .arg("--set-json")
            .arg(values.to_string()),
        None,
    )?;
    serde_json::from_slice(&out).map_err(|e| format!("helm-render output: {e}"))
}

/// Objects of `kubectl kustomize deploy/kustomize/<dir>`, sorted as [`helm`] sorts them.
pub fn kustomize(dir: &str) -> Result<Vec<Value>, String> {
    let yaml = run(
        Command::new("kubectl").arg("kustomize").arg(root().join("deploy/kustomize").join(dir)),
        None,
    )?;
    let json = run(
        Command::new("python3").args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ]),
        Some(&yaml),
    )?;
    let mut objects: Vec<Value> = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    objects.sort_by_key(id);
    Ok(objects)
}

/// `Kind namespace/name` of an object.
pub fn id(o: &Value) -> String {
    let m = &o["metadata"];
    format!(
        "{} {}/{}",
        o["kind"].as_str().unwrap_or("?"),
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("?")
    )
}

/// The VolumeSnapshotClass of snapshot.storage.k8s.io/v1 (a CRD, not in k8s-openapi).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotClass {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    driver: String,
    deletion_policy: DeletionPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum DeletionPolicy {
    Delete,
    Retain,
}

fn round_trip<T: DeserializeOwned + Serialize>(o: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(o.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// The paths of `a` that `b` lacks or holds with another value (`b` may have more).
fn lost(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => lost(v, w, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k} (unknown field)")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                lost(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Checks `o` against the Kubernetes schema of its kind: it must deserialize into the
/// typed object and come back without losing or changing anything.
pub fn schema_check(o: &Value) -> Result<(), String> {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac,
        storage::v1 as storage,
    };
    let kind = (o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""));
    let back = match kind {
        ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(o),
        ("v1", "Secret") => round_trip::<core::Secret>(o),
        ("v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(o),
        ("v1", "Service") => round_trip::<core::Service>(o),
        ("apps/v1", "Deployment") => round_trip::<apps::Deployment>(o),
        ("apps/v1", "DaemonSet") => round_trip::<apps::DaemonSet>(o),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::PodDisruptionBudget>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<rbac::ClusterRole>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(o)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::Role>(o),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::RoleBinding>(o),
        ("storage.k8s.io/v1", "CSIDriver") => round_trip::<storage::CSIDriver>(o),
        ("storage.k8s.io/v1", "StorageClass") => round_trip::<storage::StorageClass>(o),
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass") => {
            round_trip::<VolumeSnapshotClass>(o)
        }
        (api, k) => return Err(format!("{}: no schema for {api} {k}", id(o))),
    }
    .map_err(|e| format!("{}: {e}", id(o)))?;
    let mut out = Vec::new();
    lost(o, &back, "", &mut out);
    if out.is_empty() { Ok(()) } else { Err(format!("{}: {}", id(o), out.join("; "))) }
}

/// The differences between two object lists, object by object (`ignore`: annotation keys
/// of the pod templates left out of the comparison).
pub fn compare(a: &[Value], b: &[Value], ignore: &[&str]) -> Vec<String> {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(ann) =
            o.pointer_mut("/spec/template/metadata/annotations").and_then(Value::as_object_mut)
        {
            ann.retain(|k, _| !ignore.contains(&k.as_str()));
        }
        o
    };
    let mut diffs = Vec::new();
    for x in a {
        match b.iter().find(|y| id(y) == id(x)) {
            None => diffs.push(format!("{} only in the first", id(x))),
            Some(y) => {
                let (x, y) = (strip(x), strip(y));
                let mut d = Vec::new();
                lost(&x, &y, "", &mut d);
                lost(&y, &x, "", &mut d);
                if !d.is_empty() {
                    diffs.push(format!("{}: {}", id(&x), d.join("; ")));
                }
            }
        }
    }
    for y in b {
        if !a.iter().any(|x| id(x) == id(y)) {
            diffs.push(format!("{} only in the second", id(y)));
        }
    }
    diffs
}

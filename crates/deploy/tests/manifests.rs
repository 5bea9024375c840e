//! The Helm chart and the kustomize manifests: they render, every object passes the
//! Kubernetes schema, the two agree object by object, the overlays equal the chart with the
//! matching values, and every setting an operator makes has a value.

use std::collections::BTreeSet;

use deploy::{compare, helm, id, kustomize, root, schema_check};
use serde_json::{Value, json};

/// Values that turn on every optional object and setting of the chart.
fn everything() -> Value {
    json!({
        "rds": {
            "address": "rds.example.internal:22",
            "loginSuffix": "cet1024w",
            "tlsFingerprint": "ab:cd",
            "backends": [{ "name": "rds-b", "address": "rds-b.example.internal", "sshKeyFile": "/etc/rds-csi/rds-b-private-key",
                           "hostKey": "SHA256:abc", "segments": { "topology.rds.csi.srvlab.io/zone": "b" } }],
            "secret": { "create": true, "privateKey": "KEY", "hostKey": "ssh-ed25519 AAAA", "caCert": "CA" }
        },
        "controller": { "replicas": 2, "allowedBasePaths": ["/storage-pool"], "nvmeAddress": "192.0.2.10" },
        "node": { "topologySegments": ["topology.rds.csi.srvlab.io/rds-b=true"] },
        "storageClasses": [
            { "name": "fast", "create": true, "default": true, "reclaimPolicy": "Retain",
              "volumeBindingMode": "Immediate", "allowVolumeExpansion": false,
              "parameters": { "volumePath": "/storage-pool/fast" } }
        ]
    })
}

fn rest() -> Value {
    json!({ "rds": { "transport": "rest", "restUrl": "https://rds.example.internal", "secret": { "caCert": "CA" } } })
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_rendered_object_passes_the_kubernetes_schema() {
    let mut checked = BTreeSet::new();
    let mut errors = Vec::new();
    for values in [json!({}), everything(), rest()] {
        for o in helm(&values).unwrap() {
            checked.insert(o["kind"].as_str().unwrap().to_string());
            if let Err(e) = schema_check(&o) {
                errors.push(e);
            }
        }
    }
    for dir in ["base", "overlays/controller-ha", "overlays/storage-fencing-off"] {
        for o in kustomize(dir).unwrap() {
            if let Err(e) = schema_check(&o) {
                errors.push(format!("{dir}: {e}"));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let kinds: Vec<&str> = checked.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "CSIDriver",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "ServiceAccount",
            "StorageClass",
            "VolumeSnapshotClass"
        ]
    );
}

#[test]
fn the_schema_check_catches_a_misspelt_field_and_a_wrong_type() {
    let objects = helm(&json!({})).unwrap();
    let mut ds = find(&objects, "DaemonSet", "rds-csi-node").clone();
    ds["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    assert!(schema_check(&ds).is_ok());
    ds["spec"]["template"]["spec"]["hostNetwrok"] = json!(true);
    let err = schema_check(&ds).unwrap_err();
    assert!(err.contains("hostNetwrok (unknown field)"), "{err}");
    let mut csidriver = find(&objects, "CSIDriver", "rds.csi.srvlab.io").clone();
    csidriver["spec"]["attachRequired"] = json!("yes");
    assert!(schema_check(&csidriver).is_err());
    let mut vsc = find(&objects, "VolumeSnapshotClass", "rds-csi-snapclass").clone();
    vsc["deletionPolicy"] = json!("Keep");
    assert!(schema_check(&vsc).is_err());
}

#[test]
fn a_misspelt_chart_value_is_refused() {
    let err = helm(&json!({ "controler": { "replicas": 2 } })).unwrap_err();
    assert!(err.contains("additional properties 'controler' not allowed"), "{err}");
    let err = helm(&json!({ "rds": { "transport": "telnet" } })).unwrap_err();
    assert!(err.contains("transport"), "{err}");
}

#[test]
fn the_kustomize_base_is_the_chart_with_default_values() {
    let diffs = compare(&helm(&json!({})).unwrap(), &kustomize("base").unwrap(), &[]);
    assert!(
        diffs.is_empty(),
        "run tools/helm-render --write-kustomize-base:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn each_overlay_is_the_chart_with_the_matching_values() {
    let ha = compare(
        &helm(&json!({ "controller": { "replicas": 2 } })).unwrap(),
        &kustomize("overlays/controller-ha").unwrap(),
        &[],
    );
    assert!(ha.is_empty(), "{}", ha.join("\n"));
    // The chart's checksum annotation rolls the pods on a ConfigMap change; with kustomize
    // the operator restarts them (the overlay says so).
    let off = compare(
        &helm(&json!({ "controller": { "storageFencing": false } })).unwrap(),
        &kustomize("overlays/storage-fencing-off").unwrap(),
        &["checksum/config"],
    );
    assert!(off.is_empty(), "{}", off.join("\n"));
    // And the overlays do change what they say.
    let base = kustomize("base").unwrap();
    assert_eq!(find(&base, "Deployment", "rds-csi-controller")["spec"]["replicas"], 1);
    assert_eq!(
        find(&base, "ConfigMap", "rds-csi-controller")["data"]["RDS_CSI_STORAGE_FENCING"],
        "true"
    );
}

/// Variables of docs/configuration.md the manifests set another way, or that are not for
/// clusters, with the reason.
const NOT_IN_CONFIGMAPS: &[(&str, &str)] = &[
    ("RDS_CSI_ENDPOINT", "a container argument: the socket is in the pod's /csi"),
    ("RDS_CSI_CONTROLLER", "a container argument (serve --controller)"),
    ("RDS_CSI_NODE", "a container argument (serve --node)"),
    ("RDS_CSI_NODE_ID", "from the downward API: spec.nodeName"),
    ("RDS_CSI_RDS_HOST_KEY", "from the Secret (key rds-host-key)"),
    ("RDS_CSI_LEADER_ELECTION_NAMESPACE", "POD_NAMESPACE from the downward API"),
    ("RDS_CSI_KNOWN_NODE_IDS", "only with --attachment-state memory (development)"),
    ("RDS_CSI_LOOP_ROOT", "only with --data-plane loop (development)"),
    ("RDS_CSI_EMULATED_RDS", "development: the embedded emulator"),
    ("RDS_CSI_EMULATED_RDS_NVMET", "development: the embedded emulator"),
    ("RDS_CSI_EMULATED_BACKENDS", "development: the embedded emulator"),
];

#[test]
fn every_setting_of_the_configuration_doc_has_a_value_and_nothing_else_is_set() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let documented: BTreeSet<String> = doc
        .split('`')
        .filter(|w| {
            w.starts_with("RDS_CSI_") && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .map(str::to_string)
        .collect();
    let mut set = BTreeSet::new();
    for values in [json!({}), everything(), rest()] {
        for o in helm(&values).unwrap() {
            if o["kind"] == "ConfigMap" {
                set.extend(o["data"].as_object().unwrap().keys().cloned());
            }
            if let Some(containers) = o.pointer("/spec/template/spec/containers") {
                for c in containers.as_array().unwrap() {
                    for e in c["env"].as_array().into_iter().flatten() {
                        set.insert(e["name"].as_str().unwrap().to_string());
                    }
                }
            }
        }
    }
    let missing: Vec<&String> = documented
        .iter()
        .filter(|v| !set.contains(*v) && !NOT_IN_CONFIGMAPS.iter().any(|(n, _)| n == v))
        .collect();
    assert!(missing.is_empty(), "no chart value sets {missing:?}");
    let undocumented: Vec<&String> =
        set.iter().filter(|v| v.starts_with("RDS_CSI_") && !documented.contains(*v)).collect();
    assert!(undocumented.is_empty(), "set but not in docs/configuration.md: {undocumented:?}");
    for (v, _) in NOT_IN_CONFIGMAPS {
        assert!(documented.contains(*v), "{v} is not a documented variable any more");
    }
}

#[test]
fn the_objects_say_what_the_driver_needs() {
    let o = helm(&json!({})).unwrap();
    let d = &find(&o, "CSIDriver", "rds.csi.srvlab.io")["spec"];
    assert_eq!(
        (d["attachRequired"].as_bool(), d["podInfoOnMount"].as_bool()),
        (Some(true), Some(true))
    );
    let node = &find(&o, "DaemonSet", "rds-csi-node")["spec"]["template"]["spec"];
    assert_eq!(
        (node["hostNetwork"].as_bool(), node["hostPID"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        node["automountServiceAccountToken"], true,
        "node events (on by default) need the API"
    );
    let quiet = helm(&json!({ "node": { "events": false, "recoverPods": false } })).unwrap();
    let quiet_node = &find(&quiet, "DaemonSet", "rds-csi-node")["spec"]["template"]["spec"];
    assert_eq!(quiet_node["automountServiceAccountToken"], false, "no API calls: no token");
    let plugin = &node["containers"][0];
    assert_eq!(plugin["securityContext"]["privileged"], true);
    assert_eq!(plugin["securityContext"]["runAsUser"], 0, "the image's default user is 65532");
    let kubelet = plugin["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet")
        .unwrap();
    assert_eq!(kubelet["mountPropagation"], "Bidirectional");
    let ctl = &find(&o, "Deployment", "rds-csi-controller")["spec"]["template"]["spec"];
    assert_eq!(ctl["securityContext"]["runAsNonRoot"], true);
    let names: Vec<&str> =
        ctl["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["rds-csi", "csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter",]
    );
    // The controller's liveness never depends on the RDS (its CSI Probe does: not ready while
    // the RDS is unreachable); the node's goes through CSI Probe (always ready).
    assert_eq!(ctl["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(ctl["containers"][0]["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(plugin["livenessProbe"]["httpGet"]["port"], "healthz");
    let provisioner = ctl["containers"][1]["args"].to_string();
    assert!(
        provisioner.contains("--extra-create-metadata") && provisioner.contains("Topology=true")
    );
    // A probe's named port is looked up in its own container only.
    for w in o.iter().filter(|x| x.pointer("/spec/template/spec/containers").is_some()) {
        for c in w["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            for probe in ["livenessProbe", "readinessProbe"] {
                if let Some(name) = c[probe]["httpGet"]["port"].as_str() {
                    let declared = c["ports"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name));
                    assert!(
                        declared,
                        "{} {}: {probe} port {name} is not declared there",
                        id(w),
                        c["name"]
                    );
                }
            }
        }
    }
    // No lab address anywhere: the RDS address is the operator's to set.
    let text = serde_json::to_string(&o).unwrap();
    let ip = text.split(|c: char| !(c.is_ascii_digit() || c == '.')).find(|w| {
        w.split('.').count() == 4 && w.split('.').all(|p| !p.is_empty() && p.parse::<u8>().is_ok())
    });
    assert_eq!(ip, None, "an IP address in the default manifests");
    assert!(!o.iter().any(|x| id(x).contains("Secret")), "no Secret unless asked for");
}

#[test]
fn the_go_driver_replacement_values_of_the_install_doc_render() {
    // docs/install.md, "Replacing the Go driver", step 4: keep the Go StorageClasses, and no
    // node plugin until a node is labelled.
    let o = helm(&json!({
        "storageClasses": null,
        "node": { "nodeSelector": { "rds-csi.srvlab.io/driver": "rds-csi" } }
    }))
    .unwrap();
    assert!(!o.iter().any(|x| x["kind"] == "StorageClass"));
    let node = &find(&o, "DaemonSet", "rds-csi-node")["spec"]["template"]["spec"];
    assert_eq!(node["nodeSelector"], json!({ "rds-csi.srvlab.io/driver": "rds-csi" }));
    // The Go driver's Secret is read as it is: same name, same keys.
    let ctl = &find(&o, "Deployment", "rds-csi-controller")["spec"]["template"]["spec"];
    assert_eq!(ctl["volumes"][1]["secret"]["secretName"], "rds-csi-secret");
    let host_key = ctl["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RDS_CSI_RDS_HOST_KEY")
        .unwrap();
    assert_eq!(host_key["valueFrom"]["secretKeyRef"]["key"], "rds-host-key");
    let cm = &find(&o, "ConfigMap", "rds-csi-controller")["data"];
    assert_eq!(cm["RDS_CSI_RDS_SSH_KEY_FILE"], "/etc/rds-csi/rds-private-key");
}

//! The REST API over real HTTP(S), driven by curl (a client we did not write). Needs curl
//! (installed by .ci/run); without it each test prints why it is skipped.

mod support;

use serde_json::Value;
use support::{Emu, Keys, have};

const AUTH: &[&str] = &["-u", "admin:s3cret"];

fn start(keys: &Keys, data: &std::path::Path, extra: &[&str]) -> Emu {
    let pw = keys.path("password");
    let mut args = vec!["--password-file", pw.to_str().unwrap(), "--rest-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Emu::start(keys, data, &args)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn https_with_the_generated_certificate_and_basic_auth() {
    if !have("curl") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = start(&keys, data.path(), &[]);
    assert!(emu.rest.as_deref().unwrap().starts_with("https://127.0.0.1:"));
    let (status, body) = emu.curl("GET", "/rest/system/resource", None, AUTH);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["version"], "7.21 (stable)");
    assert_eq!(json(&body)["cpu-count"], "16", "all values are strings");
    // Without the certificate pinned, a normal client refuses the self-signed server.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-u", "admin:s3cret", &format!("{}/rest/disk", emu.rest.as_ref().unwrap())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (status, body) = emu.curl("GET", "/rest/disk", None, &["-u", "admin:wrong"]);
    assert_eq!(
        (status, json(&body)),
        (401, serde_json::json!({"error": 401, "message": "Unauthorized"}))
    );
    // The certificate and its fingerprint survive a restart.
    let fp = emu.rest_cert_sha256.clone().unwrap();
    assert_eq!(fp.len(), 32 * 3 - 1);
    emu.stop();
    let emu = start(&keys, data.path(), &[]);
    assert_eq!(emu.rest_cert_sha256.as_deref(), Some(fp.as_str()));
}

#[test]
fn crud_round_trip_shares_the_store_with_ssh() {
    if !have("curl") || !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = start(&keys, data.path(), &["--rest-plain-http"]);
    let add = r#"{"type":"file","slot":"pvc-r","file-path":"storage-pool/csi/pvc-r.img","file-size":"2G","nvme-tcp-export":"yes"}"#;
    let (status, body) = emu.curl("PUT", "/rest/disk", Some(add), AUTH);
    assert_eq!(status, 200, "{body}");
    let created = json(&body);
    let id = created[".id"].as_str().unwrap().to_string();
    assert!(id.starts_with('*'));
    assert_eq!(created["size"], "2147483648");
    assert_eq!(created["nvme-tcp-export"], "true");
    // SSH sees what REST created.
    assert_eq!(emu.run(&keys, "/disk print count-only where slot=pvc-r").0, "1\r\n");
    // Filters as query parameters; no match is [].
    let (_, body) = emu.curl("GET", "/rest/disk?slot=pvc-r&type=file", None, AUTH);
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    let (_, body) = emu.curl("GET", "/rest/disk?slot=nosuch", None, AUTH);
    assert_eq!(json(&body), serde_json::json!([]));
    // PATCH sets and returns the object; a hostile value stays one value.
    let comment = r#"a "b" $c; /disk remove [find]"#;
    let patch = serde_json::json!({ "comment": comment }).to_string();
    let (status, body) = emu.curl("PATCH", &format!("/rest/disk/{id}"), Some(&patch), AUTH);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["comment"], comment);
    assert_eq!(emu.run(&keys, "/disk print count-only").0, "2\r\n", "nothing was removed");
    // POST commands.
    let (_, body) = emu.curl(
        "POST",
        "/rest/disk/print",
        Some(r#"{".proplist":"slot,size",".query":["slot=pvc-r"]}"#),
        AUTH,
    );
    assert_eq!(json(&body), serde_json::json!([{"slot": "pvc-r", "size": "2147483648"}]));
    let (status, body) = emu.curl("POST", "/rest/disk/frob", Some("{}"), AUTH);
    assert_eq!(status, 406);
    assert_eq!(json(&body)["detail"], "no such command or directory (frob)");
    // DELETE removes the item (empty body) and leaves the file; again is 404.
    let (status, body) = emu.curl("DELETE", &format!("/rest/disk/{id}"), None, AUTH);
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, body) = emu.curl("DELETE", &format!("/rest/disk/{id}"), None, AUTH);
    assert_eq!(
        (status, json(&body)),
        (404, serde_json::json!({"error": 404, "message": "Not Found"}))
    );
    let (_, body) = emu.curl("GET", "/rest/file?name=storage-pool/csi/pvc-r.img", None, AUTH);
    assert_eq!(json(&body)[0]["size"], "2147483648");
    // RouterOS errors come back as 400 with the text in detail.
    let (status, body) = emu.curl("PUT", "/rest/disk", Some(r#"{"type":"floppy"}"#), AUTH);
    assert_eq!(status, 400);
    assert_eq!(json(&body)["detail"], "input does not match any value of type");
    // The command log counts REST round trips too.
    let (_, log) = emu.control("GET", "/log", "");
    assert!(json(&log).as_array().unwrap().iter().any(|e| e["transport"] == "rest"));
}

#[test]
fn slow_commands_hit_the_time_limit_and_drops_cut_the_response() {
    if !have("curl") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = start(&keys, data.path(), &["--rest-plain-http", "--rest-timeout-secs", "1"]);
    assert_eq!(emu.control("PUT", "/faults", r#"{"latency_ms":2000}"#).0, 204);
    let (status, body) = emu.curl("GET", "/rest/disk", None, AUTH);
    assert_eq!(
        (status, json(&body)),
        (
            400,
            serde_json::json!({"detail": "Session closed", "error": 400, "message": "Bad Request"})
        )
    );
    assert_eq!(
        emu.control("PUT", "/faults", r#"{"drop":[{"pattern":"print","when":"before"}]}"#).0,
        204
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-u", "admin:s3cret"])
        .arg(format!("{}/rest/disk", emu.rest.as_ref().unwrap()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the client sees a broken response: {out:?}");
}

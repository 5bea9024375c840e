//! gRPC clients other than tonic, against the real binary: Python's grpcio (gRPC C-core, as
//! used by Python, C++ and Ruby tools; grpc-java behaves the same). Over a unix socket those
//! clients send the socket path as `:authority`; the HTTP/2 library under tonic (h2) rejects a
//! path as an authority and resets the stream (PROTOCOL_ERROR), and no h2 release accepts it
//! yet (hyperium/h2#487). This test pins that limitation and the two documented workarounds
//! (docs/conformance.md): the authority `localhost`, and the `tcp://` endpoint.
//!
//! Needs python3 with grpcio (`.ci/run` installs it with pip); elsewhere it prints why it is
//! skipped, under `CI` it fails.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::Daemon;

/// Calls GetPluginInfo with grpcio without generated stubs: the empty request is zero bytes,
/// the answer's first field (the name) is printed.
const CLIENT: &str = r#"
import sys, grpc
target = sys.argv[1]
opts = [("grpc.default_authority", sys.argv[2])] if len(sys.argv) > 2 else []
channel = grpc.insecure_channel(target, options=opts)
call = channel.unary_unary("/csi.v1.Identity/GetPluginInfo",
                           request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    answer = call(b"", timeout=10)
    print("OK", answer[2:2 + answer[1]].decode())
except grpc.RpcError as e:
    print("ERROR", e.code().name, e.details())
"#;

fn grpcio_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "python3 with grpcio is not installed (pip install grpcio)";
        assert!(std::env::var_os("CI").is_none(), "the grpcio test must run in CI: {why}");
        eprintln!("SKIPPED: {why}");
    }
    ok
}

fn call(target: &str, authority: Option<&str>) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT, target]);
    if let Some(a) = authority {
        cmd.arg(a);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn grpc_core_clients_need_localhost_as_authority_on_a_unix_socket_or_tcp() {
    if !grpcio_available() {
        return;
    }
    let d = Daemon::start_with(&["--controller", "--metrics-address", ""]);
    let unix = format!("unix://{}", d.socket.display());
    // The default authority (the socket path) is refused by h2: the documented limitation.
    let refused = call(&unix, None);
    assert!(refused.starts_with("ERROR INTERNAL") && refused.contains("RST_STREAM"), "{refused}");
    // Workaround 1: the authority `localhost`.
    assert_eq!(call(&unix, Some("localhost")), "OK rds.csi.srvlab.io");

    // Workaround 2: the tcp:// endpoint (loopback here).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(support::BIN)
        .args(["serve", "--controller", "--metrics-address", ""])
        .arg(format!("--endpoint=tcp://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut answer = String::new();
    for _ in 0..100 {
        answer = call(&format!("127.0.0.1:{port}"), None);
        if answer.starts_with("OK") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer, "OK rds.csi.srvlab.io");
}

//! The REST side (`/rest/...`, spec §3.1): HTTP basic auth, JSON with every value a string,
//! `.id` like `*1A`, filters as query parameters, errors as `{"error","message","detail"}`,
//! a per-request time limit (60 s on RouterOS).
//!
//! Every request becomes RouterOS command lines (values quoted by `routeros::syntax::quote`)
//! run through the same executor as SSH: one store, one command log, the same faults.

// Helpers return the finished error `Response` (axum's convention); boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use routeros::syntax::{Grammar, quote};
use serde_json::{Map, Value, json};

use crate::{
    emulator::{Delivery, Emulator},
    grammar::RdsGrammar,
};

#[derive(Debug, Clone)]
pub struct RestOptions {
    pub users: Vec<String>,
    /// Basic-auth password; without one every request is 401.
    pub password: Option<String>,
    /// RouterOS answers `Session closed` after 60 s.
    pub timeout: Duration,
}

#[derive(Clone)]
struct Ctx {
    emu: Emulator,
    opts: Arc<RestOptions>,
}

pub fn router(emu: Emulator, opts: RestOptions) -> Router {
    Router::new().fallback(handle).with_state(Ctx { emu, opts: Arc::new(opts) })
}

/// A REST error body as RouterOS writes it.
fn error(status: StatusCode, detail: Option<&str>) -> Response {
    let mut body =
        json!({ "error": status.as_u16(), "message": status.canonical_reason().unwrap_or("") });
    if let Some(d) = detail {
        body["detail"] = Value::String(d.to_string());
    }
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"RouterOS\"".parse().expect("static header"),
        );
    }
    resp
}

fn authorized(headers: &HeaderMap, opts: &RestOptions) -> bool {
    let Some(password) = &opts.password else { return false };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else { return false };
    let Some((user, pass)) = text.split_once(':') else { return false };
    opts.users.iter().any(|u| u == user) && pass == password
}

/// What a request addresses: a menu, and optionally an item id or a command.
struct Target {
    menu: Vec<String>,
    rest: Option<String>,
}

fn target(uri: &Uri) -> Option<Target> {
    let path = uri.path().strip_prefix("/rest/")?;
    let parts: Vec<String> =
        path.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let grammar = RdsGrammar { file_copy: true, btrfs: true };
    let mut menu = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let mut next = menu.clone();
        next.push(part.clone());
        if grammar.is_menu(&next) {
            menu = next;
            continue;
        }
        return (i + 1 == parts.len() && !menu.is_empty())
            .then(|| Target { menu, rest: Some(part.clone()) });
    }
    (!menu.is_empty()).then_some(Target { menu, rest: None })
}

/// Property names reaching a command line must be plain names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// JSON object of strings → ` name="value" ...` (quoted by the one quoting function).
fn args_from(body: &Map<String, Value>, skip: &[&str]) -> Result<String, Response> {
    let mut out = String::new();
    for (k, v) in body {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if !valid_name(k) {
            return Err(error(StatusCode::BAD_REQUEST, Some(&format!("unknown parameter {k}"))));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err(error(StatusCode::BAD_REQUEST, Some(&format!("bad value for {k}")))),
        };
        out.push_str(&format!(" {k}={}", quote(&text)));
    }
    Ok(out)
}

/// Every value as a string (RouterOS REST).
fn stringify(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, stringify(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(stringify).collect()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        other => other,
    }
}

enum Ran {
    Ok(String),
    Failed(String),
    Dropped,
}

async fn run(ctx: &Ctx, conn: u64, line: &str) -> Ran {
    match ctx.emu.execute(conn, "rest", line).await {
        Delivery::Drop => Ran::Dropped,
        Delivery::Answer(o) if o.failed => Ran::Failed(o.output.trim_end().to_string()),
        Delivery::Answer(o) => Ran::Ok(o.output),
    }
}

/// A response whose body fails after the headers: the client sees the connection drop.
fn dropped() -> Response {
    let reset =
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped by fault injection");
    let failing = tokio_stream::once(Err::<Bytes, _>(reset));
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from_stream(failing))
        .expect("static response")
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    if !authorized(&headers, &ctx.opts) {
        return error(StatusCode::UNAUTHORIZED, None);
    }
    let timeout = ctx.opts.timeout;
    match tokio::time::timeout(timeout, serve(ctx, method, uri, query, body)).await {
        Ok(resp) => resp,
        Err(_) => error(StatusCode::BAD_REQUEST, Some("Session closed")),
    }
}

async fn serve(
    ctx: Ctx,
    method: Method,
    uri: Uri,
    query: BTreeMap<String, String>,
    body: Bytes,
) -> Response {
    if method == Method::POST && uri.path() == "/rest/execute" {
        return execute_script(&ctx, &body).await;
    }
    let Some(t) = target(&uri) else {
        return error(StatusCode::NOT_FOUND, Some("no such command or directory"));
    };
    let menu = format!("/{}", t.menu.join("/"));
    let singleton = t.menu.first().map(String::as_str) == Some("system");
    let conn = ctx.emu.next_request_id();
    let body: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => m,
            _ => return error(StatusCode::BAD_REQUEST, Some("JSON object expected")),
        }
    };
    let fetch = |filter: String, proplist: Option<String>| {
        let proplist = proplist.map(|p| format!(" proplist={}", quote(&p))).unwrap_or_default();
        format!(":put [:serialize to=json [{menu} print as-value{proplist}{filter}]]")
    };
    let get_rows = |line: String| {
        let ctx = ctx.clone();
        async move {
            match run(&ctx, conn, &line).await {
                Ran::Ok(out) => serde_json::from_str::<Value>(out.trim_end())
                    .map(stringify)
                    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, Some(&e.to_string()))),
                Ran::Failed(text) => Err(error(StatusCode::BAD_REQUEST, Some(&text))),
                Ran::Dropped => Err(dropped()),
            }
        }
    };
    let by_id = |id: &str| fetch(format!(" where .id={}", quote(id)), None);
    let one = |rows: Value| match rows {
        Value::Array(mut a) if !a.is_empty() => Ok(a.remove(0)),
        Value::Array(_) => Err(error(StatusCode::NOT_FOUND, None)),
        other => Ok(other),
    };

    let result: Result<Value, Response> = async {
        match (&method, t.rest.as_deref()) {
            (&Method::GET, None) => {
                let mut conds = Vec::new();
                for (k, v) in &query {
                    if k.starts_with('.') {
                        continue;
                    }
                    if !valid_name(k) {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            Some(&format!("unknown parameter {k}")),
                        ));
                    }
                    conds.push(format!("{k}={}", quote(v)));
                }
                let filter = if conds.is_empty() || singleton {
                    String::new()
                } else {
                    format!(" where {}", conds.join(" and "))
                };
                get_rows(fetch(filter, query.get(".proplist").cloned())).await
            }
            (&Method::GET, Some(id)) if id.starts_with('*') => one(get_rows(by_id(id)).await?),
            (&Method::PUT, None) if !singleton => {
                let args = args_from(&body, &[])?;
                let id = match run(&ctx, conn, &format!(":put [{menu} add{args}]")).await {
                    Ran::Ok(out) => out.trim_end().to_string(),
                    Ran::Failed(text) => return Err(error(StatusCode::BAD_REQUEST, Some(&text))),
                    Ran::Dropped => return Err(dropped()),
                };
                one(get_rows(by_id(&id)).await?)
            }
            (&Method::PATCH, Some(id)) if id.starts_with('*') => {
                one(get_rows(by_id(id)).await?)?;
                let args = args_from(&body, &[".id"])?;
                match run(&ctx, conn, &format!("{menu} set {}{args}", quote(id))).await {
                    Ran::Ok(_) => one(get_rows(by_id(id)).await?),
                    Ran::Failed(text) => Err(error(StatusCode::BAD_REQUEST, Some(&text))),
                    Ran::Dropped => Err(dropped()),
                }
            }
            (&Method::DELETE, Some(id)) if id.starts_with('*') => {
                one(get_rows(by_id(id)).await?)?;
                match run(&ctx, conn, &format!("{menu} remove {}", quote(id))).await {
                    Ran::Ok(_) => Ok(Value::Null),
                    Ran::Failed(text) => Err(error(StatusCode::BAD_REQUEST, Some(&text))),
                    Ran::Dropped => Err(dropped()),
                }
            }
            (&Method::POST, Some(command)) => {
                post_command(&ctx, conn, &t.menu, &menu, command, &body).await
            }
            _ => Err(error(StatusCode::BAD_REQUEST, Some("no such command or directory"))),
        }
    }
    .await;
    match result {
        Ok(Value::Null) => StatusCode::NO_CONTENT.into_response(),
        Ok(v) => axum::Json(v).into_response(),
        Err(resp) => resp,
    }
}

/// `POST /rest/execute {"script": "..."}`: runs the script like one console line. As on
/// RouterOS, the answer is 200 even when the script fails; its output (or error) is in `ret`.
async fn execute_script(ctx: &Ctx, body: &Bytes) -> Response {
    let script = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("script").and_then(Value::as_str).map(str::to_string));
    let Some(script) = script else {
        return error(StatusCode::BAD_REQUEST, Some("missing value for script"));
    };
    let conn = ctx.emu.next_request_id();
    match run(ctx, conn, &script).await {
        Ran::Ok(out) => axum::Json(json!({ "ret": out.trim_end() })).into_response(),
        Ran::Failed(text) => axum::Json(json!({ "ret": text })).into_response(),
        Ran::Dropped => dropped(),
    }
}

/// `POST /rest/<menu>/<command>` with the arguments in the body.
async fn post_command(
    ctx: &Ctx,
    conn: u64,
    menu_path: &[String],
    menu: &str,
    command: &str,
    body: &Map<String, Value>,
) -> Result<Value, Response> {
    let version = ctx.emu.behaviour().version;
    let grammar = RdsGrammar { file_copy: version.has_file_copy(), btrfs: version.has_compress() };
    if !grammar.has_command(menu_path, command) {
        return Err(error(
            StatusCode::NOT_ACCEPTABLE,
            Some(&format!("no such command or directory ({command})")),
        ));
    }
    let unnamed = match body.get(".id").or(body.get("numbers")) {
        Some(Value::String(id)) => format!(" {}", quote(id)),
        _ => String::new(),
    };
    let line = match command {
        "print" => {
            let proplist = match body.get(".proplist") {
                Some(Value::String(p)) => format!(" proplist={}", quote(p)),
                _ => String::new(),
            };
            let mut conds = Vec::new();
            if let Some(Value::Array(q)) = body.get(".query") {
                for item in q {
                    let Some((k, v)) = item.as_str().and_then(|s| s.split_once('=')) else {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            Some("unsupported .query item"),
                        ));
                    };
                    if !valid_name(k) {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            Some(&format!("unknown parameter {k}")),
                        ));
                    }
                    conds.push(format!("{k}={}", quote(v)));
                }
            }
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!(" where {}", conds.join(" and "))
            };
            format!(":put [:serialize to=json [{menu} print as-value{proplist}{filter}]]")
        }
        "add" => format!(":put [{menu} add{}]", args_from(body, &[])?),
        _ => format!("{menu} {command}{unnamed}{}", args_from(body, &[".id", "numbers"])?),
    };
    match run(ctx, conn, &line).await {
        Ran::Ok(out) if command == "print" => serde_json::from_str::<Value>(out.trim_end())
            .map(stringify)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, Some(&e.to_string()))),
        Ran::Ok(out) if command == "add" => Ok(json!({ "ret": out.trim_end() })),
        Ran::Ok(_) => Ok(json!([])),
        Ran::Failed(text) => Err(error(StatusCode::BAD_REQUEST, Some(&text))),
        Ran::Dropped => Err(dropped()),
    }
}

//! Dataverse `$batch`: multipart/mixed (RFC 2046) requests with change sets,
//! executed in order, change sets atomically, answered as multipart/mixed.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::http::{Ctx, DvResponse, parse_prefer, to_http};
use super::store::{DvState, Undo};
use crate::{SimState, lock};

/// Dataverse's limit of requests in one batch.
pub(crate) const MAX_BATCH_REQUESTS: usize = 1000;

/// One inner HTTP request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct InnerRequest {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) content_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum BatchItem {
    Single(InnerRequest),
    ChangeSet(Vec<InnerRequest>),
}

/// The `boundary` parameter of a multipart content type.
pub(crate) fn boundary_of(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Splits a multipart body into its parts (without the delimiter lines).
pub(crate) fn split_parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, String> {
    let delim = format!("--{boundary}");
    let mut marks: Vec<(usize, bool)> = Vec::new();
    let mut search = 0;
    while let Some(off) = body[search..].find(&delim) {
        let i = search + off;
        let at_line_start = i == 0 || body[..i].ends_with('\n');
        if at_line_start {
            let close = body[i + delim.len()..].starts_with("--");
            marks.push((i, close));
            if close {
                break;
            }
        }
        search = i + delim.len();
    }
    if !marks.last().is_some_and(|(_, close)| *close) {
        return Err(format!(
            "The multipart body has no closing delimiter '--{boundary}--'."
        ));
    }
    let mut parts = Vec::new();
    for w in marks.windows(2) {
        let start = w[0].0 + delim.len();
        let content = &body[start..w[1].0];
        // The rest of the delimiter line (transport padding) and its line break.
        let content = match content.find('\n') {
            Some(nl) => &content[nl + 1..],
            None => "",
        };
        let content = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(content);
        parts.push(content);
    }
    Ok(parts)
}

/// Splits a MIME entity into its headers and body.
fn split_entity(part: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = if let Some(i) = part.find("\r\n\r\n") {
        (&part[..i], &part[i + 4..])
    } else if let Some(i) = part.find("\n\n") {
        (&part[..i], &part[i + 2..])
    } else if part.starts_with("\r\n") || part.starts_with('\n') {
        ("", part.trim_start_matches(['\r', '\n']))
    } else {
        (part, "")
    };
    let headers = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (headers, body)
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_inner(part: &str) -> Result<InnerRequest, String> {
    let (mime_headers, http) = split_entity(part);
    let ct = get(&mime_headers, "Content-Type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/http") {
        return Err(format!(
            "A batch part must have Content-Type application/http, not '{ct}'."
        ));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let bytes = http.as_bytes();
    let offset = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // A request with no body may end without the blank line.
            let mut padded = http.to_owned();
            padded.push_str("\r\n\r\n");
            return parse_inner_padded(&mime_headers, &padded);
        }
        Err(e) => {
            return Err(format!(
                "The inner request of a batch part is not valid HTTP: {e}."
            ));
        }
    };
    build_inner(&mime_headers, &req, &bytes[offset..])
}

fn parse_inner_padded(
    mime_headers: &[(String, String)],
    http: &str,
) -> Result<InnerRequest, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(http.as_bytes()) {
        Ok(httparse::Status::Complete(n)) => build_inner(mime_headers, &req, &http.as_bytes()[n..]),
        _ => Err("The inner request of a batch part is incomplete.".into()),
    }
}

fn build_inner(
    mime_headers: &[(String, String)],
    req: &httparse::Request,
    body: &[u8],
) -> Result<InnerRequest, String> {
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| "The inner request has no method.".to_owned())?;
    let url = req
        .path
        .ok_or_else(|| "The inner request has no URL.".to_owned())?
        .to_owned();
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(k, v);
        }
    }
    let content_id = get(mime_headers, "Content-ID")
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("content-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let mut body = body.to_vec();
    while body.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        body.pop();
    }
    Ok(InnerRequest {
        method,
        url,
        headers,
        body,
        content_id,
    })
}

/// Parses a whole batch body.
pub(crate) fn parse_batch(body: &str, boundary: &str) -> Result<Vec<BatchItem>, String> {
    let mut items = Vec::new();
    for part in split_parts(body, boundary)? {
        let (mime_headers, inner) = split_entity(part);
        let ct = get(&mime_headers, "Content-Type").unwrap_or("");
        if let Some(cs_boundary) = boundary_of(ct) {
            let mut ops = Vec::new();
            for p in split_parts(inner, &cs_boundary)? {
                let r = parse_inner(p)?;
                if r.method == Method::GET {
                    return Err("GET requests are not allowed inside a change set.".into());
                }
                ops.push(r);
            }
            items.push(BatchItem::ChangeSet(ops));
        } else if ct.to_ascii_lowercase().starts_with("multipart/") {
            return Err(
                "A multipart part needs a boundary parameter (nested batches are not allowed)."
                    .into(),
            );
        } else {
            items.push(BatchItem::Single(parse_inner(part)?));
        }
    }
    Ok(items)
}

/// The path of an inner URL relative to the service root, and its query.
fn relative(
    url: &str,
    version: &str,
    ids: &HashMap<String, String>,
) -> Result<(String, String), String> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let marker = format!("/api/data/{version}/");
    let rel = if let Some(i) = path.find(&marker) {
        path[i + marker.len()..].to_owned()
    } else if let Some(r) = path.strip_prefix('$') {
        let (id, rest) = r.split_once('/').unwrap_or((r, ""));
        let base = ids.get(id).ok_or_else(|| {
            format!("Content-ID reference '${id}' was not declared earlier in the change set.")
        })?;
        if rest.is_empty() {
            base.clone()
        } else {
            format!("{base}/{rest}")
        }
    } else if path.contains("://") || path.starts_with('/') {
        return Err(format!(
            "The URL '{url}' is not under the service root /api/data/{version}/."
        ));
    } else {
        path.to_owned()
    };
    Ok((rel, query.to_owned()))
}

fn substitute_refs(body: &[u8], ids: &HashMap<String, String>) -> Vec<u8> {
    if ids.is_empty() {
        return body.to_vec();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            for (k, v) in m.iter_mut() {
                if k.ends_with("@odata.bind")
                    && let Some(r) = v.as_str().and_then(|s| s.strip_prefix('$'))
                    && let Some(path) = ids.get(r)
                {
                    *v = Value::String(format!("/{path}"));
                }
            }
            Value::Object(m).to_string().into_bytes()
        }
        _ => body.to_vec(),
    }
}

fn entity_path(r: &DvResponse, service_root: &str, rel: &str) -> Option<String> {
    if let Some((_, v)) = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("OData-EntityId"))
    {
        return v
            .strip_prefix(service_root)
            .map(|p| p.trim_start_matches('/').to_owned());
    }
    let set = rel.split(['(', '/', '?']).next()?;
    let body = r.body.as_ref()?.as_object()?;
    let id = body.iter().find(|(k, v)| {
        k.ends_with("id")
            && !k.starts_with('@')
            && v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
    })?;
    Some(format!("{set}({})", id.1.as_str()?))
}

fn write_response(out: &mut String, r: &DvResponse, content_id: Option<&str>) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = content_id {
        out.push_str(&format!("Content-ID: {id}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&format!(
        "HTTP/1.1 {} {}\r\n",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or("")
    ));
    out.push_str("OData-Version: 4.0\r\n");
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    match &r.body {
        Some(b) => {
            out.push_str("Content-Type: application/json; odata.metadata=minimal\r\n\r\n");
            out.push_str(&b.to_string());
            out.push_str("\r\n");
        }
        None => out.push_str("\r\n"),
    }
}

enum Answer {
    Single(DvResponse, Option<String>),
    ChangeSet(Vec<(DvResponse, Option<String>)>),
    FailedChangeSet(DvResponse, Option<String>),
}

/// `POST /api/data/v9.2/$batch`
pub(crate) fn handle(
    state: &SimState,
    ctx: &Ctx,
    version: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let fail = |m: String| to_http(DvResponse::err(StatusCode::BAD_REQUEST, "0x80048d19", m));
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = boundary_of(ct) else {
        return fail(
            "A $batch request needs Content-Type: multipart/mixed with a boundary.".into(),
        );
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return fail("The $batch body is not UTF-8.".into());
    };
    let items = match parse_batch(text, &boundary) {
        Ok(i) => i,
        Err(m) => return fail(m),
    };
    let count: usize = items
        .iter()
        .map(|i| match i {
            BatchItem::Single(_) => 1,
            BatchItem::ChangeSet(ops) => ops.len(),
        })
        .sum();
    if count > MAX_BATCH_REQUESTS {
        return to_http(DvResponse::err(
            StatusCode::BAD_REQUEST,
            "0x80060891",
            format!(
                "The number of requests in the batch ({count}) exceeds the maximum of {MAX_BATCH_REQUESTS}."
            ),
        ));
    }
    let continue_on_error = ctx.prefer.continue_on_error;
    let mut answers = Vec::new();
    let mut stopped = false;
    let mut dv = lock(&state.dv);
    for item in items {
        match item {
            BatchItem::Single(req) => {
                let r = run(&mut dv, ctx, version, &req, &HashMap::new(), None);
                let ok = r.is_success();
                answers.push(Answer::Single(r, req.content_id.clone()));
                if !ok && !continue_on_error {
                    stopped = true;
                    break;
                }
            }
            BatchItem::ChangeSet(ops) => {
                let mut undo = Undo::default();
                let mut ids: HashMap<String, String> = HashMap::new();
                let mut done = Vec::new();
                let mut failed = None;
                for req in &ops {
                    let r = run(&mut dv, ctx, version, req, &ids, Some(&mut undo));
                    if !r.is_success() {
                        failed = Some((r, req.content_id.clone()));
                        break;
                    }
                    if let (Some(cid), Ok((rel, _))) =
                        (&req.content_id, relative(&req.url, version, &ids))
                        && let Some(p) = entity_path(&r, ctx.service_root, &rel)
                    {
                        ids.insert(cid.clone(), p);
                    }
                    done.push((r, req.content_id.clone()));
                }
                match failed {
                    Some((r, cid)) => {
                        dv.rollback(undo);
                        answers.push(Answer::FailedChangeSet(r, cid));
                        if !continue_on_error {
                            stopped = true;
                            break;
                        }
                    }
                    None => answers.push(Answer::ChangeSet(done)),
                }
            }
        }
    }
    drop(dv);
    let batch_boundary = format!("batchresponse_{}", uuid::Uuid::new_v4());
    let mut out = String::new();
    for a in &answers {
        out.push_str(&format!("--{batch_boundary}\r\n"));
        match a {
            Answer::Single(r, cid) | Answer::FailedChangeSet(r, cid) => {
                write_response(&mut out, r, cid.as_deref())
            }
            Answer::ChangeSet(rs) => {
                let cs = format!("changesetresponse_{}", uuid::Uuid::new_v4());
                out.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary={cs}\r\n\r\n"
                ));
                for (r, cid) in rs {
                    out.push_str(&format!("--{cs}\r\n"));
                    write_response(&mut out, r, cid.as_deref());
                }
                out.push_str(&format!("--{cs}--\r\n"));
            }
        }
    }
    out.push_str(&format!("--{batch_boundary}--\r\n"));
    let mut resp = Response::new(axum::body::Body::from(out));
    *resp.status_mut() = if stopped {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={batch_boundary}")) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    if continue_on_error {
        resp.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("odata.continue-on-error"),
        );
    }
    resp
}

fn run(
    dv: &mut DvState,
    outer: &Ctx,
    version: &str,
    req: &InnerRequest,
    ids: &HashMap<String, String>,
    undo: Option<&mut Undo>,
) -> DvResponse {
    if let Some(r) = super::http::url_too_long(req.url.len(), super::http::MAX_BATCH_URL_CHARS) {
        return r;
    }
    let (rel, query) = match relative(&req.url, version, ids) {
        Ok(x) => x,
        Err(m) => return DvResponse::err(StatusCode::BAD_REQUEST, "0x80060888", m),
    };
    let body = substitute_refs(&req.body, ids);
    let ctx = Ctx {
        service_root: outer.service_root,
        now: outer.now,
        prefer: parse_prefer(&req.headers),
        headers: &req.headers,
    };
    if rel == "$batch" {
        return DvResponse::err(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            "Nested batches are not allowed.",
        );
    }
    dv.execute(&ctx, &req.method, &rel, &query, &body, undo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_parts() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"batch_1\"").as_deref(),
            Some("batch_1")
        );
        assert_eq!(
            boundary_of("multipart/mixed;boundary=batch_2").as_deref(),
            Some("batch_2")
        );
        assert_eq!(boundary_of("application/json"), None);
        let body = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET opportunities HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n--cs\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\nPATCH /api/data/v9.2/opportunities(new_referralid='a') HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"x\"}\r\n--cs--\r\n\r\n--b--\r\n";
        let items = parse_batch(body, "b").unwrap();
        assert_eq!(items.len(), 2);
        match &items[0] {
            BatchItem::Single(r) => {
                assert_eq!(r.method, Method::GET);
                assert_eq!(r.url, "opportunities");
            }
            _ => panic!("expected a single request"),
        }
        match &items[1] {
            BatchItem::ChangeSet(ops) => {
                assert_eq!(ops[0].content_id.as_deref(), Some("1"));
                assert_eq!(ops[0].body, b"{\"name\":\"x\"}");
                let (rel, _) = relative(&ops[0].url, "v9.2", &HashMap::new()).unwrap();
                assert_eq!(rel, "opportunities(new_referralid='a')");
            }
            _ => panic!("expected a change set"),
        }
        assert!(
            parse_batch(
                "--b\r\nContent-Type: application/http\r\n\r\nGET x HTTP/1.1\r\n",
                "b"
            )
            .is_err()
        );
    }
}

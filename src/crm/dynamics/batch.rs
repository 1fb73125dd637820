//! OData `$batch` over `multipart/mixed`: the request body, and the response
//! read back into one answer per operation.
//!
//! Each write travels in a change set of its own. A change set is an atomic
//! transaction, so putting several writes in one would let one bad record roll
//! back the others; one change set per write, with
//! `Prefer: odata.continue-on-error` on the batch, keeps every record's
//! outcome its own while still sending up to 1,000 requests per call. The one
//! exception is a deal whose customer's account is new: its change set
//! creates the account first (Content-ID *n*) and binds the deal to `$n`, so
//! the account and its deal land or fail together, and alone.
//!
//! Responses are parsed with `multer` (the multipart framing) and `httparse`
//! (the embedded `HTTP/1.1 …` responses). No crate writes `multipart/mixed`
//! with `application/http` parts, so the request side is a small typed
//! writer following OData v4.01 Part 1 §11.7 (CRLF line ends throughout).

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const CRLF: &str = "\r\n";

/// One operation of a batch.
#[derive(Debug, Clone)]
pub struct BatchOperation {
    pub method: Method,
    /// Root-relative, e.g. `/api/data/v9.2/opportunities(new_referralid='x')`.
    pub path_and_query: String,
    /// Extra request headers (`If-Match`, `Prefer`…).
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body, if any.
    pub body: Option<Vec<u8>>,
}

/// A serialized `$batch` request.
#[derive(Debug, Clone)]
pub struct BatchBody {
    /// `multipart/mixed; boundary=batch_<uuid>`.
    pub content_type: String,
    pub body: Vec<u8>,
    /// The `Content-ID` of each operation, in order.
    pub content_ids: Vec<String>,
}

/// Writes `operations` as one batch, each in its own change set; the
/// `Content-ID` of operation `i` is `i + 1`.
pub fn build_batch(operations: &[BatchOperation]) -> BatchBody {
    let sets: Vec<&[BatchOperation]> = operations.iter().map(std::slice::from_ref).collect();
    build_change_sets(&sets)
}

/// Writes `sets` as one batch, each set a change set (an atomic
/// transaction); the `Content-ID`s number the operations 1, 2, 3… across
/// the batch, so a later operation of a set can refer to an earlier one as
/// `$n` (in its URL or an `@odata.bind` value).
pub fn build_change_sets(sets: &[&[BatchOperation]]) -> BatchBody {
    let batch = format!("batch_{}", uuid::Uuid::new_v4());
    let mut out: Vec<u8> = Vec::new();
    let mut content_ids = Vec::new();
    for set in sets {
        let changeset = format!("changeset_{}", uuid::Uuid::new_v4());
        out.extend_from_slice(
            format!(
                "--{batch}{CRLF}Content-Type: multipart/mixed; boundary={changeset}{CRLF}{CRLF}"
            )
            .as_bytes(),
        );
        for op in *set {
            let content_id = (content_ids.len() + 1).to_string();
            let mut part = String::new();
            part.push_str(&format!("--{changeset}{CRLF}"));
            part.push_str(&format!("Content-Type: application/http{CRLF}"));
            part.push_str(&format!("Content-Transfer-Encoding: binary{CRLF}"));
            part.push_str(&format!("Content-ID: {content_id}{CRLF}{CRLF}"));
            part.push_str(&format!(
                "{} {} HTTP/1.1{CRLF}",
                op.method, op.path_and_query
            ));
            if op.body.is_some() {
                part.push_str(&format!("Content-Type: application/json; type=entry{CRLF}"));
            }
            for (name, value) in &op.headers {
                part.push_str(&format!("{name}: {value}{CRLF}"));
            }
            part.push_str(CRLF);
            out.extend_from_slice(part.as_bytes());
            if let Some(body) = &op.body {
                out.extend_from_slice(body);
            }
            out.extend_from_slice(CRLF.as_bytes());
            content_ids.push(content_id);
        }
        out.extend_from_slice(format!("--{changeset}--{CRLF}").as_bytes());
    }
    out.extend_from_slice(format!("--{batch}--{CRLF}").as_bytes());
    BatchBody {
        content_type: format!("multipart/mixed; boundary={batch}"),
        body: out,
        content_ids,
    }
}

/// One embedded response.
#[derive(Debug, Clone)]
pub struct OperationResponse {
    pub content_id: Option<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A top-level part of the batch response.
#[derive(Debug, Clone)]
pub enum BatchItem {
    /// A change set's responses (one per operation on success).
    ChangeSet(Vec<OperationResponse>),
    /// A single response: a failed change set, or an operation outside one.
    Single(OperationResponse),
}

/// The response did not have the multipart shape of a `$batch` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable $batch response: {0}")]
pub struct BatchParseError(pub String);

fn boundary_of(content_type: &str) -> Result<String, BatchParseError> {
    let mime: mime::Mime = content_type
        .parse()
        .map_err(|e| BatchParseError(format!("Content-Type {content_type:?}: {e}")))?;
    if mime.type_() != mime::MULTIPART {
        return Err(BatchParseError(format!(
            "Content-Type {content_type:?} is not multipart"
        )));
    }
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| BatchParseError(format!("Content-Type {content_type:?} has no boundary")))
}

/// Every part of a multipart body: its headers and its bytes.
async fn parts(
    content_type: &str,
    body: &[u8],
) -> Result<Vec<(HeaderMap, Vec<u8>)>, BatchParseError> {
    let boundary = boundary_of(content_type)?;
    // MIME requires CRLF; tolerate a body written with bare LFs.
    let normalized;
    let body = if !body.windows(2).any(|w| w == b"\r\n") && body.contains(&b'\n') {
        normalized = String::from_utf8_lossy(body)
            .replace('\n', "\r\n")
            .into_bytes();
        &normalized[..]
    } else {
        body
    };
    let mut multipart = multer::Multipart::with_reader(body, boundary);
    let mut out = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| BatchParseError(e.to_string()))?;
        let Some(field) = field else { break };
        let headers = field.headers().clone();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| BatchParseError(e.to_string()))?;
        out.push((headers, bytes.to_vec()));
    }
    Ok(out)
}

fn content_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("content-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Reads an embedded `HTTP/1.1 204 No Content` response.
fn embedded_response(
    part_headers: &HeaderMap,
    bytes: &[u8],
) -> Result<OperationResponse, BatchParseError> {
    let mut raw = bytes.to_vec();
    for attempt in 0..3 {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&raw) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response
                    .code
                    .ok_or_else(|| BatchParseError("an embedded response has no status".into()))?;
                let mut headers = HeaderMap::new();
                for h in response.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        headers.append(name, value);
                    }
                }
                let content_id = content_id(part_headers).or_else(|| content_id(&headers));
                return Ok(OperationResponse {
                    content_id,
                    status,
                    headers,
                    body: raw.get(len..).unwrap_or_default().to_vec(),
                });
            }
            // The blank line ending a body-less response may have been
            // taken as the CRLF before the next boundary.
            Ok(httparse::Status::Partial) if attempt < 2 => raw.extend_from_slice(b"\r\n"),
            Ok(httparse::Status::Partial) => {
                return Err(BatchParseError("an embedded response is truncated".into()));
            }
            Err(e) => {
                return Err(BatchParseError(format!("an embedded response: {e}")));
            }
        }
    }
    Err(BatchParseError("an embedded response is truncated".into()))
}

fn is_multipart(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    ct.trim()
        .to_ascii_lowercase()
        .starts_with("multipart/")
        .then(|| ct.to_owned())
}

/// Reads a `$batch` response body into its top-level items, in order.
pub async fn parse_batch_response(
    content_type: &str,
    body: &[u8],
) -> Result<Vec<BatchItem>, BatchParseError> {
    let mut items = Vec::new();
    for (headers, bytes) in parts(content_type, body).await? {
        match is_multipart(&headers) {
            Some(inner_type) => {
                let mut responses = Vec::new();
                for (h, b) in Box::pin(parts(&inner_type, &bytes)).await? {
                    responses.push(embedded_response(&h, &b)?);
                }
                items.push(BatchItem::ChangeSet(responses));
            }
            None => items.push(BatchItem::Single(embedded_response(&headers, &bytes)?)),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(path: &str, body: &str) -> BatchOperation {
        BatchOperation {
            method: Method::PATCH,
            path_and_query: path.into(),
            headers: vec![("If-Match", "W/\"1\"".into())],
            body: Some(body.as_bytes().to_vec()),
        }
    }

    #[tokio::test]
    async fn each_operation_gets_its_own_change_set_with_crlf_framing() {
        let b = build_batch(&[
            op("/api/data/v9.2/opportunities(k='a')", r#"{"name":"A"}"#),
            op("/api/data/v9.2/opportunities(k='b')", r#"{"name":"B"}"#),
        ]);
        let boundary = b
            .content_type
            .strip_prefix("multipart/mixed; boundary=")
            .unwrap();
        assert!(boundary.starts_with("batch_"));
        let text = String::from_utf8(b.body.clone()).unwrap();
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert_eq!(
            text.matches("Content-Type: multipart/mixed; boundary=changeset_")
                .count(),
            2
        );
        assert!(text.contains(
            "Content-ID: 1\r\n\r\nPATCH /api/data/v9.2/opportunities(k='a') HTTP/1.1\r\nContent-Type: application/json; type=entry\r\nIf-Match: W/\"1\"\r\n\r\n{\"name\":\"A\"}\r\n--changeset_"
        ));
        assert_eq!(b.content_ids, vec!["1", "2"]);
        // Our own parser reads the request framing back: two change sets.
        let parsed = parts(&b.content_type, &b.body).await.unwrap();
        assert_eq!(parsed.len(), 2);
        let inner_type = is_multipart(&parsed[0].0).unwrap();
        let inner = parts(&inner_type, &parsed[0].1).await.unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(content_id(&inner[0].0).as_deref(), Some("1"));
        assert!(inner[0].1.ends_with(br#"{"name":"A"}"#));
    }

    #[tokio::test]
    async fn responses_are_read_with_or_without_change_sets_and_blank_lines() {
        let body = "--batchresponse_1\r\n\
Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
--changesetresponse_2\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\
OData-Version: 4.0\r\n\
OData-EntityId: https://org/api/data/v9.2/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)\r\n\
\r\n\
--changesetresponse_2--\r\n\
--batchresponse_1\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\r\n\
HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json; odata.metadata=minimal\r\n\r\n\
{\"error\":{\"code\":\"0x80040203\",\"message\":\"bad\"}}\r\n\
--batchresponse_1--\r\n";
        let items =
            parse_batch_response("multipart/mixed; boundary=batchresponse_1", body.as_bytes())
                .await
                .unwrap();
        assert_eq!(items.len(), 2);
        let BatchItem::ChangeSet(ok) = &items[0] else {
            panic!()
        };
        assert_eq!(ok[0].status, 204);
        assert_eq!(ok[0].content_id.as_deref(), Some("1"));
        assert!(ok[0].headers.get("odata-entityid").is_some());
        let BatchItem::Single(failed) = &items[1] else {
            panic!()
        };
        assert_eq!(failed.status, 400);
        assert_eq!(failed.content_id, None);
        assert_eq!(
            failed.body,
            br#"{"error":{"code":"0x80040203","message":"bad"}}"#
        );
    }

    #[tokio::test]
    async fn bare_line_feeds_and_garbage_are_handled() {
        let body = "--b\nContent-Type: application/http\n\nHTTP/1.1 204 No Content\n\n--b--\n";
        let items = parse_batch_response("multipart/mixed; boundary=\"b\"", body.as_bytes())
            .await
            .unwrap();
        assert!(matches!(&items[0], BatchItem::Single(r) if r.status == 204));
        assert!(
            parse_batch_response("application/json", b"{}")
                .await
                .is_err()
        );
        assert!(
            parse_batch_response(
                "multipart/mixed; boundary=b",
                b"--b\r\nContent-Type: application/http\r\n\r\nnot http\r\n--b--\r\n"
            )
            .await
            .is_err()
        );
    }
}

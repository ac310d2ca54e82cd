//! Correlation: every HTTP request carries an id, NGINX's `X-Request-Id`
//! when it sent a plausible one, else one made here. The id goes back in the
//! response, into the request's log line, and into the span of a WebSocket
//! connection, so each line the server logs can be tied to the proxy's.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client or proxy (NGINX's `$request_id` is 32).
pub const MAX_LEN: usize = 128;

/// Longest path written to a log line; the rest is cut.
const MAX_LOGGED_PATH: usize = 256;

/// The id of the request being served, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The id in `value`, if it is one a log can carry as is: 1 to 128 of
/// `A-Z a-z 0-9 . _ : -`. Anything else is replaced, not trusted.
pub fn accept(value: Option<&HeaderValue>) -> Option<&str> {
    let id = value?.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then_some(id)
}

/// A fresh id: 128 random bits in hex, the form NGINX uses.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Probes and scrapes arrive every few seconds: logged at debug unless they
/// fail, so they do not bury the lines that matter.
fn routine(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/api/health") || path == "/api/ready"
}

/// Middleware: give the request its id, answer with it, log the request.
/// Only the path is logged: query strings may carry values nobody asked
/// to keep, and client addresses stay out of the log.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = match accept(req.headers().get(&HEADER)) {
        Some(id) => id.into(),
        None => generate().into(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let mut path = req.uri().path().to_owned();
    if path.len() > MAX_LOGGED_PATH {
        let mut cut = MAX_LOGGED_PATH;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
    }
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if routine(&path) && status < 400 {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "http request");
    } else {
        tracing::info!(request_id = %id, %method, %path, status, ms, "http request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn plausible_ids_are_kept() {
        for id in ["0f1e2d3c4b5a69788796a5b4c3d2e1f0", "req-1", "a.b_c:d"] {
            assert_eq!(accept(Some(&hv(id))), Some(id));
        }
        assert_eq!(
            accept(Some(&hv(&"x".repeat(MAX_LEN)))).map(str::len),
            Some(MAX_LEN)
        );
    }

    #[test]
    fn empty_long_or_odd_ids_are_replaced() {
        assert_eq!(accept(None), None);
        for id in [
            "",
            "has space",
            "quote\"",
            "brace{}",
            "tab\there",
            "semi;colon",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(accept(Some(&hv(id))), None, "{id:?}");
        }
        // Bytes that are not visible ASCII.
        let bin = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert_eq!(accept(Some(&bin)), None);
    }

    #[test]
    fn generated_ids_are_accepted_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(accept(Some(&hv(&a))), Some(a.as_str()));
    }
}

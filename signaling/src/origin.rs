//! The `Origin` check shared by `/signal` and `/api/turn/credentials`:
//! with ALLOWED_ORIGINS set, a browser on any other site is refused. A
//! request with no Origin (not a browser page: curl, the CLI) is let
//! through; the per-address limits still apply to it.

use axum::http::HeaderValue;

/// Whether a request with this `Origin` header may be served.
pub fn allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    let Some(origin) = origin else { return true };
    allowed.is_empty()
        || origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_origins_pass_others_do_not() {
        let list = vec!["https://tallow.example".to_owned()];
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(allowed(&list, Some(&hv("https://tallow.example"))));
        assert!(allowed(&list, Some(&hv("HTTPS://TALLOW.EXAMPLE"))));
        assert!(!allowed(&list, Some(&hv("https://evil.example"))));
        assert!(!allowed(&list, Some(&hv("https://tallow.example.evil"))));
        assert!(!allowed(&list, Some(&hv("null"))));
        assert!(allowed(&list, None));
        assert!(allowed(&[], Some(&hv("https://anyone.example"))));
    }
}

//! The share link for a code, in the web client's form (`web/src/app.js`,
//! `shareLink`): the page's address with the code in the fragment, which
//! never reaches a server. The page is served where `/signal` is, so
//! `ws(s)://host/prefix/signal` gives `http(s)://host/prefix/#code`.

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

pub fn link(server: &str, code: &str) -> String {
    let (scheme, rest) = match server.split_once("://") {
        Some(("wss", rest)) | Some(("https", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", server),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let base = rest
        .strip_suffix("/signal")
        .unwrap_or(rest.trim_end_matches('/'));
    format!("{scheme}://{base}/#{code}")
}

/// `text` as a QR code of Unicode half blocks, light on dark as a
/// terminal shows it best, with the quiet zone scanners need.
pub fn qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_the_pages_address_with_the_code_in_the_fragment() {
        assert_eq!(
            link("ws://127.0.0.1:8080/signal", "7-bal-kir"),
            "http://127.0.0.1:8080/#7-bal-kir"
        );
        assert_eq!(
            link("wss://tallow.example/signal", "7-bal-kir"),
            "https://tallow.example/#7-bal-kir"
        );
        assert_eq!(
            link("wss://h.example/t/signal", "12-a-b"),
            "https://h.example/t/#12-a-b"
        );
    }

    #[test]
    fn a_qr_code_is_drawn_in_half_blocks() {
        let q = qr("http://127.0.0.1:8080/#7-bal-kir").unwrap();
        assert!(q.lines().count() > 10);
        assert!(q.contains('▀') || q.contains('▄'));
    }
}

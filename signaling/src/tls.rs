//! The certificate tallow-server serves HTTPS with when no TLS proxy is in
//! front: one read from PEM files, or one generated at start for a LAN.
//!
//! A browser on another device needs a secure context for WebCrypto, so
//! plain HTTP on a LAN address cannot work; a self-signed certificate can,
//! once the user accepts it. Its SHA-256 fingerprint is logged so they can
//! compare it with the one the browser shows before accepting.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Lifetime of a generated certificate. It is made anew at each start.
const SELF_SIGNED_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TALLOW_TLS_CERT {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TALLOW_TLS_CERT {0} holds no certificate")]
    NoCert(String),
    #[error("reading TALLOW_TLS_KEY {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TALLOW_TLS_KEY {0} is encrypted: give the key unencrypted (openssl pkey -in KEY -out KEY.plain), readable only by the server's user")]
    EncryptedKey(String),
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// What the server presents, and what to tell the operator about it.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, as browsers show it (AB:CD:...).
    pub sha256: String,
    /// Names a generated certificate is valid for; empty for files.
    pub names: Vec<String>,
    /// A generated certificate's public-key pin as curl takes it
    /// (`--pinnedpubkey sha256//...`), so probes can check it without a CA;
    /// None for files (point probes at the certificate file instead).
    pub pin: Option<String>,
}

/// The leaf certificate's SHA-256 fingerprint, colon-separated upper hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `sha256//` and the base64 SHA-256 of a SubjectPublicKeyInfo (curl's
/// `--pinnedpubkey`, HPKP's pin format).
pub fn spki_pin(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der))
    )
}

pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.display().to_string(),
            source,
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::NoCert(cert.display().to_string()))?;
    let sha256 = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| {
        // The PEM reader skips sections it does not know, an encrypted key
        // among them, and then says only that it found nothing.
        let encrypted = std::fs::read(key)
            .is_ok_and(|pem| pem.windows(25).any(|w| w == b"BEGIN ENCRYPTED PRIVATE K"));
        if encrypted {
            TlsError::EncryptedKey(key.display().to_string())
        } else {
            TlsError::Key {
                path: key.display().to_string(),
                source,
            }
        }
    })?;
    Ok(Identity {
        config: server_config(certs, key)?,
        sha256,
        names: Vec::new(),
        pin: None,
    })
}

/// A fresh ECDSA P-256 certificate for `localhost`, the loopback
/// addresses, `host` names/addresses found for this machine and `extra`.
pub fn self_signed(found: &[String], extra: &[String]) -> Result<Identity, TlsError> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .chain(found.iter().cloned())
        .chain(extra.iter().cloned())
        .collect();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    // CertificateParams::new makes an IP SAN of what parses as an address.
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "tallow-server (self-signed)");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let sha256 = fingerprint(&der);
    let pin = spki_pin(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Identity {
        config: server_config(vec![der], key)?,
        sha256,
        names,
        pin: Some(pin),
    })
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // WebSocket upgrades are HTTP/1.1; offer nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// This machine's name and its address toward the network, for the
/// generated certificate: what a device on the LAN is likely to type.
pub fn local_names() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            out.push(h.to_owned());
            if !h.contains('.') {
                out.push(format!("{h}.local"));
            }
        }
    }
    // Route lookup only: connecting a UDP socket sends nothing.
    let route = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("198.51.100.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip());
    if let Ok(ip) = route {
        if !ip.is_loopback() && !ip.is_unspecified() {
            out.push(ip.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_names_the_host_and_fingerprints_like_a_browser() {
        let id = self_signed(
            &["box".into(), "192.168.1.5".into()],
            &["tallow.lan".into(), "BOX".into()],
        )
        .unwrap();
        assert_eq!(
            id.names,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "box",
                "192.168.1.5",
                "tallow.lan"
            ]
        );
        assert_eq!(id.sha256.len(), 32 * 3 - 1);
        assert!(id.sha256.split(':').all(|b| b.len() == 2
            && b.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
        // A new one each time.
        assert_ne!(self_signed(&[], &[]).unwrap().sha256, id.sha256);
    }

    #[test]
    fn files_are_read_and_their_fingerprint_is_the_leaf_s() {
        let dir = std::env::temp_dir().join(format!("tallow-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tallow.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let id = from_files(&c, &k).unwrap();
        assert_eq!(id.sha256, fingerprint(cert.der()));
        // A key that is not the certificate's, an empty file, garbage.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&k, other.serialize_pem()).unwrap();
        assert!(matches!(from_files(&c, &k), Err(TlsError::Config(_))));
        std::fs::write(&c, "").unwrap();
        assert!(matches!(from_files(&c, &k), Err(TlsError::NoCert(_))));
        std::fs::write(&k, "not a key").unwrap();
        std::fs::write(&c, cert.pem()).unwrap();
        assert!(matches!(from_files(&c, &k), Err(TlsError::Key { .. })));
        std::fs::write(
            &k,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = from_files(&c, &k).err().unwrap();
        assert!(matches!(e, TlsError::EncryptedKey(_)), "{e}");
        assert!(e.to_string().contains("unencrypted"), "{e}");
        assert!(matches!(
            from_files(&dir.join("missing.pem"), &k),
            Err(TlsError::Cert { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

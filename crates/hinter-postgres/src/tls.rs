//! TLS to PostgreSQL with rustls (ring provider), configured as libpq users expect from the
//! URL: `sslmode=disable|prefer|require|verify-ca|verify-full` and `sslrootcert=PATH`.
//!
//! `tokio-postgres` itself knows only `disable`, `prefer` and `require` and no `sslrootcert`,
//! so both parameters are taken out of the URL here ([`split`]) and applied by hand: the
//! remaining URL goes to `tokio-postgres`, the mode to its config, and the certificate checks
//! into the rustls configuration of the connector ([`connector`]).
//!
//! | `sslmode` | TLS | checks |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it, else plain | none |
//! | `require` | always | none; with `sslrootcert` the chain, as libpq does |
//! | `verify-ca` | always | the chain up to a trusted CA |
//! | `verify-full` | always | the chain, and that the certificate names the host |
//!
//! Trusted CAs are those of `sslrootcert=PATH` (a PEM file, one or more certificates), or
//! the system's root certificates when it is absent or `sslrootcert=system`. Unlike libpq,
//! `~/.postgresql/root.crt` is not read.

use hinter_core::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::sync::Arc;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS: libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain otherwise.
    #[default]
    Prefer,
    /// Always TLS; the certificate is checked only when a CA is given (`sslrootcert`).
    Require,
    /// Always TLS; the certificate must chain up to a trusted CA.
    VerifyCa,
    /// Always TLS; the certificate must chain up to a trusted CA and name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plain first: not offered, rather than silently `prefer`.
            other => {
                return Err(invalid(format!(
                    "sslmode={other:?} is not supported: use disable, prefer, require, verify-ca \
                     or verify-full"
                )))
            }
        })
    }

    /// The mode `tokio-postgres` runs: the checks are the connector's business.
    pub(crate) fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// The system's root certificates (`sslrootcert` absent or `system`).
    System,
    /// The certificates in this PEM file (`sslrootcert=PATH`).
    File(PathBuf),
}

/// The TLS settings of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: RootCert,
}

fn invalid(message: String) -> StoreError {
    StoreError::Unavailable(format!("invalid PostgreSQL URL: {message}"))
}

/// Takes `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or a `key=value`
/// connection string); answers the rest of it and the settings they made.
pub fn split(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool, StoreError> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" if value.is_empty() => {
                return Err(invalid(
                    "sslrootcert is empty: give a PEM file's path".into(),
                ))
            }
            "sslrootcert" if value == "system" => root_cert = Some(RootCert::System),
            "sslrootcert" => root_cert = Some(RootCert::File(PathBuf::from(value))),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(invalid(format!(
                    "{key} is not supported: hinter does not present client certificates or \
                     read revocation lists (use a password, or another authentication)"
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url_query(url, &mut take)?
    } else {
        split_key_values(url, &mut take)?
    };
    let settings = TlsSettings {
        mode: mode.unwrap_or_default(),
        root_cert: root_cert.unwrap_or(RootCert::System),
    };
    Ok((rest, settings))
}

type Take<'a> = dyn FnMut(&str, String) -> Result<bool, StoreError> + 'a;

/// The URL without the query pairs `take` keeps.
fn split_url_query(url: &str, take: &mut Take<'_>) -> Result<String, StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(key)?, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("bad percent-encoding in {text:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{text:?} is not UTF-8 once decoded")))
}

/// The `key=value` connection string without the pairs `take` keeps (libpq's syntax: spaces
/// around `=` allowed, values in single quotes, `\` escapes).
fn split_key_values(text: &str, take: &mut Take<'_>) -> Result<String, StoreError> {
    let chars: Vec<char> = text.chars().collect();
    let mut kept: Vec<String> = Vec::new();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_space(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        let mut key = String::new();
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            key.push(chars[i]);
            i += 1;
        }
        skip_space(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            // Not ours to judge: `tokio-postgres` names the mistake.
            return Ok(text.to_string());
        }
        i += 1;
        skip_space(&mut i);
        let mut value = String::new();
        if chars.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Ok(text.to_string()),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        if !take(&key, value)? {
            kept.push(chars[start..i].iter().collect());
        }
    }
    Ok(kept.join(" "))
}

/// The rustls connector for `settings`: its certificate checks are those of the mode.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS: {e}")))?;
    let verify_chain = match settings.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        // libpq: `require` with a CA file given checks the chain as `verify-ca` does.
        SslMode::Require => matches!(settings.root_cert, RootCert::File(_)),
        SslMode::Disable | SslMode::Prefer => false,
    };
    let config = if !verify_chain {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth()
    } else {
        let roots = Arc::new(root_store(&settings.root_cert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS: {e}")))?;
        if settings.mode == SslMode::VerifyFull {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(root_cert: &RootCert) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        RootCert::File(path) => {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Unavailable(format!("cannot read sslrootcert {shown}: {e}"))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StoreError::Unavailable(format!("sslrootcert {shown} is not valid PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "sslrootcert {shown} holds a certificate that is not usable as a CA: {e}"
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "sslrootcert {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                )));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(StoreError::Unavailable(
                    "sslmode verify-ca/verify-full: the system has no root certificates; name \
                     the server's CA with sslrootcert=PATH in the URL"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// What to tell the user about a failed connection, when TLS is the reason.
pub fn hint(error: &tokio_postgres::Error, settings: &TlsSettings) -> Option<String> {
    if let Some(rustls::Error::InvalidCertificate(cert)) = find_rustls_error(error) {
        return Some(match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                match &settings.root_cert {
                    RootCert::File(path) => format!(
                        "the server's certificate is not signed by a CA in sslrootcert {}",
                        path.display()
                    ),
                    RootCert::System => "the server's certificate is not signed by a CA \
                                             the system trusts: name its CA file with \
                                             sslrootcert=PATH in the URL"
                        .to_string(),
                }
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the host of the URL: connect by \
                     a name it holds, or check the chain only with sslmode=verify-ca"
                    .to_string()
            }
            _ => "the server's certificate was refused".to_string(),
        });
    }
    let text = error.to_string();
    if text.contains("server does not support TLS") {
        return Some(format!(
            "the server does not accept TLS connections; sslmode={} needs it",
            match settings.mode {
                SslMode::Require => "require",
                SslMode::VerifyCa => "verify-ca",
                _ => "verify-full",
            }
        ));
    }
    None
}

/// Looks through the causes, into `io::Error`s too: their `source` skips the error they
/// wrap (tokio-rustls wraps rustls' error in one).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return find_rustls_error(inner);
    }
    find_rustls_error(error.source()?)
}

/// `prefer` and `require` without a CA, as libpq: encrypt, but take any certificate. The
/// handshake's signatures are still checked, so the session is with the certificate's key.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check of the chain, without the host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The webpki verifier checks the name last, after the chain (and revocation): a
        // name mismatch therefore means the rest passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_tls_parameters_out_of_a_url() {
        let (rest, settings) = split(
            "postgres://u:p@db.example:5432/jobs?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20file.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/jobs?application_name=x&connect_timeout=5"
        );
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.root_cert,
            RootCert::File(PathBuf::from("/etc/ca file.pem"))
        );

        let (rest, settings) = split("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(settings.mode, SslMode::Require);
        assert_eq!(settings.root_cert, RootCert::System);

        let (rest, settings) = split("postgres://h/db").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(settings.mode, SslMode::Prefer);

        let (_, settings) = split("postgres://h/db?sslrootcert=system&sslmode=verify-ca").unwrap();
        assert_eq!(settings.mode, SslMode::VerifyCa);
        assert_eq!(settings.root_cert, RootCert::System);
    }

    #[test]
    fn takes_the_tls_parameters_out_of_key_values() {
        let (rest, settings) = split(
            "host=db.example sslmode = verify-ca user=u sslrootcert='/tmp/my ca\\'s.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(rest, "host=db.example user=u dbname=x");
        assert_eq!(settings.mode, SslMode::VerifyCa);
        assert_eq!(
            settings.root_cert,
            RootCert::File(PathBuf::from("/tmp/my ca's.pem"))
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (url, expected) in [
            ("postgres://h/db?sslmode=allow", "sslmode=\"allow\""),
            (
                "postgres://h/db?sslmode=verify_full",
                "verify-ca or verify-full",
            ),
            ("postgres://h/db?sslrootcert=", "sslrootcert is empty"),
            ("postgres://h/db?sslrootcert=%zz", "percent-encoding"),
            ("host=h sslmode=bogus", "sslmode=\"bogus\""),
            ("postgres://h/db?sslcert=c.pem", "sslcert is not supported"),
        ] {
            let err = split(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: RootCert::File(PathBuf::from("/nonexistent/ca.pem")),
        };
        let err = connector(&settings).err().unwrap().to_string();
        assert!(
            err.contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );

        let dir = std::env::temp_dir().join(format!("hinter-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let settings = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: RootCert::File(empty.clone()),
        };
        let err = connector(&settings).err().unwrap().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! TLS for the installer's own PostgreSQL connection, with libpq's `sslmode` meanings, so that one
//! URL means the same to this connection and to `pg_dump`/`psql`/`pg_restore`, which get it as it is:
//!
//! | `sslmode` | here |
//! |---|---|
//! | `disable` | no TLS |
//! | `allow`, `prefer` (default) | TLS when the server offers it, certificate not checked; when the TLS handshake fails, once more without TLS (as libpq) |
//! | `require` | TLS or no connection; the certificate is checked against the root certificate when there is one (`sslrootcert`, else `~/.postgresql/root.crt`), else not at all (as libpq) |
//! | `verify-ca` | TLS; the certificate chain must lead to the root certificate |
//! | `verify-full` | as `verify-ca`, and the certificate must name the host |
//!
//! The `postgres` crate parses only `disable`/`prefer`/`require` and no certificate options, so
//! [`split_url`] takes them out of the URL it is given and [`connector`] applies them with rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS settings of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`, when the URL names one.
    pub root_cert: Option<PathBuf>,
}

/// Splits `url` into the URL for the `postgres` crate (its `sslmode` one the crate knows, the
/// certificate options removed) and the TLS settings. Options this connection cannot honour (client
/// certificates) are refused rather than ignored.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut settings = TlsSettings { mode: SslMode::Prefer, root_cert: None };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                settings.mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full")),
                }
            }
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(super::server::percent_decode(value))),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!("`{key}` is not supported (client certificates and revocation lists); use password authentication over sslmode=verify-full"))
            }
            _ => kept.push(pair),
        }
    }
    kept.push(match settings.mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    Ok((format!("{base}?{}", kept.join("&")), settings))
}

/// The rustls connector for `settings` (`None` for `disable`).
pub(crate) fn connector(settings: &TlsSettings) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_file = settings.root_cert.clone().or_else(default_root_cert);
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer => Arc::new(AnyCertificate(provider.clone())),
        SslMode::Require => match &root_file {
            Some(file) => webpki(file, &provider, false)?,
            None => Arc::new(AnyCertificate(provider.clone())),
        },
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let file = root_file.ok_or_else(|| {
                "sslmode verify-ca/verify-full needs the CA certificate: add sslrootcert=/path/to/ca.pem to the URL (or put it at ~/.postgresql/root.crt)".to_string()
            })?;
            webpki(&file, &provider, settings.mode == SslMode::VerifyFull)?
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// Whether a failed connection failed in the TLS handshake (rather than reaching the server, or
/// logging in): only then does `prefer` try again without TLS.
pub(crate) fn is_tls_failure(e: &postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() || c.to_string().contains("TLS") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// libpq's default root certificate file, when it exists.
fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".postgresql").join("root.crt")).filter(|p| p.is_file())
}

fn webpki(
    file: &Path,
    provider: &Arc<CryptoProvider>,
    check_name: bool,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
        roots.add(cert).map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {} holds no certificate", file.display()));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
    Ok(if check_name { inner } else { Arc::new(ChainOnly(inner)) })
}

/// `prefer`, and `require` without a root certificate: encrypted, but any certificate is taken,
/// as libpq does. The handshake signatures are still checked (the key really is the certificate's).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a root certificate): the chain must lead to the root; the host
/// name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end, intermediates, name, ocsp, now) {
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
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_what_the_crate_parses_and_the_tls_settings() {
        let (url, s) = split_url("postgres://u:p@db:5432/app").unwrap();
        assert_eq!(
            (url.as_str(), s.mode, s.root_cert),
            ("postgres://u:p@db:5432/app?sslmode=prefer", SslMode::Prefer, None)
        );
        let (url, s) =
            split_url("postgres://u@db/app?application_name=x&sslmode=verify-full&sslrootcert=/etc/ca%20dir/ca.pem")
                .unwrap();
        assert_eq!(url, "postgres://u@db/app?application_name=x&sslmode=require");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca dir/ca.pem")));
        assert_eq!(split_url("postgres://db/app?sslmode=disable").unwrap().1.mode, SslMode::Disable);
        assert!(split_url("postgres://db/app?sslmode=bogus").unwrap_err().contains("bogus"));
        assert!(split_url("postgres://db/app?sslcert=/c.pem").unwrap_err().contains("sslcert"));
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let s = TlsSettings { mode: SslMode::VerifyFull, root_cert: Some(PathBuf::from("/nonexistent/ca.pem")) };
        assert!(connector(&s).err().unwrap().contains("/nonexistent/ca.pem"));
        assert!(connector(&TlsSettings { mode: SslMode::Disable, root_cert: None }).unwrap().is_none());
        assert!(connector(&TlsSettings { mode: SslMode::Require, root_cert: None }).unwrap().is_some());
    }
}

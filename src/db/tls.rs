//! `sslmode` as libpq reads it, mapped onto tokio-postgres + rustls.
//!
//! tokio-postgres knows only disable/prefer/require and never verifies certificates on its own.
//! libpq's meaning is kept: `require` (and `prefer`, `allow`) encrypt without verifying, as
//! Supabase's connection strings expect; `verify-ca`/`verify-full` verify against the Mozilla
//! roots plus `sslrootcert` (Supabase's CA file can be downloaded from the dashboard).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub struct ConnectOptions {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Encrypt(SslMode),
    Verify,
}

impl ConnectOptions {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (cleaned, mode, root_cert) = extract_tls_params(url)?;
        let mut config: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e: tokio_postgres::Error| e.to_string())?;
        if config.get_application_name().is_none() {
            config.application_name("stripe-worker");
        }
        config.connect_timeout(std::time::Duration::from_secs(5));
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Encrypt(m) => m,
            Mode::Verify => SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(mode, root_cert.as_deref())?);
        Ok(Self { config, tls })
    }
}

/// Removes `sslmode`/`sslrootcert` (which tokio-postgres would reject or ignore) from a URL or
/// key=value connection string.
fn extract_tls_params(url: &str) -> Result<(String, Mode, Option<String>), String> {
    let mut mode_raw: Option<String> = None;
    let mut root_cert = None;
    let cleaned = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| match pair.split_once('=') {
                        Some(("sslmode", v)) => {
                            mode_raw = Some(v.to_owned());
                            false
                        }
                        Some(("sslrootcert", v)) => {
                            root_cert = Some(v.to_owned());
                            false
                        }
                        _ => !pair.is_empty(),
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|pair| match pair.split_once('=') {
                Some(("sslmode", v)) => {
                    mode_raw = Some(v.to_owned());
                    false
                }
                Some(("sslrootcert", v)) => {
                    root_cert = Some(v.to_owned());
                    false
                }
                _ => true,
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mode = match mode_raw.as_deref().unwrap_or("prefer") {
        "disable" => Mode::Disable,
        "allow" | "prefer" => Mode::Encrypt(SslMode::Prefer),
        "require" => Mode::Encrypt(SslMode::Require),
        "verify-ca" | "verify-full" => Mode::Verify,
        other => return Err(format!("unknown sslmode {other:?}")),
    };
    Ok((cleaned, mode, root_cert))
}

fn client_config(mode: Mode, root_cert: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if mode == Mode::Verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = root_cert {
            let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in rustls_pemfile_certs(&pem)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert is not PEM: {e:?}"))
}

/// libpq's `sslmode=require`: the channel is encrypted, the peer is not authenticated.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_removed_from_urls() {
        let (url, mode, _) =
            extract_tls_params("postgres://u:p@h:5432/db?sslmode=require&application_name=x")
                .unwrap();
        assert_eq!(url, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(mode, Mode::Encrypt(SslMode::Require));
        let (url, mode, root) =
            extract_tls_params("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/ca.crt")
                .unwrap();
        assert_eq!(url, "postgresql://u@h/db");
        assert_eq!(mode, Mode::Verify);
        assert_eq!(root.as_deref(), Some("/ca.crt"));
        let (_, mode, _) = extract_tls_params("postgres://u@h/db").unwrap();
        assert_eq!(mode, Mode::Encrypt(SslMode::Prefer));
    }

    #[test]
    fn key_value_strings_work_too() {
        let (s, mode, _) = extract_tls_params("host=h user=u sslmode=disable dbname=d").unwrap();
        assert_eq!(s, "host=h user=u dbname=d");
        assert_eq!(mode, Mode::Disable);
    }

    #[test]
    fn unknown_modes_are_rejected_and_urls_parse() {
        assert!(extract_tls_params("postgres://h/db?sslmode=maybe").is_err());
        assert!(ConnectOptions::parse("postgres://u:p@127.0.0.1:5432/db?sslmode=require").is_ok());
        assert!(
            ConnectOptions::parse("postgres://u:p@127.0.0.1:5432/db?sslmode=verify-full").is_ok()
        );
        assert!(ConnectOptions::parse("not a url at all ::").is_err());
    }
}

//! The TLS side of a connection: a rustls connector for the mode `sslmode` asked for (see
//! `config::TlsMode`). Supabase's CA file can be downloaded from the dashboard and given as
//! `sslrootcert`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::TlsMode;

/// The connector for `mode`; reads `sslrootcert` when one is named.
pub fn connector(mode: &TlsMode) -> Result<MakeRustlsConnect, String> {
    Ok(MakeRustlsConnect::new(client_config(mode)?))
}

fn client_config(mode: &TlsMode) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if let TlsMode::Verify { root_cert } = mode {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = root_cert {
            add_pem_file(&mut roots, path)?;
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

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert {shown} is not PEM: {e:?}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    Ok(())
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
    fn every_mode_builds_a_connector_and_a_missing_root_file_is_named() {
        for mode in [
            TlsMode::Disable,
            TlsMode::Encrypt { required: true },
            TlsMode::Verify { root_cert: None },
        ] {
            assert!(connector(&mode).is_ok(), "{mode:?}");
        }
        let missing = TlsMode::Verify {
            root_cert: Some("/nonexistent/ca.crt".into()),
        };
        let e = connector(&missing).err().unwrap();
        assert!(e.starts_with("sslrootcert /nonexistent/ca.crt"), "{e}");
    }
}

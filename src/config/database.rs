//! `DATABASE_URL` as libpq reads it, parsed once into plain data: the connection parameters
//! tokio-postgres understands and the TLS mode `sslmode` asks for. `db` turns it into a
//! connector.
//!
//! tokio-postgres knows only disable/prefer/require and never verifies certificates on its own,
//! so `sslmode` and `sslrootcert` are taken out of the string here. libpq's meaning is kept:
//! `require` (and `prefer`, `allow`) encrypt without verifying, as Supabase's connection strings
//! expect; `verify-ca`/`verify-full` verify against the Mozilla roots plus `sslrootcert`.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::SslMode;

/// How the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// `sslmode=disable`: plain TCP.
    Disable,
    /// `allow`/`prefer` (`required: false`, the default) or `require`: encrypted, the server's
    /// certificate is not checked.
    Encrypt { required: bool },
    /// `verify-ca`/`verify-full`: the certificate must chain to the Mozilla roots or to the
    /// certificates in `sslrootcert`.
    Verify { root_cert: Option<PathBuf> },
}

/// A parsed `DATABASE_URL`. Its `Debug` never shows the password (tokio-postgres redacts it).
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    pub postgres: tokio_postgres::Config,
    pub tls: TlsMode,
}

impl DatabaseUrl {
    /// A URL (`postgres://…`) or a key=value string; the reason of an error never contains the
    /// string itself.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (cleaned, tls) = extract_tls_params(url)?;
        let mut postgres: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e: tokio_postgres::Error| e.to_string())?;
        if postgres.get_application_name().is_none() {
            postgres.application_name("stripe-worker");
        }
        postgres.connect_timeout(Duration::from_secs(5));
        postgres.keepalives_idle(Duration::from_secs(30));
        postgres.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Encrypt { required: false } => SslMode::Prefer,
            TlsMode::Encrypt { required: true } | TlsMode::Verify { .. } => SslMode::Require,
        });
        Ok(Self { postgres, tls })
    }
}

/// Removes `sslmode`/`sslrootcert` (which tokio-postgres would reject or ignore) from a URL or
/// key=value connection string.
fn extract_tls_params(url: &str) -> Result<(String, TlsMode), String> {
    let mut mode_raw: Option<String> = None;
    let mut root_cert = None;
    let mut keep = |pair: &str| match pair.split_once('=') {
        Some(("sslmode", v)) => {
            mode_raw = Some(v.to_owned());
            false
        }
        Some(("sslrootcert", v)) => {
            root_cert = Some(PathBuf::from(v));
            false
        }
        _ => !pair.is_empty(),
    };
    let cleaned = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let kept: Vec<&str> = query.split('&').filter(|p| keep(p)).collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|p| keep(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tls = match mode_raw.as_deref().unwrap_or("prefer") {
        "disable" => TlsMode::Disable,
        "allow" | "prefer" => TlsMode::Encrypt { required: false },
        "require" => TlsMode::Encrypt { required: true },
        "verify-ca" | "verify-full" => TlsMode::Verify { root_cert },
        other => return Err(format!("unknown sslmode {other:?}")),
    };
    Ok((cleaned, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_removed_from_urls() {
        let (url, tls) =
            extract_tls_params("postgres://u:p@h:5432/db?sslmode=require&application_name=x")
                .unwrap();
        assert_eq!(url, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(tls, TlsMode::Encrypt { required: true });
        let (url, tls) =
            extract_tls_params("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/ca.crt")
                .unwrap();
        assert_eq!(url, "postgresql://u@h/db");
        assert_eq!(
            tls,
            TlsMode::Verify {
                root_cert: Some("/ca.crt".into())
            }
        );
        let (_, tls) = extract_tls_params("postgres://u@h/db").unwrap();
        assert_eq!(tls, TlsMode::Encrypt { required: false });
    }

    #[test]
    fn key_value_strings_work_too() {
        let (s, tls) = extract_tls_params("host=h user=u sslmode=disable dbname=d").unwrap();
        assert_eq!(s, "host=h user=u dbname=d");
        assert_eq!(tls, TlsMode::Disable);
    }

    #[test]
    fn unknown_modes_are_rejected_and_urls_parse() {
        assert!(extract_tls_params("postgres://h/db?sslmode=maybe").is_err());
        let url = DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/db?sslmode=require").unwrap();
        assert_eq!(url.postgres.get_ssl_mode(), SslMode::Require);
        assert_eq!(url.postgres.get_application_name(), Some("stripe-worker"));
        assert!(DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/db?sslmode=verify-full").is_ok());
        assert!(DatabaseUrl::parse("not a url at all ::").is_err());
    }

    #[test]
    fn the_password_never_appears_in_debug_output() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@127.0.0.1:5432/db").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}

//! TLS to PostgreSQL, chosen in the `postgres://` URL as with libpq:
//!
//! - `sslmode` absent or `disable`: plain TCP (a server on localhost or a
//!   private network).
//! - `sslmode=prefer`: TLS if the server offers it, else plain.
//! - `sslmode=require` or `verify-full`: TLS or no connection.
//! - `sslrootcert=PATH`: the PEM file of the certificate authorities to
//!   trust (a managed database's CA bundle, say); without it, the Mozilla
//!   roots (webpki-roots). `sslrootcert` alone means `verify-full`.
//!
//! Unlike libpq's `require`, braid always verifies the server's certificate
//! chain and name: a connection that could be intercepted is not worth
//! encrypting. `verify-ca` (chain without name) is refused for that reason.
//!
//! tokio-postgres does not know `sslrootcert` or the `verify-*` modes, so
//! they are taken out of the URL here before it parses the rest.

use std::path::PathBuf;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsChoice {
    pub mode: SslMode,
    /// `sslrootcert`: trust these CAs instead of the Mozilla roots.
    pub roots: Option<PathBuf>,
}

/// Takes braid's TLS parameters out of `url`; returns the URL left for
/// tokio-postgres and the choice. `Err` says what is wrong with them.
pub(super) fn split_url(url: &str) -> Result<(String, TlsChoice), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut mode = None;
    let mut roots = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(value.to_string()),
            "sslrootcert" => {
                let path = percent_decode(value)
                    .ok_or_else(|| format!("sslrootcert `{value}` is not a valid path"))?;
                if path.is_empty() {
                    return Err(
                        "sslrootcert is empty: give the PEM file of the CAs to trust".into(),
                    );
                }
                roots = Some(path);
            }
            _ => kept.push(pair),
        }
    }
    let mode = match (mode.as_deref(), &roots) {
        (None, None) | (Some("disable"), None) => SslMode::Disable,
        (Some("disable"), Some(_)) => {
            return Err("sslrootcert with sslmode=disable: choose one".into());
        }
        (Some("prefer"), _) => SslMode::Prefer,
        (None, Some(_)) | (Some("require" | "verify-full"), _) => SslMode::Require,
        (Some("verify-ca"), _) => {
            return Err(
                "sslmode=verify-ca is not supported: braid always checks the server's name too (use verify-full)"
                    .into(),
            );
        }
        (Some(other), _) => {
            return Err(format!(
                "sslmode `{other}`: expected disable, prefer, require or verify-full"
            ));
        }
    };
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((
        rest,
        TlsChoice {
            mode,
            roots: roots.map(PathBuf::from),
        },
    ))
}

impl TlsChoice {
    /// The connector for tokio-postgres (used only when `mode` is not
    /// `Disable`, but always built so one pool type serves every mode).
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            None => store.roots = webpki_roots::TLS_SERVER_ROOTS.into(),
            Some(path) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let shown = path.display();
                let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sslrootcert {shown}: not a PEM file: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("sslrootcert {shown}: no certificate in it"));
                }
                for cert in certs {
                    store
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                }
            }
        }
        Ok(MakeRustlsConnect::new(crate::tls::client_config(store)?))
    }
}

/// `%XX` escapes decoded (a URL's query value); `None` if malformed.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, SslMode, Option<String>), String> {
        split_url(url).map(|(rest, c)| {
            let roots = c.roots.map(|p| p.display().to_string());
            (rest, c.mode, roots)
        })
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_kept() {
        let base = "postgres://u:p@db:5432/braid";
        assert_eq!(
            split(base).expect("plain"),
            (base.into(), SslMode::Disable, None)
        );
        assert_eq!(
            split(&format!("{base}?sslmode=require&application_name=braid")).expect("require"),
            (
                format!("{base}?application_name=braid"),
                SslMode::Require,
                None
            )
        );
        assert_eq!(
            split(&format!(
                "{base}?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20bundle.pem"
            ))
            .expect("verify-full"),
            (
                base.into(),
                SslMode::Require,
                Some("/etc/ca bundle.pem".into())
            )
        );
        // A CA file alone asks for verified TLS.
        assert_eq!(
            split(&format!("{base}?sslrootcert=/ca.pem")).expect("roots"),
            (base.into(), SslMode::Require, Some("/ca.pem".into()))
        );
        assert_eq!(
            split(&format!("{base}?sslmode=prefer")).expect("prefer").1,
            SslMode::Prefer
        );
    }

    #[test]
    fn unsupported_or_contradictory_tls_parameters_are_refused() {
        let base = "postgres://db/braid";
        for (query, error) in [
            ("sslmode=verify-ca", "verify-ca is not supported"),
            ("sslmode=allow", "sslmode `allow`: expected"),
            ("sslmode=disable&sslrootcert=/ca.pem", "choose one"),
            ("sslrootcert=", "sslrootcert is empty"),
            ("sslrootcert=%zz", "not a valid path"),
        ] {
            let got = split(&format!("{base}?{query}")).expect_err(query);
            assert!(got.contains(error), "{query}: {got}");
        }
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let choice = |p: &std::path::Path| TlsChoice {
            mode: SslMode::Require,
            roots: Some(p.to_path_buf()),
        };
        let err = choice(&missing).connector().err().expect("missing file");
        assert!(
            err.starts_with(&format!("sslrootcert {}", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = choice(&empty).connector().err().expect("no certificate");
        assert!(err.ends_with("no certificate in it"), "{err}");
        // The Mozilla roots need no file.
        let web = TlsChoice {
            mode: SslMode::Require,
            roots: None,
        };
        assert!(web.connector().is_ok());
    }
}

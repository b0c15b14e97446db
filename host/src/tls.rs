//! The one rustls client configuration braid makes: ring as the crypto
//! provider, rustls' safe default protocol versions, no client
//! certificate. Outbound HTTP (`capabilities::http_client`) and PostgreSQL
//! (`postgres`) differ only in the roots they trust.

use std::sync::Arc;

/// A TLS client configuration trusting `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

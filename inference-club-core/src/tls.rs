//! The TLS configuration of the club's HTTPS and WSS clients (feature `tls`): rustls with the
//! `ring` provider, chosen here and passed to each client, and the platform's certificate
//! verifier. No process-wide default is installed: an application embedding the crates keeps
//! whatever provider it chose for itself.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;

/// A client configuration: `ring`, the safe default protocol versions, the platform's verifier,
/// no client certificate.
pub fn client_config() -> Result<ClientConfig, rustls::Error> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_without_a_process_default() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        let config = super::client_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}

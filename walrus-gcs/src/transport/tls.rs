//! rustls and quinn configurations for mutual TLS with the cluster CA, built by hand.
//!
//! quinn's `ServerConfig::with_single_cert` does no client authentication and enables
//! 0-RTT (replayable), so both sides are assembled here: TLS 1.3 only, the ring provider
//! passed explicitly (no process-wide provider needed), the server demands a client
//! certificate chaining to the CA (`WebPkiClientVerifier`), the client checks that the
//! server's certificate names the peer it dialed, and early data stays off on both sides.
//! Which configured node a client is, is decided after the handshake by [`peer_name`].

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};

use super::certs::NodeIdentity;
use super::Limits;

/// ALPN protocol name of the Walrus GCS transport, version 2 (group records travel in
/// chunks at a view change). Nodes of different versions refuse each other at the TLS
/// handshake rather than misread each other's frames.
pub const ALPN: &[u8] = b"walrus-gcs/2";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the certificates or settings.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an unusable CA certificate).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The rustls config is not usable for QUIC (no TLS 1.3 suite).
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// ring's provider with AES-128-GCM preferred over ring's default AES-256-GCM: with AES
/// instructions it seals bulk data faster (10 rounds instead of 14) and is TLS 1.3's
/// mandatory suite. Both ends use this order, so links negotiate it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != TLS13_AES_128_GCM_SHA256.suite());
    Arc::new(p)
}

fn roots(identity: &NodeIdentity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone())?;
    Ok(Arc::new(roots))
}

/// The transport parameters both ends use: every limit set explicitly, because several of
/// quinn's defaults are unbounded.
pub fn transport_config(limits: &Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_bidi_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(limits.max_uni_streams))
        .stream_receive_window(quinn::VarInt::from_u32(limits.stream_receive_window))
        .receive_window(quinn::VarInt::from_u32(limits.receive_window))
        .send_window(limits.send_window)
        .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok())
        .keep_alive_interval(Some(limits.keep_alive))
        .initial_rtt(limits.initial_rtt)
        // Protocol messages go on streams; no datagrams are accepted.
        .datagram_receive_buffer_size(None);
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(limits.initial_window_bytes);
    t.congestion_controller_factory(Arc::new(cubic));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(limits.mtu_upper_bound.max(1200));
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The rustls server side for protocol `alpn`: TLS 1.3, a client certificate from the
/// cluster CA required, no early data. Shared by QUIC and the TCP streams of [`super::bulk`].
pub fn rustls_server_config(
    identity: &NodeIdentity,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.private_key())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT data is replayable: keep it off (0 is rustls' default; said here on purpose).
    tls.max_early_data_size = 0;
    Ok(Arc::new(tls))
}

/// The rustls client side for protocol `alpn`: TLS 1.3, this node's certificate
/// presented, the server's checked against the CA (and, by the caller's `ServerName`, the
/// dialed node), no early data.
pub fn rustls_client_config(
    identity: &NodeIdentity,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.private_key())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    Ok(Arc::new(tls))
}

/// The server side: requires a client certificate from the cluster CA; no 0-RTT.
pub fn server_config(
    identity: &NodeIdentity,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let quic = QuicServerConfig::try_from(rustls_server_config(identity, ALPN)?)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server
        .transport_config(Arc::new(transport_config(limits)))
        .migration(false)
        .max_incoming(limits.max_incoming)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(limits.max_incoming as u64 * 64 * 1024);
    Ok(server)
}

/// The client side: presents this node's certificate, checks the server's against the CA
/// and the dialed name; no 0-RTT.
pub fn client_config(
    identity: &NodeIdentity,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TlsError> {
    let quic = QuicClientConfig::try_from(rustls_client_config(identity, ALPN)?)?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport_config(limits)));
    Ok(client)
}

/// Which of `candidates` the (already CA-verified) certificate chain names in its SAN.
/// `None` if the chain is empty, unparsable, or names none of them.
pub fn peer_name<'a, I>(chain: &[CertificateDer<'static>], candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let leaf = chain.first()?;
    let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
    candidates.into_iter().find(|name| {
        ServerName::try_from(*name)
            .map(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
            .unwrap_or(false)
    })
}

/// The certificate chain a connection's peer presented (empty if none).
pub fn peer_chain(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|b| *b)
        .unwrap_or_default()
}

//! Istio's certificate API (`istio.v1.auth.IstioCertificateService`,
//! `security/v1alpha1/ca.proto` in istio/api), its two messages written
//! out with their field numbers, so that Istio's own agents, ztunnel and
//! Sextant's agent speak to the same service.

/// The service's gRPC name.
pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
/// Its one method's path.
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// A request for a certificate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// The certificate signing request, PEM.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// The lifetime asked for, in seconds (0: the CA's choice).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// What the caller says about itself (Istio: WorkloadName, WorkloadIP,
    /// ClusterID); informational only: identity comes from the credentials.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<envoy_types::pb::google::protobuf::Struct>,
}

/// The certificate chain issued.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates, the leaf first and the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

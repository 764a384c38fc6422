//! Bearer tokens of Kubernetes service accounts, validated by the API
//! server's TokenReview (`authentication.k8s.io/v1`), as Istio's control
//! plane does for proxies without client certificates. A token that
//! reviews as `system:serviceaccount:NAMESPACE:ACCOUNT` proves the identity
//! `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::{K8sConfig, client_config};

/// Reviews tokens with one cluster's API server.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audiences: Vec<String>,
    trust_domain: String,
}

impl TokenReviewer {
    /// A reviewer for the cluster `config` reaches; `audiences` (empty: the
    /// API server's own) are the audiences a token must be for. The trust
    /// domain is the cluster domain.
    pub async fn new(config: &K8sConfig, audiences: Vec<String>) -> Result<TokenReviewer, String> {
        let client_config = client_config(config).await.map_err(|e| e.chain())?;
        let client = kube::Client::try_from(client_config)
            .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
        Ok(TokenReviewer {
            api: Api::all(client),
            audiences,
            trust_domain: config.mapping.cluster_domain.clone(),
        })
    }

    /// The identity `token` proves, or why none.
    pub async fn review(&self, token: &str) -> Result<String, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 403 => {
                    "the service account needs RBAC create on \"tokenreviews\" in API group \"authentication.k8s.io\" (see deploy/rbac.yaml)".to_owned()
                }
                _ => format!("TokenReview failed: {e}"),
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server did not authenticate the token".into()));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let mut parts = username.split(':');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("system"), Some("serviceaccount"), Some(ns), Some(sa), None)
                if !ns.is_empty() && !sa.is_empty() =>
            {
                Ok(format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain))
            }
            _ => Err(format!(
                "the token is {username:?}'s, not a service account's"
            )),
        }
    }
}

//! The signup → token → repository flow over plain HTTP, for tests that run
//! whole processes (the primitives are the testkit's, shared with the bench).

pub use hookrelay_testkit::{deliver_at, repository_at, sign, token_at};

/// A signed-up tenant with a token holding every scope.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
}

/// A registered repository with its webhook secret.
#[derive(Debug, Clone)]
pub struct TestRepository {
    pub id: String,
    pub secret: String,
}

/// Signs up a tenant at `base` (a server, or Envoy in front of one) and gets
/// it a token.
pub async fn tenant_at(http: &reqwest::Client, base: &str, name: &str) -> TestTenant {
    let signed_up = hookrelay_testkit::sign_up_at(http, base, name).await;
    TestTenant {
        token: token_at(http, base, &signed_up.client_id, &signed_up.client_secret).await,
        tenant_id: signed_up.tenant_id,
        client_id: signed_up.client_id,
        client_secret: signed_up.client_secret,
    }
}

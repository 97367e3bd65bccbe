//! TLS end to end, with a CA and a server certificate generated here: webhooks
//! and tokens over HTTPS, and the agent streaming over TLS, trusting --ca-file.

use std::time::Duration;

use hookrelay::server::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reqwest::StatusCode;

use crate::helpers::{
    AgentProcess, TestTarget, fixture, repository_at, sign, spawn_app_with, tenant_at,
};

#[tokio::test]
async fn the_agent_streams_over_tls_and_webhooks_arrive_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let (ca_file, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert, server.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();

    let app = spawn_app_with(|c| {
        c.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
    })
    .await;
    let https = app.address.replace("http://", "https://");
    let grpcs = app.grpc_address.replace("http://", "https://");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();

    // Plaintext is refused on a TLS listener.
    assert!(
        reqwest::get(format!("{}/healthz", app.address))
            .await
            .is_err()
    );
    // HTTPS: signup, token, repository, signed webhook.
    let tenant = tenant_at(&http, &https, "acme").await;
    let repository = repository_at(&http, &https, &tenant.token, "acme/app").await;
    assert!(
        repository["webhook_url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let webhook_secret = repository["webhook_secret"].as_str().unwrap().to_owned();

    let target = TestTarget::start(vec![webhook_secret.clone()]).await;
    let mut tls_app = app;
    tls_app.grpc_address = grpcs;
    tls_app.address = https.clone();
    let ca_arg = ca_file.display().to_string();
    let _relay = AgentProcess::start(
        &tls_app,
        &tenant,
        "ci",
        &target.url,
        &["--ca-file", &ca_arg],
        dir.path(),
    );

    let body = fixture("push");
    let delivered = http
        .post(repository["webhook_url"].as_str().unwrap())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "tls-1")
        .header("x-hub-signature-256", sign(&webhook_secret, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    assert_eq!(target.wait_for(1, Duration::from_secs(20)).await, ["tls-1"]);
    assert_eq!(target.received.lock().unwrap()[0].body, body);
}

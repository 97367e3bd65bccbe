//! The token endpoint and its metadata, through the `oauth2` crate and the JWKS.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// What a standard OAuth2 client knows: the issuer's metadata, then the token endpoint.
async fn token_with_oauth2_crate(
    app: &TestApp,
    id: &str,
    secret: &str,
    auth: AuthType,
    scope: Option<&str>,
) -> String {
    let metadata = app.metadata().await;
    let client = BasicClient::new(ClientId::new(id.to_owned()))
        .set_client_secret(ClientSecret::new(secret.to_owned()))
        .set_token_uri(
            TokenUrl::new(metadata["token_endpoint"].as_str().unwrap().to_owned()).unwrap(),
        )
        .set_auth_type(auth);
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.exchange_client_credentials();
    if let Some(scope) = scope {
        request = request.add_scope(Scope::new(scope.to_owned()));
    }
    let token = request
        .request_async(&http)
        .await
        .expect("the oauth2 crate gets a token");
    assert_eq!(token.token_type().as_ref(), "bearer");
    assert!(token.expires_in().is_some());
    token.access_token().secret().clone()
}

/// What a standard JWT library needs: the JWKS from the metadata's jwks_uri.
async fn verify_with_jwks(app: &TestApp, token: &str) -> Value {
    let metadata = app.metadata().await;
    let jwks: JwkSet = app
        .http
        .get(metadata["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("the header carries a kid");
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[metadata["issuer"].as_str().unwrap()]);
    validation.set_audience(&["hookrelay"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn metadata_follows_rfc_8414() {
    let app = spawn_app().await;
    let metadata = app.metadata().await;
    assert_eq!(metadata["issuer"], app.address);
    assert_eq!(metadata["token_endpoint"], app.url("/oauth/token"));
    assert_eq!(metadata["jwks_uri"], app.url("/.well-known/jwks.json"));
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!([
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:device_code",
            "refresh_token"
        ])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        metadata["scopes_supported"],
        serde_json::json!([
            "repos:read",
            "repos:write",
            "clients:write",
            "events:read",
            "events:write"
        ])
    );
}

#[tokio::test]
async fn the_oauth2_crate_gets_tokens_that_verify_against_the_jwks() {
    let app = spawn_app().await;
    let signed_up = app.sign_up("acme").await;
    let (id, secret) = (
        signed_up["client_id"].as_str().unwrap(),
        signed_up["client_secret"].as_str().unwrap(),
    );

    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let token = token_with_oauth2_crate(&app, id, secret, auth, None).await;
        let claims = verify_with_jwks(&app, &token).await;
        assert_eq!(claims["iss"], app.address);
        assert_eq!(claims["sub"], id);
        assert_eq!(claims["aud"], "hookrelay");
        assert_eq!(claims["tenant_id"], signed_up["tenant_id"]);
        assert_eq!(
            claims["scope"],
            "repos:read repos:write clients:write events:read events:write"
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            15 * 60
        );
        assert!(!claims["jti"].as_str().unwrap().is_empty());
    }
    // Every token gets its own jti.
    let a = verify_with_jwks(
        &app,
        &token_with_oauth2_crate(&app, id, secret, AuthType::BasicAuth, None).await,
    )
    .await;
    let b = verify_with_jwks(
        &app,
        &token_with_oauth2_crate(&app, id, secret, AuthType::BasicAuth, None).await,
    )
    .await;
    assert_ne!(a["jti"], b["jti"]);
}

#[tokio::test]
async fn a_requested_scope_narrows_the_token() {
    let app = spawn_app().await;
    let signed_up = app.sign_up("acme").await;
    let (id, secret) = (
        signed_up["client_id"].as_str().unwrap(),
        signed_up["client_secret"].as_str().unwrap(),
    );

    let response = app
        .request_token(id, secret, Some("events:read repos:read"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "repos:read events:read");
    let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "repos:read events:read");
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "expected {code}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string());
}

#[tokio::test]
async fn token_endpoint_errors_follow_rfc_6749() {
    let app = spawn_app().await;
    let signed_up = app.sign_up("acme").await;
    let (id, secret) = (
        signed_up["client_id"].as_str().unwrap(),
        signed_up["client_secret"].as_str().unwrap(),
    );
    let url = app.url("/oauth/token");
    let before = app.database_digest().await;

    // RFC 6749 §5.2: a Basic challenge answers Basic credentials only; a
    // browser that posted its credentials in the form gets no login prompt.
    let wrong_basic_secret = app.request_token(id, "hrs_wrong", None).await;
    assert_eq!(
        wrong_basic_secret.headers()["www-authenticate"],
        r#"Basic realm="hookrelay""#
    );
    assert_oauth_error(
        wrong_basic_secret,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert_oauth_error(
        app.request_token("hrc_00000000000000000000000000000000", secret, None)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert_oauth_error(
        app.request_token("not-a-client", secret, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let no_credentials = app
        .http
        .post(&url)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert!(!no_credentials.headers().contains_key("www-authenticate"));
    assert_oauth_error(no_credentials, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong_post_secret = app
        .http
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", "hrs_wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert!(!wrong_post_secret.headers().contains_key("www-authenticate"));
    assert_oauth_error(
        wrong_post_secret,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;

    let password_grant = app
        .http
        .post(&url)
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(
        password_grant,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    let no_grant = app
        .http
        .post(&url)
        .basic_auth(id, Some(secret))
        .form(&[("scope", "repos:read")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(no_grant, StatusCode::BAD_REQUEST, "invalid_request").await;
    let json_body = app
        .http
        .post(&url)
        .basic_auth(id, Some(secret))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(json_body, StatusCode::BAD_REQUEST, "invalid_request").await;
    let two_methods = app
        .http
        .post(&url)
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(two_methods, StatusCode::BAD_REQUEST, "invalid_request").await;
    let repeated = app
        .http
        .post(&url)
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_oauth_error(repeated, StatusCode::BAD_REQUEST, "invalid_request").await;

    assert_oauth_error(
        app.request_token(id, secret, Some("admin")).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;

    // A client holding fewer scopes cannot ask for more.
    let tenant = app.tenant("other").await;
    let narrow: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &serde_json::json!({"name": "agent", "scopes": ["events:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let before_narrow = app.database_digest().await;
    let too_wide = app
        .request_token(
            narrow["client_id"].as_str().unwrap(),
            narrow["client_secret"].as_str().unwrap(),
            Some("repos:write"),
        )
        .await;
    assert_oauth_error(too_wide, StatusCode::BAD_REQUEST, "invalid_scope").await;
    assert_eq!(app.database_digest().await, before_narrow);
    assert_ne!(before, before_narrow);
}

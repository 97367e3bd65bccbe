//! The lists that grow with a tenant come in pages: `?limit=` and
//! `?after=<next_after>`, `{"items", "next_after"}`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

/// Every item of `path`, walking its pages of `limit`; and how many pages.
async fn walk(app: &TestApp, path: &str, token: &str, limit: usize) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={}", urlencode(after)));
        }
        let page = app.get_json(&url, token).await;
        let page_items = page["items"].as_array().unwrap();
        assert!(page_items.len() <= limit, "{page}");
        items.extend(page_items.iter().cloned());
        pages += 1;
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn every_growing_list_pages_in_order_and_refuses_bad_parameters() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.repository(&tenant, &format!("acme/app-{i}")).await.id);
    }
    let (repositories, pages) = walk(&app, "/v1/repositories", &tenant.token, 2).await;
    let listed: Vec<&str> = repositories
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "creation order, each once");
    assert_eq!(pages, 3);

    for i in 0..3 {
        let created = app
            .post_json(
                "/v1/clients",
                Some(&tenant.token),
                &json!({"name": format!("c-{i}"), "scopes": ["events:read"]}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let (clients, _) = walk(&app, "/v1/clients", &tenant.token, 3).await;
    let names: Vec<&str> = clients
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "c-0", "c-1", "c-2"]);

    for consumer in ["b", "a", "c"] {
        drop(
            app.stream(&tenant.token, consumer, &[], None)
                .await
                .unwrap(),
        );
    }
    let (consumers, pages) = walk(&app, "/v1/consumers", &tenant.token, 1).await;
    let names: Vec<&str> = consumers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!((names, pages), (vec!["a", "b", "c"], 3));

    let (issuers, _) = walk(&app, "/v1/trusted-issuers", &tenant.token, 1).await;
    assert!(issuers.is_empty());
    let (failed, _) = walk(&app, "/v1/deliveries/failed?consumer=a", &tenant.token, 2).await;
    assert!(failed.is_empty());

    // The default page holds everything here; bad parameters are 400.
    let page = app.get_json("/v1/repositories", &tenant.token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert!(page["next_after"].is_null());
    for path in [
        "/v1/repositories?limit=0",
        "/v1/repositories?limit=501",
        "/v1/repositories?after=not-a-cursor",
        "/v1/clients?after=1.x&after=2.y",
        "/v1/deliveries/failed?after=12",
    ] {
        let response = app.get(path, &tenant.token).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

//! An agent built against the first published proto still streams, acks and
//! completes redeliveries against today's server.

use std::time::Duration;

use hookrelay::grpc::proto::AckOutcome;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::control_plane::WAIT;
use crate::helpers::{authed, fixture, spawn_app};

/// The messages as the first published proto defined them (see
/// crates/hookrelay-proto/tests/baseline): what an older agent sends and decodes.
mod old {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamEventsRequest {
        #[prost(string, repeated, tag = "1")]
        pub repository_ids: Vec<String>,
        #[prost(string, tag = "2")]
        pub consumer: String,
        #[prost(int64, optional, tag = "3")]
        pub after_event_id: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(int64, tag = "1")]
        pub id: i64,
        #[prost(string, tag = "2")]
        pub repository_id: String,
        #[prost(string, tag = "3")]
        pub provider: String,
        #[prost(string, tag = "4")]
        pub event_type: String,
        #[prost(string, tag = "5")]
        pub delivery_id: String,
        #[prost(message, optional, tag = "6")]
        pub received_at: Option<prost_types::Timestamp>,
        #[prost(message, repeated, tag = "7")]
        pub headers: Vec<Header>,
        #[prost(bytes = "vec", tag = "8")]
        pub body: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EventAck {
        #[prost(string, tag = "1")]
        pub repository_id: String,
        #[prost(int64, tag = "2")]
        pub event_id: i64,
        #[prost(int32, tag = "3")]
        pub outcome: i32,
        #[prost(string, tag = "4")]
        pub failure_reason: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AckEventsRequest {
        #[prost(string, tag = "1")]
        pub consumer: String,
        #[prost(message, repeated, tag = "2")]
        pub acks: Vec<EventAck>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AckEventsResponse {
        #[prost(string, repeated, tag = "1")]
        pub skipped_repository_ids: Vec<String>,
    }
}

#[tokio::test]
async fn an_older_client_still_streams_acks_and_completes_redeliveries() {
    use tonic::codegen::http::uri::PathAndQuery;
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let event = app
        .post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc = tonic::client::Grpc::new(channel);
    let stream_path = PathAndQuery::from_static("/hookrelay.v1.EventService/StreamEvents");
    let ack_path = PathAndQuery::from_static("/hookrelay.v1.EventService/AckEvents");
    let request = old::StreamEventsRequest {
        consumer: "legacy".into(),
        ..Default::default()
    };
    let open = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>| {
        let (request, path, token) = (request.clone(), stream_path.clone(), tenant.token.clone());
        async move {
            grpc.ready().await.unwrap();
            grpc.server_streaming(
                authed(request, &token),
                path,
                tonic_prost::ProstCodec::<old::StreamEventsRequest, old::Event>::default(),
            )
            .await
            .unwrap()
            .into_inner()
        }
    };
    let old_ack = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>, id: i64| {
        let (path, token, repository_id) = (
            ack_path.clone(),
            tenant.token.clone(),
            repository.id.clone(),
        );
        async move {
            let request = old::AckEventsRequest {
                consumer: "legacy".into(),
                acks: vec![old::EventAck {
                    repository_id,
                    event_id: id,
                    outcome: AckOutcome::Delivered.into(),
                    failure_reason: String::new(),
                }],
            };
            grpc.ready().await.unwrap();
            grpc.unary(
                authed(request, &token),
                path,
                tonic_prost::ProstCodec::<old::AckEventsRequest, old::AckEventsResponse>::default(),
            )
            .await
            .unwrap();
        }
    };

    let mut stream = open(grpc.clone()).await;
    let received = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((received.id, received.body), (event, fixture("push")));
    old_ack(grpc.clone(), event).await;
    let consumer = app.get_json("/v1/consumers/legacy", &tenant.token).await;
    assert_eq!(consumer["repositories"][0]["acked_event_id"], event);
    let deliveries = app
        .get_json(&format!("/v1/events/{event}/deliveries"), &tenant.token)
        .await;
    assert_eq!(deliveries["deliveries"][0]["outcome"], "delivered");
    assert_eq!(
        deliveries["deliveries"][0]["status_code"],
        Value::Null,
        "an older agent reports less"
    );

    // A redelivery reaches it as a plain event; its plain ack completes it.
    let response = app
        .post_json(
            &format!("/v1/events/{event}/redeliver"),
            Some(&tenant.token),
            &json!({"consumer": "legacy"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let again = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.id, event);
    old_ack(grpc.clone(), event).await;
    drop(stream);
    let mut stream = open(grpc).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .is_err(),
        "the completed redelivery is not sent again"
    );
}

use super::proto;
use crate::store::event::StoredEvent;

impl From<&StoredEvent> for proto::Event {
    fn from(event: &StoredEvent) -> Self {
        event.clone().into()
    }
}

impl From<StoredEvent> for proto::Event {
    fn from(event: StoredEvent) -> Self {
        proto::Event {
            id: event.event_id.get(),
            repository_id: event.repository_id.to_string(),
            provider: event.provider,
            event_type: event.event_type,
            delivery_id: event.delivery_id,
            received_at: Some(prost_types::Timestamp {
                seconds: event.received_at.unix_timestamp(),
                nanos: i32::try_from(event.received_at.nanosecond()).unwrap_or_default(),
            }),
            headers: event
                .headers
                .0
                .into_iter()
                .map(|(name, value)| proto::Header { name, value })
                .collect(),
            body: event.body,
            redelivery: false,
            redelivery_id: String::new(),
            branch: event.branch,
            tag: event.tag,
            traceparent: event.traceparent,
            repository_name: event.repository_name,
        }
    }
}

//! The proto stays backward compatible: every message, field, enum value and
//! RPC of the last published contract (`tests/baseline/`, a copy of
//! proto/hookrelay/v1 as of 2026-11-21) is still there with the same number,
//! name, type and cardinality, so older agents and clients keep working.
//! New fields and RPCs are fine.

use prost_types::{FileDescriptorProto, FileDescriptorSet};

fn compile(root: &str) -> FileDescriptorProto {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
    let set: FileDescriptorSet = protox::compile([root.join("hookrelay/v1/events.proto")], [root])
        .expect("the proto compiles");
    set.file
        .into_iter()
        .find(|f| f.package() == "hookrelay.v1")
        .expect("the hookrelay.v1 file")
}

/// What `new` broke of `old`, one line per break.
fn incompatibilities(old: &FileDescriptorProto, new: &FileDescriptorProto) -> Vec<String> {
    let mut broken = Vec::new();
    for message in &old.message_type {
        let Some(current) = new.message_type.iter().find(|m| m.name() == message.name()) else {
            broken.push(format!("message {} removed", message.name()));
            continue;
        };
        for field in &message.field {
            let shape = |f: &prost_types::FieldDescriptorProto| {
                (
                    f.name().to_owned(),
                    f.r#type(),
                    f.label(),
                    f.type_name().to_owned(),
                    f.proto3_optional(),
                )
            };
            match current.field.iter().find(|f| f.number() == field.number()) {
                Some(now) if shape(now) == shape(field) => {}
                _ => broken.push(format!(
                    "{}.{} removed or changed",
                    message.name(),
                    field.name()
                )),
            }
        }
    }
    for enumeration in &old.enum_type {
        let current = new
            .enum_type
            .iter()
            .find(|e| e.name() == enumeration.name());
        for value in &enumeration.value {
            if !current.is_some_and(|e| {
                e.value
                    .iter()
                    .any(|v| v.number() == value.number() && v.name() == value.name())
            }) {
                broken.push(format!(
                    "{}.{} removed or changed",
                    enumeration.name(),
                    value.name()
                ));
            }
        }
    }
    for service in &old.service {
        let current = new.service.iter().find(|s| s.name() == service.name());
        for method in &service.method {
            let shape = |m: &prost_types::MethodDescriptorProto| {
                (
                    m.input_type().to_owned(),
                    m.output_type().to_owned(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            };
            if !current.is_some_and(|s| {
                s.method
                    .iter()
                    .any(|m| m.name() == method.name() && shape(m) == shape(method))
            }) {
                broken.push(format!(
                    "rpc {}.{} removed or changed",
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    broken
}

#[test]
fn the_current_proto_keeps_everything_the_baseline_had() {
    let broken = incompatibilities(&compile("tests/baseline"), &compile("../../proto"));
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_check_catches_renumbered_fields_retyped_rpcs_and_removed_values() {
    let old = compile("tests/baseline");
    let mut new = compile("../../proto");
    let event = new
        .message_type
        .iter_mut()
        .find(|m| m.name() == "Event")
        .unwrap();
    event
        .field
        .iter_mut()
        .find(|f| f.name() == "body")
        .unwrap()
        .number = Some(99);
    new.service[0].method[0].server_streaming = Some(false);
    new.enum_type[0].value.pop();
    assert_eq!(
        incompatibilities(&old, &new),
        [
            "Event.body removed or changed",
            "AckOutcome.ACK_OUTCOME_FAILED removed or changed",
            "rpc EventService.StreamEvents removed or changed",
        ]
    );
}

//! Newtypes that parse once at the edge: a value of these types is valid.

mod ids;
mod repository;
mod scope;

pub use ids::{ClientId, DeliveryId, EventId, RepositoryId, TenantId};
pub use repository::{ConsumerName, DisplayName, Provider, RepositoryName};
pub use scope::{Scope, Scopes};

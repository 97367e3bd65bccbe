//! Newtypes that parse once at the edge: a value of these types is valid.

mod filter;
mod ids;
mod repository;
mod scope;

pub(crate) use filter::event_selected;
pub use filter::{EventFilter, LikePatterns};
pub use ids::{ClientId, DeliveryId, EventId, RepositoryId, TenantId};
pub use repository::{ConsumerName, DisplayName, Provider, RepositoryName};
pub use scope::{Scope, Scopes};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_owner_slash_repo() {
        assert!(RepositoryName::parse(Provider::Github, "octo-org/octo.repo_1").is_ok());
        for bad in [
            "octo", "/repo", "owner/", "a/b/c", "../x", "owner/..", "own er/x",
        ] {
            assert!(
                RepositoryName::parse(Provider::Github, bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  acme  ").unwrap().as_str(), "acme");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert!(DisplayName::parse("a\nb").is_err());
    }

    #[test]
    fn ids_parse_only_their_own_shape() {
        let client = ClientId::generate();
        assert_eq!(ClientId::parse(client.as_str()), Some(client));
        for bad in ["hrc_", "hrc_xyz", "abc_00000000000000000000000000000000"] {
            assert!(ClientId::parse(bad).is_none(), "{bad}");
        }
        let repository = RepositoryId::new();
        assert_eq!(
            RepositoryId::parse(&repository.to_string()),
            Some(repository)
        );
        assert!(RepositoryId::parse("not-a-uuid").is_none());
        assert!(DeliveryId::parse(" 72d3162e-cc78 ").is_some());
        assert!(DeliveryId::parse("has space").is_none());
        assert!(DeliveryId::parse(&"x".repeat(DeliveryId::MAX_LEN + 1)).is_none());
    }

    #[test]
    fn scopes_parse_from_and_print_to_the_oauth2_form() {
        let scopes = Scopes::parse_space_separated("events:read  repos:read").unwrap();
        assert_eq!(scopes.to_string(), "repos:read events:read");
        assert!(scopes.contains(Scope::EventsRead) && !scopes.contains(Scope::ReposWrite));
        assert!(scopes.is_subset(&Scopes::all()));
        assert!(Scopes::parse_space_separated("events:read admin").is_err());
        assert!(Scopes::parse_space_separated("").unwrap().is_empty());
    }
}

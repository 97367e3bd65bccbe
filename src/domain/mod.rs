//! Newtypes that parse once at the edge: a value of these types is valid.

mod filter;
mod ids;
mod issuer;
mod names;
mod provider_access;
mod quota;
mod repository;
mod scope;

pub(crate) use filter::event_selected;
pub use filter::{EventFilter, LikePatterns};
pub use ids::{
    ClientId, DeliveryId, EventId, Horizon, RecoveryId, RepositoryId, TenantId, TrustedIssuerId,
};
pub use issuer::{Audience, ClaimConditions, IssuerUrl};
pub use names::{ConsumerName, DisplayName};
pub use provider_access::{
    ProviderAccess, ProviderAccessRequest, ProviderCredentials, default_api_url, log_retention,
    recovers,
};
pub use quota::{Quota, QuotaOverrides, Quotas, WebhookQuota};
pub use repository::{GitlabVerification, Provider, RepositoryName, WebhookSettings, webhook_url};
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
    fn each_provider_names_repositories_its_own_way() {
        let ok = [
            (Provider::Gitlab, "group/subgroup/project"),
            (Provider::Gitlab, "group/project"),
            (Provider::Gitea, "owner/repo"),
            (Provider::Forgejo, "owner/repo"),
            (Provider::Bitbucket, "PROJ/repo-slug"),
            (Provider::Standard, "billing-events"),
            (Provider::Standard, "acme/payments"),
        ];
        for (provider, name) in ok {
            assert!(
                RepositoryName::parse(provider, name).is_ok(),
                "{provider} {name}"
            );
        }
        let bad = [
            (Provider::Gitlab, "project"),
            (Provider::Gitea, "a/b/c"),
            (Provider::Bitbucket, "repo"),
            (Provider::Standard, ""),
            (Provider::Standard, "a//b"),
        ];
        for (provider, name) in bad {
            assert!(
                RepositoryName::parse(provider, name).is_err(),
                "{provider} {name}"
            );
        }
        assert_eq!("gitlab".parse::<Provider>(), Ok(Provider::Gitlab));
        assert_eq!(
            "svn".parse::<Provider>().unwrap_err(),
            "unsupported provider `svn`; supported: github, gitlab, gitea, forgejo, bitbucket, standard"
        );
    }

    #[test]
    fn settings_apply_only_to_their_providers_and_show_their_defaults() {
        let signing = WebhookSettings {
            verification: Some(GitlabVerification::SigningToken),
            ..Default::default()
        };
        assert!(signing.validate(Provider::Gitlab).is_ok());
        assert!(signing.validate(Provider::Github).is_err());
        assert!(signing.validate(Provider::Standard).is_err());
        let field = WebhookSettings {
            event_type_field: Some("data.kind".into()),
            ..Default::default()
        };
        assert!(field.validate(Provider::Standard).is_ok());
        assert!(field.validate(Provider::Gitlab).is_err());
        for bad in ["", "a..b", ".a"] {
            let bad = WebhookSettings {
                event_type_field: Some(bad.into()),
                ..Default::default()
            };
            assert!(bad.validate(Provider::Standard).is_err());
        }
        let tolerance = |seconds| WebhookSettings {
            timestamp_tolerance_seconds: Some(seconds),
            ..Default::default()
        };
        assert!(tolerance(5).validate(Provider::Standard).is_err());
        assert!(tolerance(60).validate(Provider::Standard).is_ok());
        let shown = WebhookSettings::default().effective(Provider::Standard);
        assert_eq!(shown.event_type_field.as_deref(), Some("type"));
        assert_eq!(shown.timestamp_tolerance_seconds, Some(300));
        assert_eq!(
            WebhookSettings::default()
                .effective(Provider::Gitlab)
                .verification,
            Some(GitlabVerification::Token)
        );
        assert_eq!(
            WebhookSettings::default().effective(Provider::Github),
            WebhookSettings::default()
        );
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

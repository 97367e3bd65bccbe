//! A trusted issuer's conditions: which workload tokens a tenant accepts.

use std::collections::BTreeMap;

use wildmatch::WildMatch;

const MAX_URL: usize = 2048;
const MAX_AUDIENCE: usize = 256;
const MAX_CLAIMS: usize = 32;
const MAX_CLAIM_NAME: usize = 64;
const MAX_PATTERN: usize = 256;

/// The issuer's URL, as its tokens' `iss` claim names it (compared exactly).
/// Always https: its OpenID configuration and keys are fetched from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrl(String);

impl IssuerUrl {
    /// `allow_http`: plain http too (local tests only).
    pub fn parse(value: &str, allow_http: bool) -> Result<Self, String> {
        if value.is_empty() || value.len() > MAX_URL || value.chars().any(char::is_control) {
            return Err(format!(
                "must be a URL of at most {MAX_URL} characters, without control characters"
            ));
        }
        let url = url::Url::parse(value).map_err(|e| format!("is not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => return Err("must be an https URL".into()),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold credentials".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must have no query or fragment".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The audience the workload asks its platform for (`aud`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(String);

impl Audience {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > MAX_AUDIENCE || value.chars().any(char::is_control) {
            return Err(format!(
                "must be 1 to {MAX_AUDIENCE} characters, without control characters"
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Claim conditions: each named claim must be a string matching its glob
/// (`*` any run of characters, `/` included; `?` one character; the rest
/// literal, case-sensitive), as in event filters. At least one: an issuer such
/// as GitHub Actions signs tokens for every repository on it, and lets any of
/// them ask for any audience.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ClaimConditions(BTreeMap<String, String>);

impl ClaimConditions {
    pub fn parse(claims: BTreeMap<String, String>) -> Result<Self, String> {
        if claims.is_empty() || claims.len() > MAX_CLAIMS {
            return Err(format!(
                "must hold 1 to {MAX_CLAIMS} conditions (for GitHub Actions, say `repository` or `sub`)"
            ));
        }
        for (name, pattern) in &claims {
            if name.is_empty() || name.len() > MAX_CLAIM_NAME || name.chars().any(char::is_control)
            {
                return Err(format!(
                    "claim names must be 1 to {MAX_CLAIM_NAME} characters, without control characters"
                ));
            }
            if pattern.is_empty()
                || pattern.len() > MAX_PATTERN
                || pattern.chars().any(char::is_control)
            {
                return Err(format!(
                    "the pattern of `{}` must be 1 to {MAX_PATTERN} characters, without control characters",
                    name.escape_debug()
                ));
            }
            if pattern.chars().all(|c| c == '*') {
                return Err(format!(
                    "the pattern of `{name}` matches anything; name what to trust"
                ));
            }
        }
        Ok(Self(claims))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether the claims of a token (its string values) satisfy every condition.
    pub fn accept(&self, claim: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|(name, pattern)| {
            claim(name).is_some_and(|value| WildMatch::new(pattern).matches(&value))
        })
    }

    /// Whether one token could satisfy both sets of conditions: unless some
    /// claim is constrained by both to patterns no string matches together,
    /// it could.
    pub fn may_overlap(&self, other: &Self) -> bool {
        self.0.iter().all(|(name, pattern)| {
            other
                .0
                .get(name)
                .is_none_or(|theirs| globs_intersect(pattern, theirs))
        })
    }
}

/// Whether some string matches both globs.
fn globs_intersect(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // memo[i][j]: whether a[i..] and b[j..] match a common string.
    let mut memo = vec![vec![None; b.len() + 1]; a.len() + 1];
    fn go(a: &[char], b: &[char], i: usize, j: usize, memo: &mut [Vec<Option<bool>>]) -> bool {
        if let Some(known) = memo[i][j] {
            return known;
        }
        let result = if i < a.len() && a[i] == '*' {
            go(a, b, i + 1, j, memo) || (j < b.len() && go(a, b, i, j + 1, memo))
        } else if j < b.len() && b[j] == '*' {
            go(a, b, i, j + 1, memo) || (i < a.len() && go(a, b, i + 1, j, memo))
        } else if i == a.len() || j == b.len() {
            i == a.len() && j == b.len()
        } else {
            (a[i] == '?' || b[j] == '?' || a[i] == b[j]) && go(a, b, i + 1, j + 1, memo)
        };
        memo[i][j] = Some(result);
        result
    }
    go(&a, &b, 0, 0, &mut memo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(pairs: &[(&str, &str)]) -> ClaimConditions {
        ClaimConditions::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn two_globs_intersect_when_one_string_matches_both() {
        for (a, b, both) in [
            ("acme/*", "acme/deploy", true),
            ("acme/*", "other/*", false),
            ("*-bot", "acme/*", true),
            ("a?c", "abc", true),
            ("a?c", "ab", false),
            ("refs/heads/main", "refs/heads/main", true),
            ("refs/heads/main", "refs/heads/dev", false),
            ("*main", "*dev", false),
            ("x*y*z", "*q*", true),
            // `*` crosses `:` too: "repo:acme/:ref:refs/tags/:ref:refs/heads/main" matches both.
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:*:ref:refs/tags/*",
                true,
            ),
            ("repo:acme/*", "repo:other/*", false),
        ] {
            assert_eq!(globs_intersect(a, b), both, "{a} ∩ {b}");
            assert_eq!(globs_intersect(b, a), both, "{b} ∩ {a}");
            // The check agrees with matching wherever one side is literal.
            if !b.contains(['*', '?']) {
                assert_eq!(WildMatch::new(a).matches(b), both, "{a} ~ {b}");
            }
        }
    }

    #[test]
    fn conditions_overlap_unless_a_shared_claim_keeps_them_apart() {
        let acme = conditions(&[("repository", "acme/*")]);
        assert!(!acme.may_overlap(&conditions(&[("repository", "other/*")])));
        assert!(acme.may_overlap(&conditions(&[("repository", "acme/deploy-bot")])));
        // A condition on another claim leaves the repository open to both.
        assert!(acme.may_overlap(&conditions(&[("ref", "refs/heads/main")])));
        assert!(
            !acme.may_overlap(&conditions(&[("repository", "other/x"), ("ref", "refs/*")])),
            "apart on one claim is enough"
        );
    }

    #[test]
    fn a_token_is_accepted_when_every_condition_matches_a_string_claim() {
        let wanted = conditions(&[("repository", "acme/*"), ("ref", "refs/heads/main")]);
        let token = |repository: &'static str, git_ref: Option<&'static str>| {
            move |name: &str| match name {
                "repository" => Some(repository.to_owned()),
                "ref" => git_ref.map(str::to_owned),
                _ => None,
            }
        };
        assert!(wanted.accept(token("acme/deploy", Some("refs/heads/main"))));
        assert!(!wanted.accept(token("acme/deploy", Some("refs/heads/dev"))));
        assert!(
            !wanted.accept(token("acme/deploy", None)),
            "a missing claim"
        );
        assert!(!wanted.accept(token("evil/acme", Some("refs/heads/main"))));
    }

    #[test]
    fn bad_conditions_and_urls_are_refused_with_a_reason() {
        assert!(ClaimConditions::parse(BTreeMap::new()).is_err());
        assert!(ClaimConditions::parse([("sub".to_string(), "**".to_string())].into()).is_err());
        assert!(IssuerUrl::parse("https://token.actions.githubusercontent.com", false).is_ok());
        for bad in [
            "http://issuer.example",
            "ftp://issuer.example",
            "https://user:pw@issuer.example",
            "https://issuer.example/?x=1",
            "not a url",
            "",
            "https://issuer.example/a\u{0}b",
        ] {
            assert!(IssuerUrl::parse(bad, false).is_err(), "{bad}");
        }
        assert!(IssuerUrl::parse("http://127.0.0.1:9000", true).is_ok());
        assert!(Audience::parse("").is_err());
        assert!(Audience::parse("hookrelay-acme").is_ok());
        // PostgreSQL cannot store NUL in text: refused here, never a 500 later.
        for (name, pattern) in [("re\u{0}po", "acme/*"), ("repository", "acme/\u{0}*")] {
            let claims = [(name.to_string(), pattern.to_string())].into();
            assert!(
                ClaimConditions::parse(claims).is_err(),
                "{name:?} {pattern:?}"
            );
        }
    }
}

/// Properties against brute force on a small alphabet: every string over
/// {a, b} up to the patterns' combined length is tried, which is enough for
/// a witness to exist if any does.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A reference glob matcher: `*` any run, `?` one character.
    fn reference(pattern: &[char], value: &[char]) -> bool {
        match (pattern.first(), value.first()) {
            (None, None) => true,
            (Some('*'), _) => {
                reference(&pattern[1..], value)
                    || (!value.is_empty() && reference(pattern, &value[1..]))
            }
            (Some('?'), Some(_)) => reference(&pattern[1..], &value[1..]),
            (Some(p), Some(v)) if p == v => reference(&pattern[1..], &value[1..]),
            _ => false,
        }
    }

    fn strings(max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..max {
            frontier = frontier
                .iter()
                .flat_map(|s| [format!("{s}a"), format!("{s}b")])
                .collect();
            all.extend(frontier.iter().cloned());
        }
        all
    }

    fn pattern() -> impl Strategy<Value = String> {
        "[ab*?]{1,4}".prop_filter("not only `*`", |p| !p.chars().all(|c| c == '*'))
    }

    proptest! {
        #[test]
        fn may_overlap_is_true_exactly_when_some_claim_matches_both(a in pattern(), b in pattern()) {
            let one = |p: &str| ClaimConditions::parse([("sub".to_owned(), p.to_owned())].into()).unwrap();
            let (x, y) = (one(&a), one(&b));
            let witness = strings(a.len() + b.len()).into_iter().find(|s| {
                let claim = |_: &str| Some(s.clone());
                x.accept(claim) && y.accept(claim)
            });
            prop_assert_eq!(x.may_overlap(&y), witness.is_some(), "{} ∩ {}: {:?}", a, b, witness);
            prop_assert_eq!(x.may_overlap(&y), y.may_overlap(&x));
        }

        #[test]
        fn the_glob_matcher_agrees_with_a_reference(pattern in "[ab*?]{0,6}", value in "[ab]{0,8}") {
            let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
            prop_assert_eq!(WildMatch::new(&pattern).matches(&value), reference(&p, &v));
        }

        #[test]
        fn claims_another_set_does_not_constrain_never_keep_them_apart(a in pattern(), b in pattern()) {
            let x = ClaimConditions::parse([("sub".to_owned(), a)].into()).unwrap();
            let y = ClaimConditions::parse([("ref".to_owned(), b)].into()).unwrap();
            prop_assert!(x.may_overlap(&y));
        }
    }
}

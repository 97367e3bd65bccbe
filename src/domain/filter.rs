//! A consumer's filter: which events its streams deliver.

use serde::Serialize;
use wildmatch::WildMatch;

/// At most this many patterns per list, each at most `MAX_PATTERN` bytes.
const MAX_PATTERNS: usize = 50;
const MAX_PATTERN: usize = 255;

/// Glob patterns (`*` any run of characters, `/` included; `?` one
/// character; everything else literal, case-sensitive). An event passes when
/// its type matches one of `event_types` (or the list is empty) and, if
/// `branches` or `tags` are given, the branch or tag it concerns matches one.
///
/// The same rule runs in two places: here, on events in memory (the streams'
/// shared tail), and in SQL (stream pages, pending counts, retention), on the
/// LIKE patterns of [`EventFilter::likes`]. A test checks that they agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventFilter {
    pub event_types: Vec<String>,
    pub branches: Vec<String>,
    pub tags: Vec<String>,
    #[serde(skip)]
    compiled: Compiled,
}

#[derive(Debug, Clone, Default)]
struct Compiled {
    event_types: Vec<WildMatch>,
    branches: Vec<WildMatch>,
    tags: Vec<WildMatch>,
}

// Compiled patterns follow from the globs.
impl PartialEq for Compiled {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Compiled {}

/// The LIKE forms of a filter's three lists, in the order of the struct.
#[derive(Debug, Clone, Default)]
pub struct LikePatterns {
    pub event_types: Vec<String>,
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

impl EventFilter {
    /// Checks each list: the error names the field.
    pub fn parse(
        event_types: Vec<String>,
        branches: Vec<String>,
        tags: Vec<String>,
    ) -> Result<Self, (&'static str, String)> {
        for (field, patterns) in [
            ("event_types", &event_types),
            ("branches", &branches),
            ("tags", &tags),
        ] {
            if patterns.len() > MAX_PATTERNS {
                return Err((field, format!("at most {MAX_PATTERNS} patterns")));
            }
            if let Some(bad) = patterns
                .iter()
                .find(|p| p.is_empty() || p.len() > MAX_PATTERN || p.chars().any(char::is_control))
            {
                return Err((
                    field,
                    format!(
                        "pattern {bad:?} must be 1 to {MAX_PATTERN} bytes without control characters"
                    ),
                ));
            }
        }
        let compile = |patterns: &[String]| patterns.iter().map(|p| WildMatch::new(p)).collect();
        Ok(Self {
            compiled: Compiled {
                event_types: compile(&event_types),
                branches: compile(&branches),
                tags: compile(&tags),
            },
            event_types,
            branches,
            tags,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.branches.is_empty() && self.tags.is_empty()
    }

    pub fn matches(&self, event_type: &str, branch: Option<&str>, tag: Option<&str>) -> bool {
        let any = |patterns: &[WildMatch], value: Option<&str>| {
            value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
        };
        (self.compiled.event_types.is_empty() || any(&self.compiled.event_types, Some(event_type)))
            && ((self.compiled.branches.is_empty() && self.compiled.tags.is_empty())
                || any(&self.compiled.branches, branch)
                || any(&self.compiled.tags, tag))
    }

    pub fn likes(&self) -> LikePatterns {
        let like = |patterns: &[String]| patterns.iter().map(|p| glob_to_like(p)).collect();
        LikePatterns {
            event_types: like(&self.event_types),
            branches: like(&self.branches),
            tags: like(&self.tags),
        }
    }
}

/// A glob as a LIKE pattern with the default escape character `\`.
fn glob_to_like(glob: &str) -> String {
    let mut like = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

/// The SQL twin of [`EventFilter::matches`], for an event aliased `$event`
/// and a row `$filter` holding `event_type_likes`, `branch_likes` and
/// `tag_likes`. A macro, so that queries stay `&'static str`.
macro_rules! event_selected {
    ($event:literal, $filter:literal) => {
        concat!(
            "((cardinality(",
            $filter,
            ".event_type_likes) = 0 or ",
            $event,
            ".event_type like any(",
            $filter,
            ".event_type_likes)) ",
            "and ((cardinality(",
            $filter,
            ".branch_likes) = 0 and cardinality(",
            $filter,
            ".tag_likes) = 0) ",
            "or coalesce(",
            $event,
            ".branch like any(",
            $filter,
            ".branch_likes), false) ",
            "or coalesce(",
            $event,
            ".tag like any(",
            $filter,
            ".tag_likes), false)))"
        )
    };
}
pub(crate) use event_selected;

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(event_types: &[&str], branches: &[&str], tags: &[&str]) -> EventFilter {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        EventFilter::parse(owned(event_types), owned(branches), owned(tags)).unwrap()
    }

    #[test]
    fn an_event_passes_on_its_type_and_then_its_branch_or_tag() {
        let all = filter(&[], &[], &[]);
        assert!(all.matches("issues", None, None));
        let pushes_to_main = filter(&["push"], &["main", "release/*"], &["v*"]);
        assert!(pushes_to_main.matches("push", Some("main"), None));
        assert!(pushes_to_main.matches("push", Some("release/1.x"), None));
        assert!(pushes_to_main.matches("push", None, Some("v1.0")));
        assert!(!pushes_to_main.matches("push", Some("feature"), None));
        assert!(
            !pushes_to_main.matches("push", None, None),
            "concerns no ref"
        );
        assert!(!pushes_to_main.matches("pull_request", Some("main"), None));
        let types_only = filter(&["pull_request*", "push"], &[], &[]);
        assert!(types_only.matches("pull_request_review", None, None));
        assert!(!types_only.matches("issues", Some("main"), None));
    }

    #[test]
    fn bad_patterns_name_their_field() {
        let empty = EventFilter::parse(vec![], vec![String::new()], vec![]);
        assert_eq!(empty.unwrap_err().0, "branches");
        let many = EventFilter::parse(vec!["x".into(); 51], vec![], vec![]);
        assert_eq!(many.unwrap_err().0, "event_types");
        assert!(EventFilter::parse(vec![], vec![], vec!["a\nb".into()]).is_err());
    }

    #[test]
    fn globs_become_escaped_like_patterns() {
        assert_eq!(glob_to_like("release/*"), "release/%");
        assert_eq!(glob_to_like("v?.*"), "v_.%");
        assert_eq!(glob_to_like("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}

/// The SQL twin agrees with the in-memory filter: a glob and its LIKE form
/// match the same strings, checked against a reference LIKE matcher (with
/// PostgreSQL's default escape `\`).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn like(pattern: &[char], value: &[char]) -> bool {
        match (pattern.first(), value.first()) {
            (None, None) => true,
            (Some('%'), _) => {
                like(&pattern[1..], value) || (!value.is_empty() && like(pattern, &value[1..]))
            }
            (Some('_'), Some(_)) => like(&pattern[1..], &value[1..]),
            (Some('\\'), Some(v)) if pattern.get(1) == Some(v) => like(&pattern[2..], &value[1..]),
            (Some('\\'), _) => false,
            (Some(p), Some(v)) if p == v => like(&pattern[1..], &value[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn a_glob_and_its_like_form_match_the_same_strings(glob in "[a%_\\\\*?/]{1,6}", value in "[a%_\\\\/]{0,7}") {
            let sql: Vec<char> = glob_to_like(&glob).chars().collect();
            let value_chars: Vec<char> = value.chars().collect();
            prop_assert_eq!(WildMatch::new(&glob).matches(&value), like(&sql, &value_chars), "{} as {:?}", glob, sql);
        }

        #[test]
        fn a_filter_prints_what_parses_back_to_it(
            types in proptest::collection::vec("[a-z*?:. ]{1,12}", 0..4),
            branches in proptest::collection::vec("[a-z0-9*?/._-]{1,12}", 0..4),
            tags in proptest::collection::vec("[a-z0-9*?/.v-]{1,12}", 0..4),
        ) {
            let filter = EventFilter::parse(types, branches, tags).unwrap();
            let printed = serde_json::to_value(&filter).unwrap();
            let list = |key: &str| -> Vec<String> { serde_json::from_value(printed[key].clone()).unwrap() };
            let again = EventFilter::parse(list("event_types"), list("branches"), list("tags")).unwrap();
            prop_assert_eq!(again, filter);
        }
    }
}

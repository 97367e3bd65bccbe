//! Pages of the lists that grow with a tenant (repositories, clients, trusted
//! issuers, consumers, failed deliveries): `?limit=` (default 100, at most
//! 500) and `?after=<cursor>`, answered `{"items": […], "next_after": …}`,
//! where `next_after` is the cursor of the next page, or null on the last.
//! A cursor is opaque: pass back what `next_after` gave.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Error;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

/// The paging parameters of a list; other parameters of the same query are
/// read by their own extractor.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    after: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, Error> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            Some(_) => Err(Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}"))),
        }
    }

    /// The cursor to read after, parsed by `parse` (None: from the start).
    pub fn after<C>(&self, parse: impl FnOnce(&str) -> Option<C>) -> Result<Option<C>, Error> {
        self.after
            .as_deref()
            .map(|after| {
                parse(after).ok_or_else(|| {
                    Error::invalid("after", "is not a cursor this list gave (next_after)")
                })
            })
            .transpose()
    }
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read in order: the extra row says
    /// another page follows, which starts after the last item's cursor.
    pub fn of<R>(
        mut rows: Vec<R>,
        limit: i64,
        cursor: impl Fn(&R) -> String,
        item: impl FnMut(R) -> T,
    ) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_after = more.then(|| rows.last().map(&cursor)).flatten();
        Page {
            items: rows.into_iter().map(item).collect(),
            next_after,
        }
    }
}

/// A cursor of a list in creation order: the last item's creation time and id.
pub fn created_cursor(at: OffsetDateTime, id: &str) -> String {
    format!("{}.{id}", at.unix_timestamp_nanos())
}

/// The parts of a `created_cursor`.
pub fn parse_created_cursor(cursor: &str) -> Option<(OffsetDateTime, &str)> {
    let (nanos, id) = cursor.split_once('.')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_where_the_next_one_starts_and_the_last_says_none() {
        let cursor = |n: &i32| n.to_string();
        let first = Page::of(vec![1, 2, 3], 2, cursor, |n| n);
        assert_eq!(
            (first.items, first.next_after),
            (vec![1, 2], Some("2".into()))
        );
        let last = Page::of(vec![3], 2, cursor, |n| n);
        assert_eq!((last.items, last.next_after), (vec![3], None));
    }

    #[test]
    fn created_cursors_round_trip_and_garbage_is_refused() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789).unwrap();
        let cursor = created_cursor(at, "hrc_1");
        assert_eq!(parse_created_cursor(&cursor), Some((at, "hrc_1")));
        for bad in ["", "x.y", "1", "99999999999999999999999999999.z"] {
            assert_eq!(parse_created_cursor(bad), None, "{bad}");
        }
        let query = PageQuery {
            limit: Some(501),
            after: Some("nope".into()),
        };
        assert!(query.limit().is_err());
        assert!(
            query
                .after(|c| parse_created_cursor(c).map(|(at, _)| at))
                .is_err()
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_cursor_parses_back_to_what_was_printed(nanos in -10_i128.pow(18)..10_i128.pow(19), id in "[a-z0-9_-]{0,40}") {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let cursor = created_cursor(at, &id);
            prop_assert_eq!(parse_created_cursor(&cursor), Some((at, id.as_str())));
        }

        #[test]
        fn a_consumer_name_prints_as_it_parsed(name in "\\PC{0,80}") {
            if let Ok(parsed) = crate::domain::ConsumerName::parse(&name) {
                prop_assert_eq!(parsed.as_str(), name.as_str());
                prop_assert_eq!(crate::domain::ConsumerName::parse(parsed.as_str()).unwrap(), parsed);
            }
        }
    }
}

//! The query the web admin's lists take (SPEAR's `ListQuery`): `q` (a case-insensitive search),
//! `sort` (`field:asc|desc`, or `sort_by` and `order`), `offset` and `limit`, applied in that
//! order; `total_count` counts what the search matched.

use serde::Deserialize;

use crate::error::{Result, SmsError};

/// Most items one list answers.
pub const MAX_LIMIT: usize = 1000;

/// Longest search text.
const MAX_QUERY: usize = 256;

/// `?q=&sort=&sort_by=&order=&offset=&limit=&status=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Case-insensitive text the item must contain (ids, names, addresses, metadata).
    pub q: Option<String>,
    /// `field:asc` or `field:desc`.
    pub sort: Option<String>,
    /// The field to sort by (with `order`).
    pub sort_by: Option<String>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    /// Items skipped after searching and sorting.
    pub offset: Option<usize>,
    /// Most items answered (1 to 1,000; default 1,000).
    pub limit: Option<usize>,
    /// Only items in this status.
    pub status: Option<String>,
}

/// A sort the query asks for: the field and whether descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// The field.
    pub field: String,
    /// Descending.
    pub desc: bool,
}

impl ListQuery {
    /// The search text, lowercased; None without one. Refused when too long.
    pub fn needle(&self) -> Result<Option<String>> {
        match self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            None => Ok(None),
            Some(q) if q.len() > MAX_QUERY => {
                Err(SmsError::invalid("q", format!("at most {MAX_QUERY} bytes")))
            }
            Some(q) => Ok(Some(q.to_lowercase())),
        }
    }

    /// The sort asked for, checked against the `fields` this list sorts by.
    pub fn sort(&self, fields: &[&str]) -> Result<Option<Sort>> {
        let (field, order) = match (&self.sort, &self.sort_by) {
            (Some(s), _) => match s.split_once(':') {
                Some((f, o)) => (f.to_owned(), Some(o.to_owned())),
                None => (s.clone(), None),
            },
            (None, Some(f)) => (f.clone(), self.order.clone()),
            (None, None) => return Ok(None),
        };
        if !fields.contains(&field.as_str()) {
            return Err(SmsError::invalid(
                "sort",
                format!("cannot sort by `{field}`: one of {}", fields.join(", ")),
            ));
        }
        let desc = match order.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(o) => {
                return Err(SmsError::invalid(
                    "order",
                    format!("`{o}` is neither asc nor desc"),
                ));
            }
        };
        Ok(Some(Sort { field, desc }))
    }

    /// The page of `items` (already searched and sorted) asked for, and how many there were.
    pub fn page<T>(&self, items: Vec<T>) -> Result<(Vec<T>, usize)> {
        if self.limit == Some(0) || self.limit.is_some_and(|l| l > MAX_LIMIT) {
            return Err(SmsError::invalid(
                "limit",
                format!("must be 1 to {MAX_LIMIT}"),
            ));
        }
        let total = items.len();
        let page = items
            .into_iter()
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(MAX_LIMIT))
            .collect();
        Ok((page, total))
    }
}

/// Whether any of `texts` contains `needle` (lowercase), ignoring case.
pub fn matches<'a>(needle: &str, texts: impl IntoIterator<Item = &'a str>) -> bool {
    texts.into_iter().any(|t| t.to_lowercase().contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sort: Option<&str>, sort_by: Option<&str>, order: Option<&str>) -> ListQuery {
        ListQuery {
            sort: sort.map(Into::into),
            sort_by: sort_by.map(Into::into),
            order: order.map(Into::into),
            ..ListQuery::default()
        }
    }

    #[test]
    fn a_sort_is_read_from_either_spelling_and_checked() {
        let fields = ["registered_at", "last_heartbeat"];
        let want = |f: &str, desc| {
            Some(Sort {
                field: f.into(),
                desc,
            })
        };
        assert_eq!(
            q(Some("registered_at:desc"), None, None)
                .sort(&fields)
                .unwrap(),
            want("registered_at", true)
        );
        assert_eq!(
            q(None, Some("last_heartbeat"), Some("ASC"))
                .sort(&fields)
                .unwrap(),
            want("last_heartbeat", false)
        );
        assert_eq!(q(None, None, None).sort(&fields).unwrap(), None);
        let e = q(Some("name:asc"), None, None).sort(&fields).unwrap_err();
        assert_eq!(e.field(), Some("sort"));
        let e = q(None, Some("registered_at"), Some("up"))
            .sort(&fields)
            .unwrap_err();
        assert_eq!(e.field(), Some("order"));
    }

    #[test]
    fn a_page_counts_everything_and_keeps_its_window() {
        let query = ListQuery {
            offset: Some(2),
            limit: Some(2),
            ..ListQuery::default()
        };
        let (page, total) = query.page((0..5).collect::<Vec<_>>()).unwrap();
        assert_eq!((page, total), (vec![2, 3], 5));
        for bad in [0, MAX_LIMIT + 1] {
            let query = ListQuery {
                limit: Some(bad),
                ..ListQuery::default()
            };
            assert_eq!(query.page(vec![1]).unwrap_err().field(), Some("limit"));
        }
        let long = ListQuery {
            q: Some("x".repeat(MAX_QUERY + 1)),
            ..ListQuery::default()
        };
        assert!(long.needle().is_err());
        assert!(matches("ab", ["xAbY"]));
    }
}

//! Cursor pagination shared by every list endpoint (`limit`, `starting_after`, `ending_before`).
//!
//! Guarantees: `limit` defaults to 10 and is clamped to 1..=100; cursors are object ids looked up
//! in the full ordered list (before filters), so a cursor keeps its place even if it does not
//! match the filter; an unknown or malformed cursor, or both cursors at once, is a 400
//! `invalid-input`. `has_more` says whether more objects lie further in the paging direction.

use super::validate::ApiError;
use crate::dots::types::Page;
use std::collections::HashMap;
use uuid::Uuid;

/// The paging part of a list query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageQuery {
    pub limit: usize,
    pub starting_after: Option<Uuid>,
    pub ending_before: Option<Uuid>,
}

impl PageQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<PageQuery, ApiError> {
        let limit = match q.get("limit") {
            None => 10,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("limit must be an integer"))?
                .clamp(1, 100) as usize,
        };
        let cursor = |name: &str| -> Result<Option<Uuid>, ApiError> {
            q.get(name)
                .filter(|s| !s.is_empty())
                .map(|s| Uuid::parse_str(s))
                .transpose()
                .map_err(|_| ApiError::invalid(format!("{name} must be an object id")))
        };
        let starting_after = cursor("starting_after")?;
        let ending_before = cursor("ending_before")?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid(
                "starting_after and ending_before cannot be used together",
            ));
        }
        Ok(PageQuery {
            limit,
            starting_after,
            ending_before,
        })
    }
}

/// One page of `items` (already in list order), keeping only those `keep` accepts.
pub fn paginate<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> Uuid,
    keep: impl Fn(&T) -> bool,
    q: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let position = |cursor: Uuid| {
        items
            .iter()
            .position(|t| id(t) == cursor)
            .ok_or_else(|| ApiError::invalid(format!("no object with id {cursor} to page from")))
    };
    if let Some(cursor) = q.ending_before {
        let end = position(cursor)?;
        let mut before: Vec<T> = items.into_iter().take(end).filter(|t| keep(t)).collect();
        let has_more = before.len() > q.limit;
        let data = before.split_off(before.len().saturating_sub(q.limit));
        return Ok(Page { data, has_more });
    }
    let start = match q.starting_after {
        Some(cursor) => position(cursor)? + 1,
        None => 0,
    };
    let mut data: Vec<T> = items.into_iter().skip(start).filter(|t| keep(t)).collect();
    let has_more = data.len() > q.limit;
    data.truncate(q.limit);
    Ok(Page { data, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn pages_walk_forward_and_back() {
        let all = ids(5);
        let q = |sa: Option<Uuid>, eb: Option<Uuid>| PageQuery {
            limit: 2,
            starting_after: sa,
            ending_before: eb,
        };
        let p1 = paginate(all.clone(), |u| *u, |_| true, &q(None, None)).unwrap();
        assert_eq!((p1.data.as_slice(), p1.has_more), (&all[0..2], true));
        let p3 = paginate(all.clone(), |u| *u, |_| true, &q(Some(all[3]), None)).unwrap();
        assert_eq!((p3.data.as_slice(), p3.has_more), (&all[4..5], false));
        let back = paginate(all.clone(), |u| *u, |_| true, &q(None, Some(all[4]))).unwrap();
        assert_eq!((back.data.as_slice(), back.has_more), (&all[2..4], true));
        assert!(paginate(all, |u| *u, |_| true, &q(Some(Uuid::new_v4()), None)).is_err());
    }

    #[test]
    fn limit_is_clamped() {
        let mut m = HashMap::new();
        m.insert("limit".to_string(), "1000".to_string());
        assert_eq!(PageQuery::parse(&m).unwrap().limit, 100);
        m.insert("limit".to_string(), "0".to_string());
        assert_eq!(PageQuery::parse(&m).unwrap().limit, 1);
        assert_eq!(PageQuery::parse(&HashMap::new()).unwrap().limit, 10);
    }
}

//! Pagination of ListVolumes and ListSnapshots. Pure.
//!
//! CSI "ListVolumes"/"ListSnapshots": `next_token` is opaque to the CO; a `starting_token`
//! the plugin did not issue is ABORTED ("Invalid starting_token": the CO restarts the
//! listing). A token names the last id of the previous page (entries are sorted by id), so it
//! stays valid when that entry is deleted or new ones are created between pages, and carries
//! a check tag derived from the listing kind and that id: a token made up by hand, cut short,
//! or issued by the other listing is refused.

use uuid::Uuid;

/// Which listing issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Volumes,
    Snapshots,
}

impl Listing {
    fn rpc(self) -> &'static str {
        match self {
            Listing::Volumes => "ListVolumes",
            Listing::Snapshots => "ListSnapshots",
        }
    }
}

const VERSION: &str = "v1";

fn tag(listing: Listing, last: &str) -> String {
    let ns = Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"paging.rds.csi.srvlab.io");
    let u = Uuid::new_v5(&ns, format!("{}/{last}", listing.rpc()).as_bytes());
    u.simple().to_string()[..12].to_string()
}

/// The token of a page that ended with `last`.
pub fn issue(listing: Listing, last: &str) -> String {
    format!("{VERSION}.{}.{last}", tag(listing, last))
}

/// Where a listing starts: `None` for an empty `starting_token` (the first page), else the
/// last id of the previous page; `Err` (ABORTED for the caller) says why a token was not
/// issued by this listing.
pub fn after(listing: Listing, starting_token: &str) -> Result<Option<String>, String> {
    match starting_token {
        "" => Ok(None),
        token => parse(listing, token).map(Some),
    }
}

/// The last id of the previous page, or why the token was not issued by this listing.
pub fn parse(listing: Listing, token: &str) -> Result<String, String> {
    let refuse = || {
        format!(
            "starting_token {token:?} was not issued by this driver's {}; restart the listing without a token",
            listing.rpc()
        )
    };
    let rest = token.strip_prefix(VERSION).and_then(|r| r.strip_prefix('.')).ok_or_else(refuse)?;
    let (t, last) = rest.split_once('.').ok_or_else(refuse)?;
    if last.is_empty() || t != tag(listing, last) {
        return Err(refuse());
    }
    Ok(last.to_string())
}

/// One page of `sorted` (ascending ids) after `after`, at most `max` entries (0: all), with
/// the token of the next page (empty when this is the last one).
pub fn page<T>(
    listing: Listing,
    sorted: Vec<T>,
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    max: usize,
) -> (Vec<T>, String) {
    let mut rest: Vec<T> = sorted.into_iter().filter(|e| after.is_none_or(|a| id(e) > a)).collect();
    if max == 0 || rest.len() <= max {
        return (rest, String::new());
    }
    rest.truncate(max);
    let token = issue(listing, id(rest.last().expect("max > 0")));
    (rest, token)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let t = issue(Listing::Volumes, "pvc-1");
        assert_eq!(parse(Listing::Volumes, &t), Ok("pvc-1".to_string()));
        assert!(parse(Listing::Snapshots, &t).unwrap_err().contains("ListSnapshots"));
        assert_eq!(after(Listing::Volumes, ""), Ok(None));
        assert_eq!(after(Listing::Volumes, &t), Ok(Some("pvc-1".to_string())));
        for bad in ["", "invalid-token", "5", "pvc-1", "v1.pvc-1", "v1..pvc-1", &t[..t.len() - 1]] {
            assert!(parse(Listing::Volumes, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_cover_every_entry_once() {
        let ids: Vec<String> = (0..7).map(|i| format!("pvc-{i}")).collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (p, next) = page(Listing::Volumes, ids.clone(), |s| s, after.as_deref(), 3);
            seen.extend(p);
            if next.is_empty() {
                break;
            }
            after = Some(parse(Listing::Volumes, &next).unwrap());
        }
        assert_eq!(seen, ids);
        let (all, next) = page(Listing::Volumes, ids.clone(), |s| s, None, 0);
        assert_eq!((all.len(), next.as_str()), (7, ""));
        let (exact, next) = page(Listing::Volumes, ids.clone(), |s| s, None, 7);
        assert_eq!((exact.len(), next.as_str()), (7, ""), "no token when nothing follows");
    }

    proptest! {
        /// Only tokens this module issued are accepted, and they name their last id.
        #[test]
        fn only_issued_tokens_parse(last in "[a-z0-9-]{1,40}", junk in ".{0,60}") {
            let t = issue(Listing::Snapshots, &last);
            prop_assert_eq!(parse(Listing::Snapshots, &t), Ok(last.clone()));
            if junk != t {
                let parsed = parse(Listing::Snapshots, &junk);
                prop_assert!(parsed.is_err() || issue(Listing::Snapshots, &parsed.unwrap()) == junk);
            }
        }
    }
}

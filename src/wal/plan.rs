//! Which records rebuild which page: the plan for reconstructing every block a
//! stretch of WAL touched. A record is a use of every page it changes
//! ([`pages::record_pages`]): its block references and the visibility-map
//! pages its heap changes clear.

use std::collections::BTreeMap;

use crate::process::protocol::RecordRef;
use crate::tag::PageTag;
use crate::wal::pages::{self, RecordPage};
use crate::wal::record::{self, DecodedRecord, RecordError};
use crate::wal::WalRecord;

/// One record's use of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    /// Index of the record in the caller's list.
    pub record: usize,
    /// The record initializes the page (will-init, or an image to apply):
    /// replay from here needs no earlier version of the page.
    pub initializes: bool,
    /// The record carries a consistency image of the page
    /// (`wal_consistency_checking`) that is not applied.
    pub checked: bool,
    /// The record changes the page without a block reference to it (a
    /// visibility-map page of a heap change, or of a truncation).
    pub side_effect: bool,
}

/// Every page changed by `records` (raw XLogRecords, in LSN order), with
/// the records that use it, in order.
pub fn block_uses<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Result<BTreeMap<PageTag, Vec<Use>>, (usize, RecordError)> {
    let mut blocks: BTreeMap<PageTag, Vec<Use>> = BTreeMap::new();
    for (i, data) in records.into_iter().enumerate() {
        let decoded = record::decode(data).map_err(|e| (i, e))?;
        for (tag, u) in uses_in(i, &decoded).map_err(|e| (i, e))? {
            blocks.entry(tag).or_default().push(u);
        }
    }
    Ok(blocks)
}

/// The pages one decoded record (index `record` in the caller's list)
/// changes, and how it uses each.
pub fn uses_in(
    record: usize,
    decoded: &DecodedRecord<'_>,
) -> Result<Vec<(PageTag, Use)>, RecordError> {
    let consistency = decoded.check_consistency();
    Ok(pages::record_pages(decoded)?
        .into_iter()
        .map(|p: RecordPage| {
            (
                p.tag,
                Use {
                    record,
                    initializes: p.initializes(),
                    checked: consistency && p.has_image() && !p.applies_image(),
                    side_effect: p.is_side_effect(),
                },
            )
        })
        .collect())
}

/// Split a block's uses into runs that each start at an initializing record
/// (the first run may instead start from a base page). Replaying every run
/// applies every record exactly once; the last run gives the final page.
pub fn runs(uses: &[Use]) -> Vec<&[Use]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..uses.len() {
        if uses[i].initializes {
            runs.push(&uses[start..i]);
            start = i;
        }
    }
    if !uses.is_empty() {
        runs.push(&uses[start..]);
    }
    runs
}

/// The shortest run that ends with the block's final page.
pub fn last_run(uses: &[Use]) -> &[Use] {
    let start = uses.iter().rposition(|u| u.initializes).unwrap_or(0);
    &uses[start..]
}

/// The records of `uses`, ready to send.
pub fn record_refs<'a>(records: &'a [WalRecord], uses: &[Use]) -> Vec<RecordRef<'a>> {
    uses.iter()
        .map(|u| RecordRef {
            end_lsn: records[u.record].end_lsn,
            data: &records[u.record].data,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(record: usize, initializes: bool) -> Use {
        Use {
            record,
            initializes,
            checked: false,
            side_effect: false,
        }
    }

    #[test]
    fn runs_split_at_initializing_records() {
        let uses = [
            u(0, false),
            u(1, false),
            u(2, true),
            u(3, false),
            u(4, true),
        ];
        let r = runs(&uses);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], &uses[0..2]);
        assert_eq!(r[1], &uses[2..4]);
        assert_eq!(r[2], &uses[4..5]);
        assert_eq!(last_run(&uses), &uses[4..]);
        assert_eq!(last_run(&uses[..2]), &uses[..2]);
        assert!(runs(&[]).is_empty());
    }
}

//! Block uses: which records of a stretch of WAL held in memory use which
//! block, and the runs of them that rebuild it (a `source::WalSource` makes
//! the same choice while it reads, as a `ReplayPlan`). A record is a use of every page it changes
//! ([`pages::record_pages`]): its block references and the visibility-map
//! pages its heap changes clear. A record that removes a block
//! ([`lifetime::removals`]: a truncation, a drop) is a use of it too: the
//! block's life starts over there, as at an initializing record.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use crate::pg::record::{RecordFormat, RecordRef};
use crate::tag::{PageTag, RelFileNode};
use crate::wal::lifetime::{self, Removal};
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
    /// The record removes the block: it does not exist after it (until a
    /// later record initializes it). Never sent to redo.
    pub removal: Option<Removal>,
}

/// Every page changed by `records` (raw XLogRecords of PostgreSQL 15 to
/// 18, in LSN order), with the records that use it, in order.
pub fn block_uses<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Result<BTreeMap<PageTag, Vec<Use>>, (usize, RecordError)> {
    block_uses_as(records, RecordFormat::Pg15)
}

/// Like [`block_uses`], for records in `format` (14's image flags differ).
pub fn block_uses_as<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
    format: RecordFormat,
) -> Result<BTreeMap<PageTag, Vec<Use>>, (usize, RecordError)> {
    let mut uses = BlockUses::default();
    for (i, data) in records.into_iter().enumerate() {
        let decoded = record::decode_as(data, format).map_err(|e| (i, e))?;
        uses.add(i, &decoded).map_err(|e| (i, e))?;
    }
    Ok(uses.finish())
}

/// [`block_uses_as`] one record at a time, for a caller that decodes each
/// record as it reads it (once: a [`WalReader`](crate::wal::WalReader) has
/// checked its CRC already). Holds a list of uses per page (a few words per
/// use) and the removals met, never the records.
#[derive(Debug, Default)]
pub struct BlockUses {
    /// Hashed while routing (a record is routed to each of its pages; an
    /// ordered map's search was 5% of a verify run), sorted once at the end.
    blocks: HashMap<PageTag, Vec<Use>, TagHashing>,
    /// Removals by relation, and by database (few: looked up per block).
    by_rel: HashMap<RelFileNode, Vec<(usize, Removal)>>,
    by_db: HashMap<(u32, u32), Vec<(usize, Removal)>>,
    /// The pages of the record being routed (one list for every record).
    pages: Vec<RecordPage>,
}

/// The block map's hashing: keyed by a random seed per map, so that WAL
/// written to make many blocks collide cannot be made without knowing it,
/// and fast: SipHash (std's default) was a fifth of the planner's
/// instructions (callgrind of the demo's WAL).
#[derive(Clone, Debug)]
struct TagHashing(u64);

impl Default for TagHashing {
    fn default() -> Self {
        // std's RandomState draws its keys at random: hashing a constant
        // with them is a random seed.
        TagHashing(std::hash::RandomState::new().hash_one(0u64))
    }
}

impl BuildHasher for TagHashing {
    type Hasher = TagHasher;
    fn build_hasher(&self) -> TagHasher {
        TagHasher(self.0)
    }
}

/// Folds each word in with a multiply (a bijection: two keys that differ
/// only in their last word never collide) and mixes at the end.
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    fn finish(&self) -> u64 {
        // MurmurHash3's finalizer: every bit of the state reaches the low
        // bits a table indexes with.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl BlockUses {
    /// Route record number `i` (numbers increase with each call).
    pub fn add(&mut self, i: usize, decoded: &DecodedRecord<'_>) -> Result<(), RecordError> {
        let consistency = decoded.check_consistency();
        pages::record_pages_into(decoded, &mut self.pages)?;
        for p in &self.pages {
            self.blocks.entry(p.tag).or_default().push(Use {
                record: i,
                initializes: p.initializes(),
                checked: consistency && p.has_image() && !p.applies_image(),
                side_effect: p.is_side_effect(),
                removal: None,
            });
        }
        for r in lifetime::removals(decoded)? {
            match r {
                Removal::Truncate { rel, .. } | Removal::Drop { rel } => {
                    self.by_rel.entry(rel).or_default().push((i, r))
                }
                Removal::DropDatabase { spcnode, dbnode }
                | Removal::CopyDatabase {
                    spcnode, dbnode, ..
                } => self
                    .by_db
                    .entry((spcnode, dbnode))
                    .or_default()
                    .push((i, r)),
            }
        }
        Ok(())
    }

    /// Every page routed to, with its uses in order, removals included.
    pub fn finish(self) -> BTreeMap<PageTag, Vec<Use>> {
        let BlockUses {
            mut blocks,
            by_rel,
            by_db,
            ..
        } = self;
        // A block's removals after its first use (before it, they change
        // nothing that is asked about).
        if !by_rel.is_empty() || !by_db.is_empty() {
            for (tag, uses) in blocks.iter_mut() {
                let rel = by_rel.get(&tag.rel).into_iter().flatten();
                let db = by_db
                    .get(&(tag.rel.spcnode, tag.rel.dbnode))
                    .into_iter()
                    .flatten();
                let mut removals: Vec<Use> = rel
                    .chain(db)
                    .filter(|(i, r)| r.covers(tag) && *i > uses[0].record)
                    .map(|&(record, r)| Use {
                        record,
                        initializes: false,
                        checked: false,
                        side_effect: false,
                        removal: Some(r),
                    })
                    .collect();
                if !removals.is_empty() {
                    uses.append(&mut removals);
                    uses.sort_by_key(|u| u.record);
                }
            }
        }
        blocks.into_iter().collect()
    }
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
                    removal: None,
                },
            )
        })
        .collect())
}

/// Whether the block's life starts over at this use: an initializing
/// record, or one that removes the block.
fn starts_over(u: &Use) -> bool {
    u.initializes || u.removal.is_some()
}

/// Split a block's uses into runs that each start at an initializing record
/// or a removal (the first run may instead start from a base page).
/// Replaying every run applies every record exactly once; the last run gives
/// the final page (see [`removed_by`] for a run that starts with a removal).
pub fn runs(uses: &[Use]) -> Vec<&[Use]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..uses.len() {
        if starts_over(&uses[i]) {
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
    let start = uses.iter().rposition(starts_over).unwrap_or(0);
    &uses[start..]
}

/// When `run` starts with a removal, the error that answers for the page
/// after it as of `lsn` (the block did not exist, or is not in WAL): the
/// same rule and words as a WAL source's plan ([`lifetime::after_removal`]),
/// for records of PostgreSQL `pg_version`. None otherwise.
pub fn removed_by(
    tag: &PageTag,
    lsn: u64,
    records: &[WalRecord],
    run: &[Use],
    pg_version: u32,
) -> Option<crate::wal::source::SourceError> {
    let removal = run.first()?.removal?;
    let recs = run.iter().map(|u| &records[u.record]);
    Some(lifetime::after_removal(tag, lsn, removal, recs, pg_version))
}

/// The records of `uses`, ready to send (removals, which no redo applies,
/// left out).
pub fn record_refs<'a>(records: &'a [WalRecord], uses: &[Use]) -> Vec<RecordRef<'a>> {
    uses.iter()
        .filter(|u| u.removal.is_none())
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
            removal: None,
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

//! A redo request: checked, then encoded for the wire once. The pool queues
//! it and a slot hands it to a process as it is; a [`crate::Redoer`] sends it
//! on its own process. Malformed input is refused here, before it costs a
//! process.

use crate::error::{Error, Result};
use crate::pg::page::{Page, PAGE_SIZE};
use crate::pg::record::{RecordFormat, RecordRef, SIZE_OF_XLOG_RECORD};
use crate::pg::rmgr::is_page_record;
use crate::process::protocol;
use crate::tag::{PageTag, MAX_FORKNUM};
use crate::wal::pages::PageChange;
use crate::wal::record;

/// A request ready to go: its page tag, and either the page itself (the
/// newest record's full-page image answers it) or the bytes a process is
/// sent for it.
pub struct Request {
    pub tag: PageTag,
    /// The messages a process is sent: `B` or `P`, one `A` per record, `G`
    /// (or a ping's `H`). Empty when `answer` is set.
    pub wire: Vec<u8>,
    /// The page, when the image of the request's last record is it: no
    /// process is needed.
    pub answer: Option<Box<Page>>,
    /// Sent from the newest full-page image among its records (only the
    /// records after it), not from the caller's base page.
    pub from_image: bool,
    /// Where the caller's base page goes in `wire` when `wire` leaves it
    /// out ([`Request::around_base`]): it is sent from the caller's memory
    /// between `wire[..gap]` and `wire[gap..]`, or copied in
    /// ([`Request::take_base`]) before the request outlives the call.
    pub(crate) base_gap: Option<usize>,
}

impl Request {
    /// Check a request of records in `format` ([`validate_request`]) and
    /// encode it into `wire` (cleared first: a buffer a caller reuses, so
    /// that a request costs no allocation). With `use_images` (`Config::fast_path`), the newest
    /// applicable full-page image is restored here: the page itself when
    /// its record is the last, else the base the later records are sent on.
    pub fn new(
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        format: RecordFormat,
        use_images: bool,
        wire: Vec<u8>,
    ) -> Result<Request> {
        Request::encode(tag, base, records, format, use_images, wire, false)
    }

    /// [`Request::new`], but a base page of the caller's is left out of
    /// `wire` (`base_gap` says where it goes): a caller that drives a
    /// process sends it from where it is, one part of the `writev`, instead
    /// of copying its 8 KiB into `wire` first. A base from an image is in
    /// `wire` as always (its page does not outlive this call).
    pub(crate) fn around_base(
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        format: RecordFormat,
        use_images: bool,
        wire: Vec<u8>,
    ) -> Result<Request> {
        Request::encode(tag, base, records, format, use_images, wire, true)
    }

    fn encode(
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        format: RecordFormat,
        use_images: bool,
        mut wire: Vec<u8>,
        leave_base_out: bool,
    ) -> Result<Request> {
        wire.clear();
        let newest_image = validate_request_as(tag, base, records, format)?;
        let image = match newest_image {
            Some(newest) if use_images => image_page(&newest).map(|page| (newest.index, page)),
            _ => None,
        };
        let (base, records, from_image) = match &image {
            Some((k, _)) if k + 1 == records.len() => {
                return Ok(Request {
                    tag: *tag,
                    wire,
                    answer: image.map(|(_, page)| page),
                    from_image: false,
                    base_gap: None,
                });
            }
            Some((k, page)) => (Some(&**page), &records[k + 1..], true),
            None => (base, records, false),
        };
        let base_gap = if leave_base_out && !from_image && base.is_some() {
            Some(protocol::write_request_around_base(&mut wire, tag, records))
        } else {
            protocol::write_request(&mut wire, tag, base, records);
            None
        };
        Ok(Request {
            tag: *tag,
            wire,
            answer: None,
            from_image,
            base_gap,
        })
    }

    /// The request's bytes, in order: `wire` alone, or, when it leaves the
    /// base page out, `wire` around `base` (which must then be the page it
    /// was made with).
    pub(crate) fn parts<'a>(&'a self, base: Option<&'a Page>) -> [&'a [u8]; 3] {
        match self.base_gap {
            None => [&self.wire[..], &[], &[]],
            Some(gap) => {
                let page = base.expect("a request without its base page is sent with it");
                [&self.wire[..gap], &page[..], &self.wire[gap..]]
            }
        }
    }

    /// Copy the base page left out of `wire` into it (`base`: the page it
    /// was made with), for a request that outlives the caller's call (a
    /// queued one). The bytes are then those [`Request::new`] writes.
    pub(crate) fn take_base(&mut self, base: Option<&Page>) {
        let Some(gap) = self.base_gap.take() else {
            return;
        };
        let page = base.expect("a request without its base page is given it");
        let end = self.wire.len();
        self.wire.resize(end + PAGE_SIZE, 0);
        self.wire.copy_within(gap..end, gap + PAGE_SIZE);
        self.wire[gap..gap + PAGE_SIZE].copy_from_slice(page);
    }

    /// A ping: a process answers it with a (zeroed) page.
    pub fn ping() -> Request {
        let mut wire = Vec::new();
        protocol::write_ping(&mut wire);
        Request {
            tag: PageTag::default(),
            wire,
            answer: None,
            from_image: false,
            base_gap: None,
        }
    }
}

/// Check a request before it reaches a process: a valid tag, every record a
/// well-formed XLogRecord with a correct CRC that changes the target page
/// ([`crate::wal::pages::record_pages`]: a block reference, or a
/// visibility-map page a heap change clears or a truncation cuts into), of a
/// page resource manager ([`crate::pg::rmgr::is_page_record`]) unless it is that
/// truncation, and, without a base page, a first record that initializes
/// the page. A visibility-map page its fork does not hold yet is a zero page
/// to PostgreSQL (redo initializes it): pass a zeroed base page.
/// Returns the newest record that carries an image of the page to apply, if
/// any, with that image as decoded here (see [`image_page`]): each record is
/// decoded once on the request path.
pub fn validate_request<'a>(
    tag: &PageTag,
    base: Option<&Page>,
    records: &[RecordRef<'a>],
) -> Result<Option<NewestImage<'a>>> {
    validate_request_as(tag, base, records, RecordFormat::Pg15)
}

/// [`validate_request`] of records in `format` (PostgreSQL 14's image flags
/// differ from 15's).
pub fn validate_request_as<'a>(
    tag: &PageTag,
    base: Option<&Page>,
    records: &[RecordRef<'a>],
    format: RecordFormat,
) -> Result<Option<NewestImage<'a>>> {
    if tag.forknum > MAX_FORKNUM {
        return Err(Error::InvalidArgument(format!(
            "fork number {} is not one of 0..={MAX_FORKNUM}",
            tag.forknum
        )));
    }
    if tag.blkno >= record::MAX_BLOCK_NUMBER {
        return Err(Error::InvalidArgument(format!(
            "block number {} is not a block a relation can have (InvalidBlockNumber, or \
             MaxBlockNumber)",
            tag.blkno
        )));
    }
    if records.is_empty() && base.is_none() {
        return Err(Error::InvalidArgument(
            "a request needs a base page or at least one record".into(),
        ));
    }
    let mut prev_lsn = 0;
    let mut newest_image = None;
    for (index, rec) in records.iter().enumerate() {
        let decoded = record::decode_as(rec.data, format)
            .map_err(|source| Error::MalformedRecord { index, source })?;
        let page_record = is_page_record(decoded.rmid, decoded.info);
        // Of a record that is not a page record only a truncation's
        // visibility-map page is ever applied; any other is refused as such.
        // What `record_pages` says of the target, without listing the rest.
        let page = match crate::wal::pages::record_page(&decoded, tag) {
            Ok(page) => page,
            Err(source) if page_record => return Err(Error::MalformedRecord { index, source }),
            Err(_) => None,
        };
        let vm_truncation = page.is_some_and(|p| p.change == PageChange::VmTruncate);
        if !page_record && !vm_truncation {
            return Err(Error::InvalidArgument(format!(
                "record #{index} ({} record with info {:#04x}, ending at {}) is not a page \
                 record: only the page resource managers (Heap, Heap2, Btree, Hash, Gin, Gist, \
                 Sequence, SPGist, BRIN, Generic), full-page images (XLOG FPI, \
                 FPI_FOR_HINT) and, for the visibility-map page it cuts into, Storage \
                 TRUNCATE are applied",
                decoded.rmgr_name(),
                decoded.info,
                crate::wal::format_lsn(rec.end_lsn)
            )));
        }
        let Some(page) = page else {
            return Err(Error::InvalidArgument(format!(
                "record #{index} ({} record ending at {}) does not change the target page {tag} \
                 (neither a block reference nor a visibility-map page its heap changes clear)",
                decoded.rmgr_name(),
                crate::wal::format_lsn(rec.end_lsn)
            )));
        };
        if index == 0 && base.is_none() && !page.initializes() {
            return Err(Error::InvalidArgument(format!(
                "no base page given, and the first record ({} record ending at {}) does not \
                 initialize the target page {tag}",
                decoded.rmgr_name(),
                crate::wal::format_lsn(rec.end_lsn)
            )));
        }
        if rec.end_lsn <= prev_lsn || rec.end_lsn < SIZE_OF_XLOG_RECORD as u64 {
            return Err(Error::InvalidArgument(format!(
                "record #{index}: end LSN {} does not follow the previous record's {}",
                crate::wal::format_lsn(rec.end_lsn),
                crate::wal::format_lsn(prev_lsn)
            )));
        }
        prev_lsn = rec.end_lsn;
        let image = decoded.block_for(tag).and_then(|b| b.image);
        if let Some(image) = image.filter(|img| img.apply()) {
            newest_image = Some(NewestImage {
                index,
                end_lsn: rec.end_lsn,
                image,
            });
        }
    }
    Ok(newest_image)
}

/// The newest record of a request that carries an image of its page to
/// apply, and that image (borrowed from the record).
#[derive(Clone, Copy, Debug)]
pub struct NewestImage<'a> {
    /// Index of the record in the request.
    pub index: usize,
    pub end_lsn: u64,
    pub image: record::BlockImage<'a>,
}

/// The page after the record of `newest`: its image restored and stamped
/// with the record's end LSN, exactly as redo leaves it (redo does nothing
/// more to a restored block). `None` when the image cannot be restored here:
/// PostgreSQL then decides.
pub fn image_page(newest: &NewestImage<'_>) -> Option<Box<Page>> {
    match crate::wal::image::restore(&newest.image) {
        Ok(mut page) => {
            crate::wal::image::stamp_lsn(&mut page, newest.end_lsn);
            Some(page)
        }
        Err(e) => {
            log::warn!(
                "record ending at {}: {e}; leaving it to PostgreSQL",
                crate::wal::format_lsn(newest.end_lsn)
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::page::PAGE_SIZE;
    use crate::pg::record_type::XLOG_HEAP_INSERT;
    use crate::pg::rmgr::RM_HEAP_ID;
    use crate::tag::MAIN_FORKNUM;
    use crate::wal::pages::tests::{build, main_blk, main_with, truncate, vm};
    use crate::wal::pages::VM_HEAPBLOCKS_PER_PAGE;

    #[test]
    fn requests_accept_records_for_the_pages_they_change() {
        let zero = [0u8; PAGE_SIZE];
        let insert = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &main_with(3, 2, 1),
        );
        let plain = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &main_with(3, 2, 0),
        );
        let trunc = truncate(53, 7);
        let one = |data| {
            [RecordRef {
                end_lsn: 0x2000,
                data,
            }]
        };
        assert!(validate_request(&vm(9), Some(&zero), &one(&insert)).is_ok());
        assert!(validate_request(&vm(9), Some(&zero), &one(&plain)).is_err());
        // A side effect never initializes: a base page is needed.
        assert!(validate_request(&vm(9), None, &one(&insert)).is_err());
        assert!(validate_request(&vm(53), Some(&zero), &one(&trunc)).is_ok());
        // A truncation is applied to that page only.
        assert!(validate_request(&main_blk(53), Some(&zero), &one(&trunc)).is_err());
        assert!(validate_request(&vm(VM_HEAPBLOCKS_PER_PAGE), Some(&zero), &one(&trunc)).is_err());
        // Short main data is malformed, for any target.
        let short = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &[0, 0],
        );
        assert!(matches!(
            validate_request(&main_blk(9), Some(&zero), &one(&short)),
            Err(crate::Error::MalformedRecord { .. })
        ));
    }

    #[test]
    fn a_request_around_its_base_page_sends_the_same_bytes() {
        let mut base = [0u8; PAGE_SIZE];
        base.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let insert = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &main_with(3, 2, 0),
        );
        let records = [RecordRef {
            end_lsn: 0x2000,
            data: &insert,
        }];
        let tag = main_blk(9);
        let make = |around: bool, base: Option<&Page>| {
            let encode = if around {
                Request::around_base
            } else {
                Request::new
            };
            encode(&tag, base, &records, RecordFormat::Pg15, true, Vec::new()).unwrap()
        };
        let whole = make(false, Some(&base));
        assert_eq!(whole.base_gap, None);
        let mut around = make(true, Some(&base));
        assert!(around.base_gap.is_some());
        assert_eq!(around.wire.len() + PAGE_SIZE, whole.wire.len());
        assert_eq!(around.parts(Some(&base)).concat(), whole.wire);
        // Queued: the page copied in gives Request::new's bytes.
        around.take_base(Some(&base));
        assert_eq!(around.base_gap, None);
        assert_eq!(around.wire, whole.wire);
        assert_eq!(around.parts(None).concat(), whole.wire);
    }
}

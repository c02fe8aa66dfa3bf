//! The wal-redo pipe protocol (docs/protocol.md), compatible with Neon's
//! `postgres --wal-redo`.
//!
//! Every message is a tag byte, a big-endian `u32` length that counts itself
//! and the payload, then the payload. A page tag is 17 big-endian bytes:
//! forknum (u8), spcnode, dbnode, relnode, blkno (u32 each).

use crate::pg::page::PAGE_SIZE;
pub use crate::pg::record::RecordRef;
use crate::tag::{PageTag, RelFileNode};

pub const TAG_BEGIN_REDO: u8 = b'B';
pub const TAG_PUSH_PAGE: u8 = b'P';
pub const TAG_APPLY_RECORD: u8 = b'A';
pub const TAG_GET_PAGE: u8 = b'G';
pub const TAG_PING: u8 = b'H';

/// Bytes of a serialized page tag.
pub const PAGE_TAG_LEN: usize = 17;

fn put_header(buf: &mut Vec<u8>, tag: u8, payload_len: usize) {
    // The length counts its own four bytes. Callers bound payloads far below
    // 4 GiB (records are at most 1 GiB), so the cast cannot truncate.
    let len = u32::try_from(payload_len + 4).expect("message too long for the protocol");
    buf.push(tag);
    buf.extend_from_slice(&len.to_be_bytes());
}

fn put_page_tag(buf: &mut Vec<u8>, tag: &PageTag) {
    buf.push(tag.forknum);
    buf.extend_from_slice(&tag.rel.spcnode.to_be_bytes());
    buf.extend_from_slice(&tag.rel.dbnode.to_be_bytes());
    buf.extend_from_slice(&tag.rel.relnode.to_be_bytes());
    buf.extend_from_slice(&tag.blkno.to_be_bytes());
}

/// Parse a serialized page tag; `None` if `b` is not exactly 17 bytes.
pub fn parse_page_tag(b: &[u8]) -> Option<PageTag> {
    if b.len() != PAGE_TAG_LEN {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some(PageTag {
        forknum: b[0],
        rel: RelFileNode {
            spcnode: be(1),
            dbnode: be(5),
            relnode: be(9),
        },
        blkno: be(13),
    })
}

/// Bytes one redo request takes on the wire.
pub fn request_len(base: Option<&[u8; PAGE_SIZE]>, records: &[RecordRef<'_>]) -> usize {
    let start = 5 + PAGE_TAG_LEN + if base.is_some() { PAGE_SIZE } else { 0 };
    let applies: usize = records.iter().map(|r| 5 + 8 + r.data.len()).sum();
    start + applies + 5 + PAGE_TAG_LEN
}

/// Append one complete redo request to `buf`: `B` or `P`, one `A` per record,
/// then `G`. The process answers it with exactly one page.
pub fn write_request(
    buf: &mut Vec<u8>,
    tag: &PageTag,
    base: Option<&[u8; PAGE_SIZE]>,
    records: &[RecordRef<'_>],
) {
    buf.reserve(request_len(base, records));
    match base {
        Some(page) => {
            put_header(buf, TAG_PUSH_PAGE, PAGE_TAG_LEN + PAGE_SIZE);
            put_page_tag(buf, tag);
            buf.extend_from_slice(page);
        }
        None => {
            put_header(buf, TAG_BEGIN_REDO, PAGE_TAG_LEN);
            put_page_tag(buf, tag);
        }
    }
    put_records_and_get(buf, tag, records);
}

/// [`write_request`] with a base page, but without the page's bytes: the
/// request is `buf[..gap]`, the page, then `buf[gap..]`, where `gap` is what
/// this returns. For a page sent from where it is (one part of a `writev`)
/// instead of copied into `buf` first.
pub fn write_request_around_base(
    buf: &mut Vec<u8>,
    tag: &PageTag,
    records: &[RecordRef<'_>],
) -> usize {
    buf.reserve(request_len(None, records));
    put_header(buf, TAG_PUSH_PAGE, PAGE_TAG_LEN + PAGE_SIZE);
    put_page_tag(buf, tag);
    let gap = buf.len();
    put_records_and_get(buf, tag, records);
    gap
}

/// A request's `A` messages, one per record, and its `G`.
fn put_records_and_get(buf: &mut Vec<u8>, tag: &PageTag, records: &[RecordRef<'_>]) {
    for rec in records {
        put_header(buf, TAG_APPLY_RECORD, 8 + rec.data.len());
        buf.extend_from_slice(&rec.end_lsn.to_be_bytes());
        buf.extend_from_slice(rec.data);
    }
    put_header(buf, TAG_GET_PAGE, PAGE_TAG_LEN);
    put_page_tag(buf, tag);
}

/// Append a ping; the process answers it with one (zeroed) page.
pub fn write_ping(buf: &mut Vec<u8>) {
    put_header(buf, TAG_PING, 0);
}

/// A message parsed back from a byte stream (what a wal-redo process reads).
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    BeginRedo(PageTag),
    PushPage(PageTag, &'a [u8]),
    ApplyRecord { end_lsn: u64, record: &'a [u8] },
    GetPage(PageTag),
    Ping,
}

/// Why a byte stream is not a valid message.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// More bytes are needed; not an error for a stream that is still arriving.
    Incomplete,
    BadLength {
        tag: u8,
        len: u32,
    },
    UnknownTag(u8),
}

/// Parse the first message of `buf`; returns it and the bytes it took.
pub fn parse_message(buf: &[u8]) -> Result<(Message<'_>, usize), ParseError> {
    if buf.len() < 5 {
        return Err(ParseError::Incomplete);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ParseError::BadLength { tag, len });
    }
    let payload_len = len as usize - 4;
    let bad = || ParseError::BadLength { tag, len };
    let expected = match tag {
        TAG_BEGIN_REDO | TAG_GET_PAGE => Some(PAGE_TAG_LEN),
        TAG_PUSH_PAGE => Some(PAGE_TAG_LEN + PAGE_SIZE),
        TAG_PING => Some(0),
        TAG_APPLY_RECORD => None,
        other => return Err(ParseError::UnknownTag(other)),
    };
    match expected {
        Some(n) if n != payload_len => return Err(bad()),
        None if payload_len < 8 => return Err(bad()),
        _ => {}
    }
    let Some(payload) = buf.get(5..5 + payload_len) else {
        return Err(ParseError::Incomplete);
    };
    let tag_of = |p: &[u8]| parse_page_tag(&p[..PAGE_TAG_LEN]).ok_or_else(bad);
    let msg = match tag {
        TAG_BEGIN_REDO => Message::BeginRedo(tag_of(payload)?),
        TAG_GET_PAGE => Message::GetPage(tag_of(payload)?),
        TAG_PUSH_PAGE => Message::PushPage(tag_of(payload)?, &payload[PAGE_TAG_LEN..]),
        TAG_PING => Message::Ping,
        _ => {
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&payload[..8]);
            Message::ApplyRecord {
                end_lsn: u64::from_be_bytes(lsn),
                record: &payload[8..],
            }
        }
    };
    Ok((msg, 5 + payload_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> PageTag {
        PageTag {
            rel: RelFileNode {
                spcnode: 1663,
                dbnode: 5,
                relnode: 0x01020304,
            },
            forknum: 2,
            blkno: 0xA0B0C0D0,
        }
    }

    #[test]
    fn page_tag_wire_order_is_fork_first_big_endian() {
        let mut buf = Vec::new();
        write_request(&mut buf, &tag(), None, &[]);
        assert_eq!(&buf[..5], &[b'B', 0, 0, 0, 21]);
        assert_eq!(
            &buf[5..22],
            &[2, 0, 0, 0x06, 0x7F, 0, 0, 0, 5, 1, 2, 3, 4, 0xA0, 0xB0, 0xC0, 0xD0]
        );
        assert_eq!(buf[22], b'G');
        assert_eq!(buf.len(), 44);
    }

    #[test]
    fn request_round_trip() {
        let base = [7u8; PAGE_SIZE];
        let r1 = vec![1u8; 30];
        let r2 = vec![2u8; 100];
        let recs = [
            RecordRef {
                end_lsn: 0x1_0000_0028,
                data: &r1,
            },
            RecordRef {
                end_lsn: 0x1_0000_0090,
                data: &r2,
            },
        ];
        let mut buf = Vec::new();
        write_request(&mut buf, &tag(), Some(&base), &recs);
        assert_eq!(buf.len(), request_len(Some(&base), &recs));

        let mut pos = 0;
        let mut msgs = Vec::new();
        while pos < buf.len() {
            let (m, n) = parse_message(&buf[pos..]).unwrap();
            msgs.push(m);
            pos += n;
        }
        assert_eq!(
            msgs,
            vec![
                Message::PushPage(tag(), &base[..]),
                Message::ApplyRecord {
                    end_lsn: 0x1_0000_0028,
                    record: &r1
                },
                Message::ApplyRecord {
                    end_lsn: 0x1_0000_0090,
                    record: &r2
                },
                Message::GetPage(tag()),
            ]
        );
        // The P length field is 4 + 17 + 8192 = 8213, as in protocol.md.
        assert_eq!(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]), 8213);

        // The same bytes with the page left out, at the gap.
        let mut around = Vec::new();
        let gap = write_request_around_base(&mut around, &tag(), &recs);
        assert_eq!(gap, 5 + PAGE_TAG_LEN);
        assert_eq!(around.len() + PAGE_SIZE, buf.len());
        assert_eq!([&around[..gap], &base[..], &around[gap..]].concat(), buf);
    }

    #[test]
    fn ping_and_bad_frames() {
        let mut buf = Vec::new();
        write_ping(&mut buf);
        assert_eq!(buf, [b'H', 0, 0, 0, 4]);
        assert_eq!(parse_message(&buf), Ok((Message::Ping, 5)));
        assert_eq!(parse_message(&buf[..3]), Err(ParseError::Incomplete));
        assert_eq!(
            parse_message(&[b'B', 0, 0, 0, 3]),
            Err(ParseError::BadLength { tag: b'B', len: 3 })
        );
        assert_eq!(
            parse_message(&[b'B', 0, 0, 0, 20]),
            Err(ParseError::BadLength { tag: b'B', len: 20 })
        );
        assert_eq!(
            parse_message(&[b'A', 0, 0, 0, 11]),
            Err(ParseError::BadLength { tag: b'A', len: 11 })
        );
        assert_eq!(
            parse_message(&[b'Z', 0, 0, 0, 4]),
            Err(ParseError::UnknownTag(b'Z'))
        );
        // A B frame whose payload has not fully arrived yet.
        assert_eq!(
            parse_message(&[b'B', 0, 0, 0, 21, 0, 0]),
            Err(ParseError::Incomplete)
        );
    }
}

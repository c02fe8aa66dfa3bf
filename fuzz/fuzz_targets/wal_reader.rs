//! The WAL reader on arbitrary segment contents: the input is the start of a
//! 1 MiB segment (the rest zeros). Every record it yields must be a whole
//! record within the segment, with a valid CRC, and it must never panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use walredo::wal::record;
use walredo::wal::{segment_file_name, WalReader};

const SEG: usize = 1 << 20;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("walredo-fuzz-wal-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let mut segment = vec![0u8; SEG];
    let n = data.len().min(SEG);
    segment[..n].copy_from_slice(&data[..n]);
    // Name the file after the segment its first page header claims to be,
    // so that real WAL in the corpus reads as real WAL.
    let claimed = data.get(8..16).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().unwrap()) / SEG as u64
    });
    let segno = claimed.clamp(1, 1 << 20);
    for old in std::fs::read_dir(dir()).unwrap().flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    let path = dir().join(segment_file_name(1, segno, SEG as u64));
    std::fs::write(&path, &segment).unwrap();
    if let Ok(reader) = WalReader::open(dir(), None) {
        for rec in reader.take(10_000) {
            let Ok(rec) = rec else { break };
            assert!(rec.end_lsn > rec.start_lsn);
            assert!(rec.data.len() >= 24);
            // The reader checked the CRC: the decoder must agree on it.
            if let Err(record::RecordError::BadCrc { .. }) = record::decode(&rec.data) {
                panic!("the reader yielded a record with a bad CRC");
            }
        }
    }
});

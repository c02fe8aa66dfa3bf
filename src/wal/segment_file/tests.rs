use super::*;

/// Bytes like a segment's: not all zeros, not all alike.
fn segment_like(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 13) as u8)
        .collect()
}

fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("walredo-segfile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_all(mut f: File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn names_say_the_compression() {
    let name = "000000010000000000000003";
    assert_eq!(Compression::of_name(name), (name, Compression::None));
    assert_eq!(
        Compression::of_name("000000010000000000000003.gz"),
        (name, Compression::Gzip)
    );
    assert_eq!(
        Compression::of_name("00000002.history.zst").1,
        Compression::Zstd
    );
    assert_eq!(Compression::of_name("x.lz4"), ("x", Compression::Lz4));
    assert_eq!(Compression::of_name("x.partial").1, Compression::None);
}

#[test]
fn each_compression_opens_to_the_segment_and_its_head() {
    let dir = scratch("each");
    let data = segment_like(1 << 20);
    for (c, suffix) in [
        (Compression::None, ""),
        (Compression::Gzip, ".gz"),
        (Compression::Zstd, ".zst"),
        (Compression::Lz4, ".lz4"),
    ] {
        let path = dir.join(format!("000000010000000000000001{suffix}"));
        std::fs::write(&path, compress(&data, c)).unwrap();
        let f = open(&path).unwrap();
        assert_eq!(f.metadata().unwrap().len(), data.len() as u64, "{c:?}");
        assert!(read_all(f) == data, "{c:?}");
        assert_eq!(head(&path, 40).unwrap(), &data[..40], "{c:?}");
        // Opened again: the kept copy, the same bytes.
        let mut again = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&open(&path).unwrap(), &mut again, 4096).unwrap();
        assert_eq!(again, data[4096..4104]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_rewritten_is_decompressed_again() {
    let dir = scratch("rewritten");
    let path = dir.join("000000010000000000000002.zst");
    std::fs::write(&path, compress(&[1u8; 4096], Compression::Zstd)).unwrap();
    assert_eq!(read_all(open(&path).unwrap()), vec![1u8; 4096]);
    std::fs::write(&path, compress(&[2u8; 8192], Compression::Zstd)).unwrap();
    assert_eq!(read_all(open(&path).unwrap()), vec![2u8; 8192]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_files_are_errors() {
    let dir = scratch("damaged");
    let data = segment_like(1 << 16);
    for (c, suffix) in [
        (Compression::Gzip, ".gz"),
        (Compression::Zstd, ".zst"),
        (Compression::Lz4, ".lz4"),
    ] {
        let path = dir.join(format!("000000010000000000000009{suffix}"));
        let mut bytes = compress(&data, c);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let e = open(&path).expect_err(suffix);
        assert!(e.to_string().contains("cannot decompress it"), "{e}");
        // Not gzip, zstd or lz4 at all.
        std::fs::write(&path, b"plain text, not compressed").unwrap();
        assert!(open(&path).is_err(), "{suffix}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

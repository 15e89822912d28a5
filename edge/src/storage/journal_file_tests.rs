//! The journal file's aligned I/O against a plain model of the file: any offset and length
//! reads back what was written, and the file is exactly as long as its writes reach.

use redb::StorageBackend;

use super::*;
use crate::storage::journal::tests::Rng;

fn open(dir: &tempfile::TempDir) -> JournalFile {
    let path = dir.path().join("j");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    JournalFile::new(file, &path).unwrap()
}

/// Writes of every alignment (inside a block, across blocks, past the end, larger than one
/// chunk) and reads of every alignment, each compared with a `Vec` doing the same.
#[test]
fn unaligned_writes_and_reads_match_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..400u64 {
        let big = round % 50 == 0;
        let len = if big {
            CHUNK as u64 + rng.below(3 * ALIGN as u64)
        } else {
            1 + rng.below(3 * ALIGN as u64)
        };
        let at = rng.below(model.len() as u64 + 2 * ALIGN as u64);
        let data: Vec<u8> = (0..len).map(|i| (round as u8) ^ (i as u8) | 1).collect();
        f.write(at, &data).unwrap();
        let end = (at + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[at as usize..end].copy_from_slice(&data);
        assert_eq!(
            f.len().unwrap(),
            model.len() as u64,
            "length after round {round}"
        );

        let r_at = rng.below(model.len() as u64);
        let r_len = rng.below(model.len() as u64 - r_at + 1) as usize;
        let mut out = vec![0u8; r_len];
        f.read(r_at, &mut out).unwrap();
        assert_eq!(
            out,
            model[r_at as usize..r_at as usize + r_len],
            "round {round}"
        );
    }
    let mut all = vec![0u8; model.len()];
    f.read(0, &mut all).unwrap();
    assert_eq!(all, model);
    // What a plain read of the file sees, too (nothing stayed in a buffer of ours).
    assert_eq!(std::fs::read(dir.path().join("j")).unwrap(), model);
}

#[test]
fn a_read_past_the_end_is_an_error_not_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    f.write(0, &[7u8; 100]).unwrap();
    let mut out = [0u8; 10];
    let e = f.read(95, &mut out).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    f.read(90, &mut out).unwrap();
    assert_eq!(out, [7u8; 10]);
}

#[test]
fn set_len_and_sync_act_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    f.write(0, &[1u8; 10_000]).unwrap();
    f.set_len(5000).unwrap();
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), 5000);
    f.write(4990, &[2u8; 20]).unwrap();
    f.write(9000, &[]).unwrap();
    assert_eq!(f.len().unwrap(), 5010, "an empty write changes nothing");
    let on_disk = std::fs::read(dir.path().join("j")).unwrap();
    assert_eq!(on_disk.len(), 5010);
    assert_eq!(&on_disk[4980..4990], &[1u8; 10]);
    assert_eq!(&on_disk[4990..], &[2u8; 20]);
}

/// On Linux's disk file systems the journal bypasses the page cache (the point of this file);
/// tmpfs refuses `O_DIRECT`, and then everything still works through the page cache.
#[cfg(target_os = "linux")]
#[test]
fn direct_io_is_used_where_the_file_system_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    let path = dir.path().join("j");
    let allowed = open_direct(&path).is_ok();
    f.write(10, b"journal").unwrap();
    assert_eq!(f.is_direct(), allowed);
    let mut out = [0u8; 7];
    f.read(10, &mut out).unwrap();
    assert_eq!(&out, b"journal");
}

/// A staged record: block-aligned memory, whole blocks (the path without a copy).
#[test]
fn an_aligned_buffer_of_whole_blocks_is_written_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    let mut buf = AlignedBuf::with_capacity(3 * ALIGN);
    buf.resize(2 * ALIGN);
    assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
    buf.as_mut_slice().fill(9);
    f.write(ALIGN as u64, buf.as_slice()).unwrap();
    assert_eq!(f.len().unwrap(), 3 * ALIGN as u64);
    let on_disk = std::fs::read(dir.path().join("j")).unwrap();
    assert_eq!(on_disk[..ALIGN], [0u8; ALIGN]);
    assert!(on_disk[ALIGN..].iter().all(|&b| b == 9));
}

#[test]
fn an_aligned_buffer_drained_at_the_front_keeps_the_rest_and_grows_with_zeros() {
    let mut buf = AlignedBuf::with_capacity(0);
    buf.resize(3 * ALIGN);
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i / ALIGN) as u8 + 1;
    }
    buf.drain_front(2 * ALIGN);
    assert_eq!(buf.len(), ALIGN);
    assert!(buf.as_slice().iter().all(|&b| b == 3));
    buf.resize(ALIGN + 10);
    assert_eq!(
        buf.as_slice()[ALIGN..],
        [0u8; 10],
        "no stale bytes past the end"
    );
    buf.resize(5);
    assert_eq!(buf.as_slice(), &[3u8; 5]);
}

#[test]
fn zero_pages_are_aligned_zeros_written_as_they_are() {
    let zeros = ZeroPages::new(1 << 20).unwrap();
    let z = zeros.as_slice();
    assert_eq!(z.len(), 1 << 20);
    assert!(is_aligned(0, z), "direct I/O takes them without a copy");
    assert!(z.iter().all(|&b| b == 0));
    // Over bytes that were not zeros: what a new journal's preparation writes.
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    f.write(0, &vec![7u8; 3 * ALIGN]).unwrap();
    f.write(0, &z[..2 * ALIGN]).unwrap();
    let on_disk = std::fs::read(dir.path().join("j")).unwrap();
    assert!(on_disk[..2 * ALIGN].iter().all(|&b| b == 0));
    assert!(on_disk[2 * ALIGN..].iter().all(|&b| b == 7));
}

#[test]
fn a_new_journal_is_prepared_as_zeros_written_to_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir);
    // Shorter than its capacity, not on a block boundary (a file cut short).
    f.write(0, &[5u8; 100]).unwrap();
    let capacity = 3 << 20;
    crate::storage::journal::prepare_journal(&f, capacity).unwrap();
    let on_disk = std::fs::read(dir.path().join("j")).unwrap();
    assert_eq!(on_disk.len() as u64, capacity);
    assert_eq!(on_disk[..100], [5u8; 100]);
    assert!(on_disk[100..].iter().all(|&b| b == 0));
    // Blocks allocated (written, not a sparse end).
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.path().join("j")).unwrap();
    assert!(meta.blocks() * 512 >= capacity, "{} blocks", meta.blocks());
}

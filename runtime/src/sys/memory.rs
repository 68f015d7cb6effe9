//! The resident memory of a long-lived runtime process (`run`'s supervisor): once the
//! container runs, the code and data that built it are not needed again.

use super::{check, SysResult};

/// A mapping of `/proc/self/smaps` that holds nothing but its file's contents.
#[derive(Debug, PartialEq, Eq)]
struct CleanFileMapping {
    start: usize,
    len: usize,
}

/// Drops this process's page-table entries for read-only file mappings that hold only
/// the file's own contents (no copy-on-write page), and gives free heap back to the
/// kernel. The pages stay in the page cache, shared with every other process mapping the
/// file; what the process touches again is mapped back on its next access (a minor
/// fault). A supervisor that ran the whole container setup once keeps only what its wait
/// loop uses. Returns how many bytes of mappings were released.
pub fn release_clean_file_pages() -> SysResult<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|e| {
        let errno = super::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        super::SysError::new("read", "/proc/self/smaps", errno)
    })?;
    let mut released = 0;
    for m in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of this process whose pages equal the
        // file's (no anonymous copy, not writable): dropping them loses nothing, and the
        // next access maps the same bytes again from the page cache.
        let ret =
            unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        check(
            ret as libc::c_long,
            "madvise(MADV_DONTNEED)",
            format!("{:#x}", m.start),
        )?;
        released += m.len;
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    Ok(released)
}

/// The mappings of an smaps text that are file-backed, not writable, not locked and
/// without anonymous (copy-on-write) pages.
fn clean_file_mappings(smaps: &str) -> Vec<CleanFileMapping> {
    let mut out = Vec::new();
    let mut current: Option<(CleanFileMapping, bool)> = None;
    let mut finish = |m: Option<(CleanFileMapping, bool)>| {
        if let Some((mapping, true)) = m {
            out.push(mapping);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            finish(current.take());
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let candidate =
                inode != "0" && perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-');
            current = Some((
                CleanFileMapping {
                    start,
                    len: end - start,
                },
                candidate,
            ));
        } else if let Some((_, candidate)) = current.as_mut() {
            let kb = fields.next().and_then(|v| v.parse::<u64>().ok());
            if matches!(first, "Anonymous:" | "Locked:" | "Swap:") && kb != Some(0) {
                *candidate = false;
            }
        }
    }
    finish(current.take());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234  /usr/bin/x
Rss:                 100 kB
Anonymous:             0 kB
Locked:                0 kB
55d0c0100000-55d0c0400000 r-xp 00100000 08:01 1234  /usr/bin/x
Anonymous:             0 kB
Locked:                0 kB
55d0c0400000-55d0c0410000 r--p 00400000 08:01 1234  /usr/bin/x
Anonymous:            64 kB
55d0c0410000-55d0c0420000 rw-p 00410000 08:01 1234  /usr/bin/x
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0  [stack]
Anonymous:           132 kB
7f0000000000-7f0000002000 r-xp 00000000 00:00 0  [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_unwritten_read_only_file_mappings_are_released() {
        assert_eq!(
            clean_file_mappings(SMAPS),
            vec![
                CleanFileMapping {
                    start: 0x55d0c0000000,
                    len: 0x100000
                },
                CleanFileMapping {
                    start: 0x55d0c0100000,
                    len: 0x300000
                },
            ]
        );
    }

    #[test]
    fn the_process_keeps_running_after_its_clean_pages_are_released() {
        let before = resident_kb();
        let released = release_clean_file_pages().unwrap();
        assert!(released > 0);
        // Code and read-only data come back as they are used.
        let text = format!("{:?}", std::hint::black_box(vec![1, 2, 3]));
        assert_eq!(text, "[1, 2, 3]");
        assert!(
            resident_kb() <= before + 64,
            "{before} -> {}",
            resident_kb()
        );
    }

    fn resident_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

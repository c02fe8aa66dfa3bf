//! How an attempt ended: a crash of the process on its request, or not
//! (see the module notes of [`super`]), and whether an answer can be a page.

use std::time::{Duration, Instant};

use crate::process::{Failure, Process};
use crate::PAGE_SIZE;

/// How long a process whose pipes closed may take to be gone by itself: it
/// closes them in its exit, a moment before it can be reaped.
const EXIT_GRACE: Duration = Duration::from_millis(100);

/// Whether a failure is a crash of the process on its request (charged: see
/// the module notes), not a hang or a kill from outside. A process whose
/// pipes closed is given a moment to end by itself, so that its own end is
/// seen, not the SIGKILL `failure_error` sends: ended by SIGKILL (or
/// SIGTERM) that we did not send, it was killed from outside (an operator,
/// the OOM killer).
pub(super) fn crashed(failure: &Failure, process: &mut Process) -> bool {
    match failure {
        Failure::Timeout | Failure::Stopped => false,
        Failure::Garbage => true,
        Failure::Eof | Failure::BrokenPipe | Failure::Io(_) => {
            let until = Instant::now() + EXIT_GRACE;
            while process.is_alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            !matches!(process.exit_signal(), Some(libc::SIGKILL | libc::SIGTERM))
        }
    }
}

/// What PostgreSQL checks of every page it reads (`PageIsVerified`): a new,
/// all-zero page, or a header whose offsets are in order within the page,
/// with known flag bits and the 8 KiB layout-4 size/version word.
pub(crate) fn page_is_sane(page: &[u8]) -> bool {
    let u16_at = |off: usize| u16::from_le_bytes([page[off], page[off + 1]]);
    let (flags, lower, upper, special) = (u16_at(10), u16_at(12), u16_at(14), u16_at(16));
    let size_version = u16_at(18);
    let header_ok = flags & !0x0007 == 0
        && size_version == PAGE_SIZE as u16 | 4
        && lower >= 24
        && lower <= upper
        && upper <= special
        && special as usize <= PAGE_SIZE
        && special % 8 == 0;
    // A comparison with a zero page is a memcmp, many times faster than
    // looking at the bytes one by one (a ping answers with a zero page).
    static ZERO: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    header_ok || page == &ZERO[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_pages() {
        let mut page = [0u8; PAGE_SIZE];
        assert!(page_is_sane(&page), "a new page");
        page[12..14].copy_from_slice(&24u16.to_le_bytes());
        page[14..16].copy_from_slice(&8192u16.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        assert!(page_is_sane(&page), "an empty initialized page");
        page[16..18].copy_from_slice(&8176u16.to_le_bytes());
        assert!(!page_is_sane(&page), "upper above special");
        assert!(!page_is_sane(&[0xAB; PAGE_SIZE]), "garbage");
    }
}

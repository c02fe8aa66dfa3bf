//! Pointers from C, each kind converted in one place: the NULL check, then
//! the borrow, slice, out-pointer or handle. Every entry point converts its
//! arguments through these helpers (after rustls-ffi's `ffi.rs`), so the
//! reasoning about each conversion is written once, here; an entry point's
//! `// SAFETY:` only names the part of its documented contract (which is the
//! C header's) that makes the helper's precondition true.

use std::ffi::{c_char, c_int, CStr};
use std::fmt::Display;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use super::{invalid, set_last_error, WALREDO_BUFFER_TOO_SMALL, WALREDO_OK};
use crate::error::Error;
use crate::pg::page::{Page, PAGE_SIZE};

fn null(what: impl Display) -> Error {
    invalid(format!("{what} is NULL"))
}

/// `&T` behind `p`; `InvalidArgument` ("`what` is NULL") for NULL.
///
/// # Safety
/// `p` is NULL or points to a valid `T` that nobody changes during `'a`.
pub(crate) unsafe fn arg<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: `as_ref` checks for NULL; otherwise valid by the contract.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

/// `&mut T` behind `p`; `InvalidArgument` for NULL.
///
/// # Safety
/// `p` is NULL or points to a valid `T` that nobody else uses during `'a`.
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    // SAFETY: `as_mut` checks for NULL; otherwise valid and ours alone by
    // the contract.
    unsafe { p.as_mut() }.ok_or_else(|| null(what))
}

/// The page behind `p`, `None` for NULL (a base page is optional).
///
/// # Safety
/// `p` is NULL or points to `WALREDO_PAGE_SIZE` readable bytes that nobody
/// changes during `'a`.
pub(crate) unsafe fn page_arg<'a>(p: *const u8) -> Option<&'a Page> {
    // SAFETY: `as_ref` checks for NULL; otherwise a page's bytes by the
    // contract, and `[u8; N]` has alignment 1.
    unsafe { p.cast::<Page>().as_ref() }
}

/// `n` elements from `p` (which may be NULL when `n` is 0);
/// `InvalidArgument` naming `what` and `count` for a NULL `p` with `n > 0`
/// or an `n` no array can have.
///
/// # Safety
/// When `n > 0`, `p` is NULL or points to `n` valid elements that nobody
/// changes during `'a`.
pub(crate) unsafe fn slice_arg<'a, T>(
    p: *const T,
    n: usize,
    what: impl Display,
    count: &str,
) -> Result<&'a [T], Error> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but {count} is {n}")));
    }
    if n > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(invalid(format!("{count} {n} is impossibly large")));
    }
    // SAFETY: non-NULL, `n` valid elements (the contract), at most
    // isize::MAX bytes (checked above).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that lives during `'a`.
pub(crate) unsafe fn str_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Error> {
    if s.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and NUL-terminated by the contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// An out-pointer for one value: written with `MaybeUninit::write` (C's
/// storage need not hold a valid value before); `InvalidArgument` for NULL.
///
/// # Safety
/// `p` is NULL or points to storage for a `T`, writable during `'a`.
pub(crate) unsafe fn out_arg<'a, T>(
    p: *mut T,
    what: &str,
) -> Result<&'a mut MaybeUninit<T>, Error> {
    // SAFETY: `as_mut` checks for NULL; otherwise writable storage for a
    // `T` by the contract, and MaybeUninit<T> has T's layout.
    unsafe { p.cast::<MaybeUninit<T>>().as_mut() }.ok_or_else(|| null(what))
}

/// An optional out-pointer: `None` for NULL.
///
/// # Safety
/// As [`out_arg`].
pub(crate) unsafe fn opt_out_arg<'a, T>(p: *mut T) -> Option<&'a mut MaybeUninit<T>> {
    // SAFETY: as in out_arg.
    unsafe { p.cast::<MaybeUninit<T>>().as_mut() }
}

/// An out-array of `n` elements (`p` may be NULL when `n` is 0).
///
/// # Safety
/// When `n > 0`, `p` is NULL or points to storage for `n` elements,
/// writable during `'a`.
pub(crate) unsafe fn out_slice_arg<'a, T>(
    p: *mut T,
    n: usize,
    what: &str,
    count: &str,
) -> Result<&'a mut [MaybeUninit<T>], Error> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but {count} is not 0")));
    }
    if n > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(invalid(format!("{count} {n} is impossibly large")));
    }
    // SAFETY: non-NULL, storage for `n` elements (the contract) of at most
    // isize::MAX bytes (checked above); MaybeUninit<T> has T's layout.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<T>>(), n) })
}

/// Fill a caller's array (from [`out_slice_arg`]) with `items`, each as
/// `each` makes it, and set `*count` to their number. When they do not all
/// fit, nothing but `*count` is written, the last error is `too_many(n)`,
/// and the status is `WALREDO_BUFFER_TOO_SMALL` (the caller calls again
/// with room for `*count`).
pub(crate) fn fill_array<U, T>(
    count: &mut MaybeUninit<usize>,
    entries: &mut [MaybeUninit<T>],
    items: &[U],
    too_many: impl FnOnce(usize) -> String,
    mut each: impl FnMut(&U) -> T,
) -> c_int {
    count.write(items.len());
    if items.len() > entries.len() {
        set_last_error(&too_many(items.len()));
        return WALREDO_BUFFER_TOO_SMALL;
    }
    for (entry, item) in entries.iter_mut().zip(items) {
        entry.write(each(item));
    }
    WALREDO_OK
}

/// A caller's page buffer, checked for NULL at the entry and written (once)
/// only when there is a page.
pub(crate) struct PageOut<'a> {
    page: NonNull<u8>,
    _buffer: PhantomData<&'a mut [u8; PAGE_SIZE]>,
}

impl<'a> PageOut<'a> {
    /// # Safety
    /// `p` is NULL or points to `WALREDO_PAGE_SIZE` bytes, writable during
    /// `'a`, that no page of the library's overlaps.
    pub(crate) unsafe fn new(p: *mut u8, what: &str) -> Result<Self, Error> {
        let page = NonNull::new(p).ok_or_else(|| null(what))?;
        Ok(PageOut {
            page,
            _buffer: PhantomData,
        })
    }

    pub(crate) fn write(self, page: &Page) {
        // SAFETY: room for a page (the contract of `new`), and `page` is the
        // library's, so they cannot overlap.
        unsafe { ptr::copy_nonoverlapping(page.as_ptr(), self.page.as_ptr(), PAGE_SIZE) };
    }
}

/// A handle given to C: `value` boxed, to be taken back by [`take_handle`].
pub(crate) fn into_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Where a constructor puts its new handle: NULL from the check on, so that
/// every failure leaves NULL there, and the handle once all went well.
pub(crate) struct HandleOut<'a, T>(&'a mut MaybeUninit<*mut T>);

impl<'a, T> HandleOut<'a, T> {
    /// `InvalidArgument` when `out` is NULL.
    ///
    /// # Safety
    /// `out` is NULL or points to storage for a pointer, writable during
    /// `'a`.
    pub(crate) unsafe fn new(out: *mut *mut T) -> Result<Self, Error> {
        // SAFETY: the contract above.
        let out = unsafe { out_arg(out, "out") }?;
        out.write(ptr::null_mut());
        Ok(HandleOut(out))
    }

    pub(crate) fn set(self, value: T) {
        self.0.write(into_handle(value));
    }
}

/// A handle back from C, `None` for NULL; dropping it frees it.
///
/// # Safety
/// `p` is NULL or a handle from [`into_handle`] (or [`HandleOut::set`]) not
/// taken back yet, which no other call uses and C uses no more.
pub(crate) unsafe fn take_handle<T>(p: *mut T) -> Option<Box<T>> {
    // SAFETY: made by Box::into_raw, given back once (the contract).
    (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
}

/// The body of a `_free` entry point: free the handle (NULL: nothing),
/// inside the panic boundary (its drop may run library code).
///
/// # Safety
/// As [`take_handle`].
pub(crate) unsafe fn free_handle<T>(p: *mut T) {
    super::guard(|| {
        // SAFETY: the contract above.
        drop(unsafe { take_handle(p) });
        Ok(())
    });
}

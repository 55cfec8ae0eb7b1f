//! Which routine allocated or released a sampled object, and the family it belongs to, for the
//! `alloc-dealloc mismatch` check (memory from `operator new[]` released by `free`, ...).
//!
//! A routine is one byte, stored in the object's slot. `ANY` (0, which a zeroed slot holds) is
//! a routine of no family: Rust's global allocator and the other allocators' own APIs
//! (`sdallocx`, `mi_free`, `tc_delete`, ...), which are never checked.

/// No family: never part of a mismatch.
pub const ANY: u8 = 0;
pub const MALLOC: u8 = 1;
pub const CALLOC: u8 = 2;
pub const REALLOC: u8 = 3;
pub const MEMALIGN: u8 = 4;
pub const ALIGNED_ALLOC: u8 = 5;
pub const POSIX_MEMALIGN: u8 = 6;
pub const VALLOC: u8 = 7;
pub const PVALLOC: u8 = 8;
pub const FREE: u8 = 9;
pub const NEW: u8 = 10;
pub const NEW_ALIGNED: u8 = 11;
pub const DELETE: u8 = 12;
pub const DELETE_ALIGNED: u8 = 13;
pub const NEW_ARRAY: u8 = 14;
pub const NEW_ARRAY_ALIGNED: u8 = 15;
pub const DELETE_ARRAY: u8 = 16;
pub const DELETE_ARRAY_ALIGNED: u8 = 17;

/// The families a routine belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Any,
    Malloc,
    New,
    NewArray,
}

pub fn family(r: u8) -> Family {
    match r {
        MALLOC..=FREE => Family::Malloc,
        NEW..=DELETE_ALIGNED => Family::New,
        NEW_ARRAY..=DELETE_ARRAY_ALIGNED => Family::NewArray,
        _ => Family::Any,
    }
}

/// The routine's name as a report shows it (the sanitizers' words).
pub fn name(r: u8) -> &'static str {
    match r {
        MALLOC => "malloc",
        CALLOC => "calloc",
        REALLOC => "realloc",
        MEMALIGN => "memalign",
        ALIGNED_ALLOC => "aligned_alloc",
        POSIX_MEMALIGN => "posix_memalign",
        VALLOC => "valloc",
        PVALLOC => "pvalloc",
        FREE => "free",
        NEW => "operator new",
        NEW_ALIGNED => "operator new(align_val_t)",
        DELETE => "operator delete",
        DELETE_ALIGNED => "operator delete(align_val_t)",
        NEW_ARRAY => "operator new[]",
        NEW_ARRAY_ALIGNED => "operator new[](align_val_t)",
        DELETE_ARRAY => "operator delete[]",
        DELETE_ARRAY_ALIGNED => "operator delete[](align_val_t)",
        _ => "(unknown)",
    }
}

/// True when memory from routine `alloc` must not be released by routine `dealloc`.
pub fn mismatched(alloc: u8, dealloc: u8) -> bool {
    let (a, d) = (family(alloc), family(dealloc));
    a != Family::Any && d != Family::Any && a != d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_mismatches() {
        assert!(!mismatched(MALLOC, FREE));
        assert!(!mismatched(CALLOC, REALLOC));
        assert!(!mismatched(NEW_ALIGNED, DELETE));
        assert!(!mismatched(NEW_ARRAY_ALIGNED, DELETE_ARRAY));
        assert!(mismatched(NEW, FREE));
        assert!(mismatched(MALLOC, DELETE));
        assert!(mismatched(NEW_ARRAY, DELETE));
        assert!(mismatched(NEW, DELETE_ARRAY_ALIGNED));
        assert!(!mismatched(ANY, DELETE));
        assert!(!mismatched(NEW_ARRAY, ANY));
        assert_eq!(name(NEW_ARRAY), "operator new[]");
        assert_eq!(family(200), Family::Any);
    }
}

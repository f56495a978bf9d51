//! The data path: the state of an open file (`file`), its capability
//! (`cap`), object I/O against OSDs (`io`), write-behind of stripe units
//! (`writeback`), read-ahead (`prefetch`) and `fallocate` (`alloc`).
//! `writeback` and `prefetch` both work on `file`'s state and do not know
//! each other.
pub mod alloc;
pub mod cap;
pub mod file;
pub mod io;
pub mod prefetch;
pub mod writeback;

//! The data path: object I/O against OSDs (`io`), write-behind of stripe
//! units (`writeback`) and sequential read-ahead (`prefetch`).
pub mod io;
pub mod prefetch;
pub mod writeback;

//! The one error type of aifs. On the wire an error is a numeric code (one
//! range per role) and a message; errno is chosen here alone, in a match with
//! no catch-all arm, so a new variant forces a choice.
use rkyv::{Archive, Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    // Namespace (1xx)
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("name too long")]
    NameTooLong,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("value does not fit the buffer")]
    Range,
    #[error("permission denied")]
    PermissionDenied,
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    FileTooBig,
    #[error("operation not supported: {0}")]
    NotSupported(String),
    #[error("value too large")]
    TooBig,
    #[error("resource temporarily unavailable: {0}")]
    WouldBlock(String),
    /// A session has as many files open as the MDS lets one have.
    #[error("too many open files: {0}")]
    TooManyOpen(String),
    /// A session holds as many lock segments as the MDS lets one hold.
    #[error("no locks available: {0}")]
    NoLocks(String),
    // Storage (2xx)
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("checksum mismatch in {0}")]
    Checksum(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("no storage available: {0}")]
    Unavailable(String),
    // Transport and protocol (3xx)
    #[error("transport: {0}")]
    Transport(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("stale handle or epoch")]
    Stale,
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// This MDS does not lead the metadata groups; the message is the
    /// address of the one that does, if known (empty if not).
    #[error("not the metadata leader (leader: {0:?})")]
    NotLeader(String),
}

/// An error as sent on the wire.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct WireError {
    pub code: u16,
    pub msg: String,
}

impl Error {
    /// The peer could not be reached (down, gone, cut off), as opposed to
    /// one that answered with a refusal: worth retrying, or going around.
    pub fn unreachable(&self) -> bool {
        matches!(self, Error::Transport(_) | Error::Unavailable(_) | Error::NotLeader(_))
    }

    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound => 101,
            Error::Exists => 102,
            Error::NotDir => 103,
            Error::IsDir => 104,
            Error::NotEmpty => 105,
            Error::InvalidArgument(_) => 106,
            Error::NameTooLong => 107,
            Error::NoXattr => 108,
            Error::Range => 109,
            Error::PermissionDenied => 110,
            Error::NotPermitted(_) => 111,
            Error::TooManyLinks => 112,
            Error::FileTooBig => 113,
            Error::NotSupported(_) => 114,
            Error::TooBig => 115,
            Error::WouldBlock(_) => 116,
            Error::TooManyOpen(_) => 117,
            Error::NoLocks(_) => 118,
            Error::NoSpace(_) => 201,
            Error::Checksum(_) => 202,
            Error::Io(_) => 203,
            Error::Unavailable(_) => 204,
            Error::Transport(_) => 301,
            Error::Protocol(_) => 302,
            Error::Stale => 303,
            Error::Unauthorized(_) => 304,
            Error::NotLeader(_) => 305,
        }
    }

    fn detail(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::NotPermitted(m)
            | Error::NotSupported(m)
            | Error::WouldBlock(m)
            | Error::TooManyOpen(m)
            | Error::NoLocks(m)
            | Error::NoSpace(m)
            | Error::Checksum(m)
            | Error::Io(m)
            | Error::Unavailable(m)
            | Error::Transport(m)
            | Error::Protocol(m)
            | Error::Unauthorized(m)
            | Error::NotLeader(m) => m.clone(),
            _ => String::new(),
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError { code: self.code(), msg: self.detail() }
    }

    pub fn from_wire(code: u16, msg: &str) -> Error {
        let m = msg.to_string();
        match code {
            101 => Error::NotFound,
            102 => Error::Exists,
            103 => Error::NotDir,
            104 => Error::IsDir,
            105 => Error::NotEmpty,
            106 => Error::InvalidArgument(m),
            107 => Error::NameTooLong,
            108 => Error::NoXattr,
            109 => Error::Range,
            110 => Error::PermissionDenied,
            111 => Error::NotPermitted(m),
            112 => Error::TooManyLinks,
            113 => Error::FileTooBig,
            114 => Error::NotSupported(m),
            115 => Error::TooBig,
            116 => Error::WouldBlock(m),
            117 => Error::TooManyOpen(m),
            118 => Error::NoLocks(m),
            201 => Error::NoSpace(m),
            202 => Error::Checksum(m),
            203 => Error::Io(m),
            204 => Error::Unavailable(m),
            301 => Error::Transport(m),
            302 => Error::Protocol(m),
            303 => Error::Stale,
            304 => Error::Unauthorized(m),
            305 => Error::NotLeader(m),
            other => Error::Protocol(format!("unknown error code {other}: {msg}")),
        }
    }

    /// Log an error at the level it deserves: expected namespace answers at
    /// debug, failures of the system at warn.
    pub fn log(&self, what: &str) {
        match errno(self) {
            libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY | libc::ENODATA | libc::ENOTDIR
            | libc::EISDIR | libc::ERANGE | libc::ENAMETOOLONG | libc::EAGAIN => {
                tracing::debug!(error = %self, "{what}")
            }
            _ => tracing::warn!(error = %self, "{what}"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound,
            std::io::ErrorKind::StorageFull => Error::NoSpace(e.to_string()),
            std::io::ErrorKind::FileTooLarge => Error::FileTooBig,
            _ => Error::Io(e.to_string()),
        }
    }
}

/// The errno a user sees for an error. No catch-all arm on purpose.
pub fn errno(e: &Error) -> i32 {
    match e {
        Error::NotFound => libc::ENOENT,
        Error::Exists => libc::EEXIST,
        Error::NotDir => libc::ENOTDIR,
        Error::IsDir => libc::EISDIR,
        Error::NotEmpty => libc::ENOTEMPTY,
        Error::InvalidArgument(_) => libc::EINVAL,
        Error::NameTooLong => libc::ENAMETOOLONG,
        Error::NoXattr => libc::ENODATA,
        Error::Range => libc::ERANGE,
        Error::PermissionDenied => libc::EACCES,
        Error::NotPermitted(_) => libc::EPERM,
        Error::TooManyLinks => libc::EMLINK,
        Error::FileTooBig => libc::EFBIG,
        Error::NotSupported(_) => libc::EOPNOTSUPP,
        Error::TooBig => libc::E2BIG,
        Error::WouldBlock(_) => libc::EAGAIN,
        Error::TooManyOpen(_) => libc::ENFILE,
        Error::NoLocks(_) => libc::ENOLCK,
        Error::NoSpace(_) => libc::ENOSPC,
        Error::Checksum(_) => libc::EIO,
        Error::Io(_) => libc::EIO,
        Error::Unavailable(_) => libc::EIO,
        Error::Transport(_) => libc::EIO,
        Error::Protocol(_) => libc::EIO,
        Error::Stale => libc::ESTALE,
        Error::Unauthorized(_) => libc::EACCES,
        Error::NotLeader(_) => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        let all = [
            Error::NotFound,
            Error::Exists,
            Error::NotDir,
            Error::IsDir,
            Error::NotEmpty,
            Error::InvalidArgument("x".into()),
            Error::NameTooLong,
            Error::NoXattr,
            Error::Range,
            Error::PermissionDenied,
            Error::NotPermitted("x".into()),
            Error::TooManyLinks,
            Error::FileTooBig,
            Error::NotSupported("x".into()),
            Error::TooBig,
            Error::WouldBlock("x".into()),
            Error::TooManyOpen("x".into()),
            Error::NoLocks("x".into()),
            Error::NoSpace("x".into()),
            Error::Checksum("x".into()),
            Error::Io("x".into()),
            Error::Unavailable("x".into()),
            Error::Transport("x".into()),
            Error::Protocol("x".into()),
            Error::Stale,
            Error::Unauthorized("x".into()),
            Error::NotLeader("127.0.0.1:1".into()),
        ];
        for e in all {
            let w = e.to_wire();
            assert_eq!(Error::from_wire(w.code, &w.msg), e);
        }
        assert!(matches!(Error::from_wire(999, "m"), Error::Protocol(_)));
    }
}

//! This process's view of the kernel's mount table
//! (`/proc/self/mountinfo`): where `mdsctl` finds aifs mounts, and where a
//! mount finds its own backing device.
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mounted file system.
#[derive(Debug, PartialEq)]
pub struct MountEntry {
    /// The backing device, `major:minor` (as `/sys/class/bdi` names it).
    pub dev: String,
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// This process's mounts, in mount order (a later one on the same point
/// is on top); none when the table cannot be read.
pub fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return vec![] };
    text.lines().filter_map(parse_line).collect()
}

/// `id parent major:minor root point options [optional...] - fstype
/// source superoptions`, each field with `\ooo` escapes.
fn parse_line(line: &str) -> Option<MountEntry> {
    let f: Vec<&str> = line.split(' ').collect();
    let sep = 6 + f.get(6..)?.iter().position(|x| *x == "-")?;
    let text = |s: &str| String::from_utf8_lossy(&unescape(s)).into_owned();
    Some(MountEntry {
        dev: f.get(2)?.to_string(),
        point: PathBuf::from(OsString::from_vec(unescape(f.get(4)?))),
        fstype: text(f.get(sep + 1)?),
        source: text(f.get(sep + 2)?),
    })
}

/// A field with its `\ooo` escapes (space, tab, newline, backslash)
/// decoded.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_optional_fields_and_escapes_parse() {
        let l = r"36 35 0:40 / /tmp/my\040ckpt\134x rw,nosuid shared:12 master:3 - fuse.aifs aifs rw,user_id=0";
        assert_eq!(
            parse_line(l),
            Some(MountEntry { dev: "0:40".into(), point: PathBuf::from("/tmp/my ckpt\\x"), fstype: "fuse.aifs".into(), source: "aifs".into() })
        );
        let plain = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard";
        assert_eq!(parse_line(plain).map(|m| (m.point, m.fstype)), Some((PathBuf::from("/"), "ext4".into())));
        // a backslash not followed by three octal digits stays
        assert_eq!(unescape(r"a\9b\"), b"a\\9b\\".to_vec());
        assert_eq!(parse_line("too short"), None);
    }
}

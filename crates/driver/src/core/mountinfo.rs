//! `/proc/self/mountinfo` parsing (proc(5)), for the node: is a path mounted, by what device,
//! with which options. Pure: the caller reads the file. Paths are octal-unescaped (`\040` is a
//! space), so a target with spaces is never mistaken for another.

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the mounted device.
    pub major_minor: (u32, u32),
    /// Path within the mounted filesystem (`/` unless a bind mount of a subdirectory).
    pub root: String,
    pub target: String,
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = |j: usize| {
            bytes.get(j).filter(|b| (b'0'..=b'7').contains(*b)).map(|b| u32::from(b - b'0'))
        };
        let value = match (bytes[i], octal(i + 1), octal(i + 2), octal(i + 3)) {
            (b'\\', Some(a), Some(b), Some(c)) => u8::try_from(a * 64 + b * 8 + c).ok(),
            _ => None,
        };
        if let Some(v) = value {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one line; `None` for a malformed one (never panics).
pub fn parse_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let mut h = head.split(' ');
    let id = h.next()?.parse().ok()?;
    let parent = h.next()?.parse().ok()?;
    let (major, minor) = h.next()?.split_once(':')?;
    let root = unescape(h.next()?);
    let target = unescape(h.next()?);
    let options = h.next()?.split(',').map(str::to_string).collect();
    let mut t = tail.split(' ');
    let fs_type = t.next()?.to_string();
    let source = unescape(t.next()?);
    let super_options =
        t.next().map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default();
    Some(Mount {
        id,
        parent,
        major_minor: (major.parse().ok()?, minor.parse().ok()?),
        root,
        target,
        options,
        fs_type,
        source,
        super_options,
    })
}

/// Parses the whole table, skipping malformed lines.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// Mounts at `target` (several when mounts are stacked; the last one is on top).
pub fn at<'a>(mounts: &'a [Mount], target: &str) -> Vec<&'a Mount> {
    let target = target.trim_end_matches('/');
    mounts.iter().filter(|m| m.target == target).collect()
}

/// Mounts of the device `major:minor` (to find holders before disconnecting).
pub fn of_device(mounts: &[Mount], major_minor: (u32, u32)) -> Vec<&Mount> {
    mounts.iter().filter(|m| m.major_minor == major_minor).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/host
98 22 259:1 / /var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount rw,nosuid,nodev,relatime shared:40 - ext4 /dev/nvme0n1 rw
99 22 259:1 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount rw,nosuid,nodev,relatime shared:40 - ext4 /dev/nvme0n1 rw
100 22 7:0 /dir /mnt/with\\040space ro,relatime - xfs /dev/loop0 ro,attr2
";

    #[test]
    fn parses_targets_devices_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].major_minor, (259, 1));
        assert_eq!(m[1].fs_type, "ext4");
        assert_eq!(m[1].source, "/dev/nvme0n1");
        assert!(m[1].options.contains(&"nosuid".to_string()));
        assert_eq!(m[3].target, "/mnt/with space");
        assert_eq!(m[3].root, "/dir");
        assert_eq!(at(&m, "/mnt/with space/").len(), 1);
        assert_eq!(of_device(&m, (259, 1)).len(), 2, "staging and publish both hold the device");
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("1 2 x / / rw - ext4 /dev/x rw").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC*") {
            let _ = parse_line(&line);
        }
    }
}

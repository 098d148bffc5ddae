//! The peak resident set of this process over one node (Linux): reset the kernel's
//! high-water mark at the node's start, read `VmHWM` at its end. Reads and writes only
//! `/proc/self`; a warm worker runs many nodes, so each node resets it first.

/// Resets this process's RSS high-water mark to its current RSS (`echo 5 >
/// /proc/self/clear_refs`, Linux 4.0+). Returns whether the kernel took it; where it did not
/// (another OS, a locked-down /proc), [`read_mib`] reports the process's lifetime peak.
pub fn reset() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's RSS high-water mark in MiB (`VmHWM` of `/proc/self/status`), `None` where
/// there is none to read.
pub fn read_mib() -> Option<f64> {
    parse_vm_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmHWM:    123456 kB` -> MiB.
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tvtab-orch\nVmPeak:\t 4000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2.0));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    /// After a reset the mark follows what the process touches from then on, not before.
    #[test]
    fn the_mark_resets_and_then_rises_with_use() {
        if !cfg!(target_os = "linux") || read_mib().is_none() {
            return;
        }
        {
            // 256 MiB touched, then freed: the lifetime peak holds it.
            let big = vec![1u8; 256 << 20];
            std::hint::black_box(&big);
        }
        let before = read_mib().unwrap();
        assert!(reset(), "clear_refs is writable on Linux");
        let after = read_mib().unwrap();
        assert!(after < before, "reset: {before} -> {after}");
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        assert!(read_mib().unwrap() >= after + 60.0);
    }
}

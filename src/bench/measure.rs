//! What the benchmark measures besides calls: CPU time (the process's, the
//! simulator thread's) and memory (resident set, peak resident set).

use std::time::Duration;

/// CPU time of a clock (`CLOCK_PROCESS_CPUTIME_ID` or a thread's clock).
pub(crate) fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU time of the whole process (every thread).
pub(crate) fn process_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPU-time clock of the calling thread, readable from any thread.
pub(crate) fn this_thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self() is the calling thread; `id` is writable.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    (rc == 0).then_some(id)
}

/// A `/proc/self/status` value in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resets the process's peak resident set (`VmHWM`) to the current one, so
/// a later `VmHWM` is the peak of what ran in between. False when the kernel
/// does not allow it.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `/bin/sh` started while this process is still small, waiting to
/// `exec` the engine. Linux carries the spawning process's peak resident set
/// into a child's `ru_maxrss` (a child is spawned sharing the parent's memory
/// until it execs), so an engine spawned straight from the benchmark, whose
/// simulator then holds every referral, would report the benchmark's peak.
/// Exec'd from this launcher it reports its own.
pub(crate) struct Launcher {
    child: std::process::Child,
}

impl Launcher {
    pub(crate) fn spawn() -> std::io::Result<Launcher> {
        let child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "IFS= read -r script || exit 97; exec /bin/sh \"$script\"",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Launcher { child })
    }

    /// Runs `script` (which must `exec` the program measured) in place of
    /// the launcher; returns the pid to [`wait_child`].
    pub(crate) fn exec(mut self, script: &std::path::Path) -> std::io::Result<u32> {
        use std::io::Write;
        let mut stdin = self
            .child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the launcher has no stdin"))?;
        writeln!(stdin, "{}", script.display())?;
        Ok(self.child.id())
    }
}

/// `value` as one single-quoted shell word.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// What a finished child process used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildUsage {
    pub exit_code: Option<i32>,
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel (`ru_stime`): page faults,
    /// copies into the page cache, `fsync`.
    pub sys_cpu: Duration,
    /// Page faults served without I/O (`ru_minflt`).
    pub minor_faults: u64,
    pub max_rss_kib: u64,
    /// Bytes it caused to be written to storage (`ru_oublock`, 512-byte
    /// blocks): the store and its WAL, for an engine cycle.
    pub written_bytes: u64,
}

/// Waits for a child by pid and returns its own resource usage (not that of
/// other children). Blocks.
pub(crate) fn wait_child(pid: u32) -> std::io::Result<ChildUsage> {
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value; the pointers are valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::new(
            t.tv_sec.max(0) as u64,
            (t.tv_usec.clamp(0, 999_999) as u32) * 1000,
        )
    };
    Ok(ChildUsage {
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        sys_cpu: tv(ru.ru_stime),
        minor_faults: ru.ru_minflt.max(0) as u64,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: ru.ru_maxrss.max(0) as u64,
        written_bytes: (ru.ru_oublock.max(0) as u64) * 512,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_has_a_resident_set_and_cpu_time() {
        let rss = status_kib("VmRSS").unwrap();
        assert!(rss > 0);
        assert!(status_kib("VmHWM").unwrap() >= rss);
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
        let clock = this_thread_cpu_clock().unwrap();
        assert!(cpu_time(clock) > Duration::ZERO);
    }

    #[test]
    fn a_quoted_word_survives_the_shell() {
        let tricky = "it's a \"path\" with $HOME and `ticks`";
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("printf %s {}", shell_quote(tricky))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
    }

    #[test]
    fn a_launched_program_reports_its_own_peak_memory() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::spawn().unwrap();
        // Grow this process well past what the launched program uses.
        let ballast = vec![1u8; 200 << 20];
        std::hint::black_box(&ballast);
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "exec /bin/sh -c 'exit 3'\n").unwrap();
        let pid = launcher.exec(&script).unwrap();
        let usage = wait_child(pid).unwrap();
        drop(ballast);
        assert_eq!(usage.exit_code, Some(3));
        assert!(
            usage.max_rss_kib < 100 << 10,
            "the launched shell reported {} KiB: the benchmark's own memory leaked into it",
            usage.max_rss_kib
        );
    }

    #[test]
    fn a_launched_program_reports_its_kernel_time() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::spawn().unwrap();
        // 4 GiB zeroed by the kernel: nearly all of it system time, enough
        // clock ticks that the kernel's user/system split cannot miss it.
        let script = dir.path().join("run.sh");
        std::fs::write(
            &script,
            "exec dd if=/dev/zero of=/dev/null bs=1M count=4096 status=none\n",
        )
        .unwrap();
        let pid = launcher.exec(&script).unwrap();
        let usage = wait_child(pid).unwrap();
        assert_eq!(usage.exit_code, Some(0));
        assert!(
            usage.sys_cpu > Duration::ZERO && usage.sys_cpu * 2 >= usage.cpu,
            "dd spent its time in the kernel; counted {:?} of {:?}",
            usage.sys_cpu,
            usage.cpu
        );
    }

    #[test]
    fn a_launched_program_reports_what_it_wrote_to_storage() {
        // Under the build directory: a temporary directory may be in memory
        // (tmpfs), where nothing reaches storage.
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        let dir = tempfile::tempdir_in(&target).unwrap();
        let launcher = Launcher::spawn().unwrap();
        // 4 MiB written and flushed (conv=fsync), as the store's commits are.
        let script = dir.path().join("run.sh");
        let out = dir.path().join("written");
        std::fs::write(
            &script,
            format!(
                "exec dd if=/dev/zero of={} bs=1M count=4 conv=fsync status=none\n",
                shell_quote(&out.display().to_string())
            ),
        )
        .unwrap();
        let pid = launcher.exec(&script).unwrap();
        let usage = wait_child(pid).unwrap();
        assert_eq!(usage.exit_code, Some(0));
        // Any exec'd program faults its pages in.
        assert!(usage.minor_faults > 0);
        assert!(
            usage.written_bytes >= 4 << 20,
            "dd wrote 4 MiB, the benchmark counted {} bytes",
            usage.written_bytes
        );
    }
}

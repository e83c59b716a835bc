//! Host facts the QEMU command line depends on, read from `/proc` and `/sys`: the TSC
//! rate (for microvm under TCG), whether the data directory takes O_DIRECT (disk
//! `cache=none`), and whether the hugepages a claim asks for are free and mounted.
//!
//! Reads only; it never changes the host (no hugepage reservation, no mounts).

use plinth_api::HugepageClaim;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The host's TSC rate in kHz, from `/proc/cpuinfo`'s `bogomips` (x86 Linux derives it
/// from the TSC: bogomips = 2 × TSC MHz). `None` when it cannot be read.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("bogomips"))?;
    let v: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    let khz = (v * 500.0) as u64;
    (khz > 0).then_some(khz)
}

/// Whether files in `dir` can be opened with O_DIRECT (tmpfs, for one, refuses it).
pub fn supports_o_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".o_direct_probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Where the host's hugepage facts are read (the real `/sys` and `/proc` by default).
#[derive(Clone, Debug)]
pub struct HugepageHost {
    /// The sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// The mount table (`/proc/mounts`).
    pub mounts: PathBuf,
    /// `/proc/meminfo` (for the default hugepage size of a mount without `pagesize=`).
    pub meminfo: PathBuf,
}

impl Default for HugepageHost {
    fn default() -> Self {
        HugepageHost { sysfs: "/sys".into(), mounts: "/proc/mounts".into(), meminfo: "/proc/meminfo".into() }
    }
}

/// What backs a guest's memory when its claim asks for hugepages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugepagePlan {
    /// The hugetlbfs mount of the page size.
    pub mount: PathBuf,
    /// Guest memory in MiB (pages × size).
    pub memory_mib: u64,
    /// Host NUMA nodes the pages come from.
    pub nodes: Vec<u32>,
}

fn size_name(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) { format!("{} GiB", mib / 1024) } else { format!("{mib} MiB") }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A mount option's page size (`pagesize=2M`, `pagesize=1G`, `pagesize=2048k`) in KiB.
fn pagesize_kib(opt: &str) -> Option<u64> {
    let v = opt.strip_prefix("pagesize=")?;
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    match unit.to_ascii_uppercase().as_str() {
        "" => Some(n / 1024),
        "K" => Some(n),
        "M" => Some(n * 1024),
        "G" => Some(n * 1024 * 1024),
        _ => None,
    }
}

impl HugepageHost {
    /// Checks that the hugepages `claims` asks for are free on this host (per NUMA node
    /// where sysfs tells; only with `check_free`: a running guest holds its own) and that
    /// a hugetlbfs mount of that page size exists; answers the plan, or a refusal that
    /// says what is missing. Nothing is reserved: QEMU's preallocation takes the pages.
    pub fn plan(&self, claims: &[HugepageClaim], check_free: bool) -> Result<HugepagePlan, String> {
        let sizes: BTreeSet<u64> = claims.iter().map(|c| c.size_mib).collect();
        let size_mib = match sizes.len() {
            0 => return Err("the claim asks for no hugepages".into()),
            1 => sizes.into_iter().next().unwrap_or_default(),
            _ => return Err("the claim mixes hugepage sizes; one guest's memory uses one page size".into()),
        };
        if size_mib == 0 {
            return Err("the claim asks for hugepages of size 0".into());
        }
        let kib = size_mib * 1024;
        let name = size_name(size_mib);
        let pool = self.sysfs.join(format!("kernel/mm/hugepages/hugepages-{kib}kB"));
        if !pool.exists() {
            return Err(format!(
                "refused: the claim asks for {name} hugepages and this host has none ({} does not exist)",
                pool.display()
            ));
        }
        let need: u64 = claims.iter().map(|c| c.pages).sum();
        let free = read_u64(&pool.join("free_hugepages")).unwrap_or(0);
        if check_free && free < need {
            return Err(format!(
                "refused: the claim asks for {need} hugepages of {name} and this host has {free} free ({}/free_hugepages); nothing was started",
                pool.display()
            ));
        }
        let nodes: BTreeSet<u32> = claims.iter().map(|c| c.numa_node).collect();
        for node in &nodes {
            let per_node =
                self.sysfs.join(format!("devices/system/node/node{node}/hugepages/hugepages-{kib}kB/free_hugepages"));
            let want: u64 = claims.iter().filter(|c| c.numa_node == *node).map(|c| c.pages).sum();
            if check_free
                && let Some(free) = read_u64(&per_node)
                && free < want
            {
                return Err(format!(
                    "refused: the claim asks for {want} hugepages of {name} on NUMA node {node} and it has {free} free ({}); nothing was started",
                    per_node.display()
                ));
            }
        }
        let mount = self.mount_for(kib).ok_or_else(|| {
            format!(
                "refused: no hugetlbfs file system of page size {name} is mounted on this host (see {})",
                self.mounts.display()
            )
        })?;
        Ok(HugepagePlan { mount, memory_mib: need * size_mib, nodes: nodes.into_iter().collect() })
    }

    fn default_kib(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.meminfo).ok()?;
        let line = text.lines().find(|l| l.starts_with("Hugepagesize:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn mount_for(&self, kib: u64) -> Option<PathBuf> {
        let text = std::fs::read_to_string(&self.mounts).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[2] != "hugetlbfs" {
                return None;
            }
            let size = f[3].split(',').find_map(pagesize_kib).or_else(|| self.default_kib())?;
            // /proc/mounts escapes spaces as \040.
            (size == kib).then(|| PathBuf::from(f[1].replace("\\040", " ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_rate_from_bogomips() {
        assert_eq!(tsc_khz_from_cpuinfo("model name: x\nbogomips\t: 5192.26\n"), Some(2596130));
        assert_eq!(tsc_khz_from_cpuinfo("nothing"), None);
    }

    fn fake_host(free_2m: u64, mounted: bool) -> (tempfile::TempDir, HugepageHost) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = dir.path().join("sys/kernel/mm/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&pool).expect("mkdir");
        std::fs::write(pool.join("free_hugepages"), format!("{free_2m}\n")).expect("write");
        let mounts = if mounted { "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n" } else { "" };
        std::fs::write(dir.path().join("mounts"), mounts).expect("write");
        std::fs::write(dir.path().join("meminfo"), "Hugepagesize:       2048 kB\n").expect("write");
        let host = HugepageHost {
            sysfs: dir.path().join("sys"),
            mounts: dir.path().join("mounts"),
            meminfo: dir.path().join("meminfo"),
        };
        (dir, host)
    }

    #[test]
    fn hugepages_are_planned_or_refused_with_the_reason() {
        let claim = |size_mib, pages| HugepageClaim { numa_node: 0, size_mib, pages };
        let (_d, host) = fake_host(512, true);
        assert_eq!(
            host.plan(&[claim(2, 256)], true).expect("plan"),
            HugepagePlan { mount: "/dev/hugepages".into(), memory_mib: 512, nodes: vec![0] }
        );
        let e = host.plan(&[claim(1024, 1)], true).expect_err("no 1G pool");
        assert!(e.contains("1 GiB hugepages and this host has none"), "{e}");
        let e = host.plan(&[claim(2, 1024)], true).expect_err("too few");
        assert!(host.plan(&[claim(2, 1024)], false).is_ok(), "a running guest holds its own pages");
        assert!(e.contains("1024 hugepages of 2 MiB and this host has 512 free"), "{e}");
        let (_d, host) = fake_host(512, false);
        let e = host.plan(&[claim(2, 1)], true).expect_err("no mount");
        assert!(e.contains("no hugetlbfs"), "{e}");
        assert_eq!(pagesize_kib("pagesize=1G"), Some(1024 * 1024));
    }
}

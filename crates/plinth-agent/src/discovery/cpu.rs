//! CPUs from `/proc/cpuinfo`: model, vendor, the processor list, sockets, cores and
//! threads, and the flags of interest. Topology comes from cpuinfo's `physical id` and
//! `core id`; where a processor lacks them (most non-x86 kernels) it comes from
//! `/sys/devices/system/cpu/cpuN/topology/{physical_package_id,core_id}`, and failing that
//! every processor counts as a core of its own on socket 0.

use super::sysfs;
use plinth_api::CpuInfo;
use std::collections::BTreeSet;
use std::path::Path;

/// The CPU flags reported in [`CpuInfo::flags`], when every processor has them (x86 `flags`
/// or Arm `Features`). Chosen for what placement and guest CPU models care about:
///
/// - virtualisation: `vmx` (Intel VT-x), `svm` (AMD-V), `ept`/`npt` (nested paging, listed
///   by older kernels), `hypervisor` (this host is itself a guest: nested virtualisation);
/// - vector and crypto ISA levels a guest CPU model may expose: `sse4_2`, `avx`, `avx2`,
///   `fma`, `avx512f`, `avx512bw`, `avx512vl`, `avx512_vnni`, `avx512_bf16`, `amx_tile`,
///   `aes`, `sha_ni`, `rdrand`; on Arm `asimd`, `sve`, `sve2`;
/// - memory: `pdpe1gb` (1 GiB pages, needed for 1 GiB hugepage pools), `x2apic`.
///
/// The list in the inventory is sorted by name.
pub const FLAGS_OF_INTEREST: &[&str] = &[
    "aes",
    "amx_tile",
    "asimd",
    "avx",
    "avx2",
    "avx512_bf16",
    "avx512_vnni",
    "avx512bw",
    "avx512f",
    "avx512vl",
    "ept",
    "fma",
    "hypervisor",
    "npt",
    "pdpe1gb",
    "rdrand",
    "sha_ni",
    "sse4_2",
    "sve",
    "sve2",
    "svm",
    "vmx",
    "x2apic",
];

/// What `/proc/cpuinfo` said.
#[derive(Debug)]
pub(crate) struct Cpus {
    pub(crate) info: CpuInfo,
    /// Processor numbers, sorted.
    pub(crate) processors: Vec<u32>,
}

#[derive(Default)]
struct Processor {
    number: Option<u32>,
    package: Option<u32>,
    core: Option<u32>,
    flags: Option<BTreeSet<String>>,
}

/// Parses `cpuinfo` (the file's text); `root` is where `sys/` is read for topology the
/// text lacks. `None` when it names no processor.
pub(crate) fn parse(cpuinfo: &str, root: &Path) -> Option<Cpus> {
    let mut model = None;
    let mut vendor = None;
    let mut processors: Vec<Processor> = Vec::new();
    let mut current: Option<Processor> = None;

    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => {
                processors.extend(current.take());
                current = Some(Processor { number: value.parse().ok(), ..Processor::default() });
            }
            "model name" | "Model" | "cpu model" | "Processor" if model.is_none() && !value.is_empty() => {
                model = Some(value.to_string());
            }
            "vendor_id" | "CPU implementer" if vendor.is_none() && !value.is_empty() => {
                vendor = Some(value.to_string());
            }
            "physical id" => {
                if let Some(p) = current.as_mut() {
                    p.package = value.parse().ok();
                }
            }
            "core id" => {
                if let Some(p) = current.as_mut() {
                    p.core = value.parse().ok();
                }
            }
            "flags" | "Features" => {
                if let Some(p) = current.as_mut() {
                    p.flags = Some(value.split_whitespace().map(str::to_string).collect());
                }
            }
            _ => {}
        }
    }
    processors.extend(current.take());
    processors.retain(|p| p.number.is_some());
    if processors.is_empty() {
        return None;
    }

    let cpu_dir = root.join("sys/devices/system/cpu");
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut numbers = Vec::with_capacity(processors.len());
    for p in &processors {
        let n = p.number.unwrap_or_default();
        numbers.push(n);
        let topology = cpu_dir.join(format!("cpu{n}/topology"));
        let package = p
            .package
            .or_else(|| sysfs::read_u64(&topology.join("physical_package_id")).and_then(|v| u32::try_from(v).ok()))
            .unwrap_or(0);
        let core = p
            .core
            .or_else(|| sysfs::read_u64(&topology.join("core_id")).and_then(|v| u32::try_from(v).ok()))
            .unwrap_or(n);
        sockets.insert(package);
        cores.insert((package, core));
    }
    numbers.sort_unstable();
    numbers.dedup();

    // Flags every processor has: a flag missing on one CPU cannot be offered to a guest.
    let mut common: Option<BTreeSet<String>> = None;
    for flags in processors.iter().filter_map(|p| p.flags.as_ref()) {
        common = Some(match common {
            None => flags.clone(),
            Some(c) => c.intersection(flags).cloned().collect(),
        });
    }
    let common = common.unwrap_or_default();
    let mut flags: Vec<String> =
        FLAGS_OF_INTEREST.iter().filter(|f| common.contains(**f)).map(|f| f.to_string()).collect();
    flags.sort();

    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Some(Cpus {
        info: CpuInfo {
            model: model.unwrap_or_default(),
            vendor: vendor.unwrap_or_default(),
            sockets: count(sockets.len()),
            cores: count(cores.len()),
            threads: count(numbers.len()),
            flags,
        },
        processors: numbers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_THREADS: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\n\
physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu vmx avx2 aes sse4_2 pdpe1gb\n\n\
processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: 0\n\
flags\t\t: fpu vmx avx2 aes sse4_2\n\n";

    #[test]
    fn smt_pair_on_one_socket() {
        let cpus = parse(TWO_THREADS, Path::new("/nonexistent")).expect("processors");
        assert_eq!(cpus.processors, vec![0, 1]);
        assert_eq!((cpus.info.sockets, cpus.info.cores, cpus.info.threads), (1, 1, 2));
        assert_eq!(cpus.info.model, "Test CPU");
        assert_eq!(cpus.info.vendor, "GenuineIntel");
        // pdpe1gb is missing on CPU 1, so not offered.
        assert_eq!(cpus.info.flags, vec!["aes", "avx2", "sse4_2", "vmx"]);
    }

    #[test]
    fn arm_style_without_topology_lines() {
        let text = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes sve\nCPU implementer\t: 0x41\n\n\
processor\t: 1\nFeatures\t: fp asimd aes sve\nCPU implementer\t: 0x41\n";
        let cpus = parse(text, Path::new("/nonexistent")).expect("processors");
        assert_eq!((cpus.info.sockets, cpus.info.cores, cpus.info.threads), (1, 2, 2));
        assert_eq!(cpus.info.vendor, "0x41");
        assert_eq!(cpus.info.model, "");
        assert_eq!(cpus.info.flags, vec!["aes", "asimd", "sve"]);
    }

    #[test]
    fn no_processor_is_none() {
        assert!(parse("", Path::new("/")).is_none());
        assert!(parse("MemTotal: 1 kB\n", Path::new("/")).is_none());
    }

    #[test]
    fn flags_of_interest_are_sorted_and_unique() {
        let mut sorted = FLAGS_OF_INTEREST.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, FLAGS_OF_INTEREST);
    }
}

//! Input validation: names, labels, traits, quantities, shapes and images. Each refusal
//! names the field and the rule that refused it, so the API can say exactly why.

use plinth_api::billing::CommitmentCreate;
use plinth_api::images::{ImageBoot, ImageCreate, ImageFileRole, ImageFileSource};
use plinth_api::shapes::{CpuPolicy, Hugepages, RuntimeClass, ShapeCreate};
use std::collections::BTreeMap;
use thiserror::Error;

/// A refused input: which field, which rule, and why.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {detail}")]
pub struct Invalid {
    /// The JSON field that was refused.
    pub field: String,
    /// The rule, e.g. `dns-label`, `min`, `max`.
    pub rule: &'static str,
    /// The stable problem code, e.g. `invalid_name`, `invalid_quantity`.
    pub code: &'static str,
    pub detail: String,
}

fn invalid(field: &str, rule: &'static str, code: &'static str, detail: String) -> Invalid {
    Invalid { field: field.to_string(), rule, code, detail }
}

/// A DNS label (RFC 1123): 1–63 of `a-z 0-9 -`, starting and ending with a letter or digit.
pub fn dns_label(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "dns-label",
            "invalid_name",
            format!(
                "{value:?} is not a DNS label: 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// A shape name: like a DNS label but `.` is also allowed inside (`g1.h100x8`).
pub fn shape_name(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "shape-name",
            "invalid_name",
            format!(
                "{value:?} is not a shape name: 1 to 63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Free text with a length cap and no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.chars().count() > max {
        return Err(invalid(field, "max-length", "invalid_field", format!("longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "no-control-characters", "invalid_field", "contains control characters".into()));
    }
    Ok(())
}

/// An email address, loosely: one `@`, something either side, no spaces, at most 254 bytes.
pub fn email(field: &str, value: &str) -> Result<(), Invalid> {
    let mut parts = value.split('@');
    let ok = value.len() <= 254
        && !value.contains(char::is_whitespace)
        && matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && b.contains('.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "email", "invalid_field", format!("{value:?} is not an email address")))
    }
}

/// Labels: at most 64; keys are `[prefix/]name` of `a-z0-9-_.` up to 63; values up to 255.
pub fn labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if labels.len() > 64 {
        return Err(invalid(field, "max-items", "invalid_field", "more than 64 labels".into()));
    }
    for (k, v) in labels {
        let key_ok =
            !k.is_empty() && k.len() <= 63 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !key_ok {
            return Err(invalid(
                &format!("{field}.{k}"),
                "label-key",
                "invalid_field",
                format!("label key {k:?} must be 1 to 63 characters of letters, digits, '-', '_', '.', '/'"),
            ));
        }
        text(&format!("{field}.{k}"), v, 255)?;
    }
    Ok(())
}

/// Traits: upper-case `A-Z0-9_`, at most 255 characters each, at most 128 of them.
pub fn traits(field: &str, traits: &[String]) -> Result<(), Invalid> {
    if traits.len() > 128 {
        return Err(invalid(field, "max-items", "invalid_field", "more than 128 traits".into()));
    }
    for t in traits {
        let ok = !t.is_empty()
            && t.len() <= 255
            && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(invalid(
                field,
                "trait-name",
                "invalid_field",
                format!("trait {t:?} must be upper-case letters, digits and '_' (e.g. CUSTOM_FAST_NVME)"),
            ));
        }
    }
    Ok(())
}

/// A quantity in `min..=max`; zero, negative and overflowing values are refused here or by
/// the unsigned wire types before they get here.
pub fn quantity(field: &str, value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if value < min {
        return Err(invalid(field, "min", "invalid_quantity", format!("{value} is below the minimum of {min}")));
    }
    if value > max {
        return Err(invalid(field, "max", "invalid_quantity", format!("{value} is above the maximum of {max}")));
    }
    Ok(())
}

/// Longest commitment term, in days: ten years, so a term writes at most 122 monthly
/// ledger records (AWS and Azure sell one, three and five years).
pub const MAX_COMMITMENT_DAYS: i64 = 3653;
/// Most units one commitment may reserve.
pub const MAX_COMMITMENT_COUNT: u64 = 100_000;
/// Highest hourly price of one committed unit, in micro-units (1,000,000.00 an hour).
pub const MAX_HOURLY_PRICE_MICROS: u64 = 1_000_000_000_000;

/// Checks a commitment's count, price and term (it ends after it starts, and lasts at
/// most [`MAX_COMMITMENT_DAYS`]): its term expands into one ledger record per period.
pub fn commitment(c: &CommitmentCreate) -> Result<(), Invalid> {
    quantity("count", u64::try_from(c.count).unwrap_or(0), 1, MAX_COMMITMENT_COUNT)?;
    let price = u64::try_from(c.hourly_price_micros)
        .map_err(|_| invalid("hourly_price_micros", "min", "invalid_quantity", "cannot be negative".into()))?;
    quantity("hourly_price_micros", price, 0, MAX_HOURLY_PRICE_MICROS)?;
    if c.end_at <= c.start_at {
        return Err(invalid("end_at", "after-start", "invalid_value", "end_at must be after start_at".into()));
    }
    if c.end_at - c.start_at > chrono::Duration::days(MAX_COMMITMENT_DAYS) {
        return Err(invalid(
            "end_at",
            "max-term",
            "invalid_value",
            format!("a commitment lasts at most {MAX_COMMITMENT_DAYS} days (ten years) from start_at"),
        ));
    }
    Ok(())
}

/// Largest vCPU count a shape may ask for.
pub const MAX_VCPUS: u64 = 1024;
/// Largest memory a shape may ask for (16 TiB).
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// Largest local disk a shape may ask for (1 PiB).
pub const MAX_DISK_GIB: u64 = 1024 * 1024;
/// Most GPUs in one shape.
pub const MAX_GPUS: u64 = 16;

/// Checks a shape as a whole: sizes in range and combinations that make sense.
pub fn shape(s: &ShapeCreate) -> Result<(), Invalid> {
    shape_name("name", &s.name)?;
    if let Some(d) = &s.description {
        text("description", d, 1024)?;
    }
    quantity("vcpus", s.vcpus as u64, 1, MAX_VCPUS)?;
    quantity("memory_mib", s.memory_mib, 64, MAX_MEMORY_MIB)?;
    quantity("disk_gib", s.disk_gib, 0, MAX_DISK_GIB)?;
    if let Some(gpu) = &s.gpu {
        dns_label("gpu.class", &gpu.class)?;
        quantity("gpu.count", gpu.count as u64, 1, MAX_GPUS)?;
    }
    if let Some(page) = s.hugepages.size_mib()
        && !s.memory_mib.is_multiple_of(page)
    {
        return Err(invalid(
            "memory_mib",
            "hugepage-multiple",
            "invalid_quantity",
            format!("{} MiB is not a multiple of the {page} MiB hugepage size", s.memory_mib),
        ));
    }
    if s.runtime_class == RuntimeClass::Microvm && s.gpu.is_some() {
        return Err(invalid(
            "gpu",
            "runtime-supports-passthrough",
            "invalid_field",
            "microVMs have no PCI passthrough: use runtime class vm or baremetal for GPUs".into(),
        ));
    }
    if s.runtime_class == RuntimeClass::Baremetal
        && (s.cpu_policy != CpuPolicy::Dedicated || s.hugepages != Hugepages::None)
    {
        return Err(invalid(
            "runtime_class",
            "baremetal-whole-machine",
            "invalid_field",
            "bare-metal shapes are whole machines: cpu_policy must be dedicated and hugepages none".into(),
        ));
    }
    Ok(())
}

/// Longest kernel command line an image may carry.
pub const MAX_CMDLINE: usize = 2048;

/// A lowercase hex SHA-256 digest: exactly 64 of `0-9a-f`.
pub fn sha256_hex(field: &str, value: &str) -> Result<(), Invalid> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(invalid(field, "sha256-hex", "invalid_field", "must be 64 lowercase hex digits (a SHA-256)".into()))
    }
}

/// A kernel command line: at most [`MAX_CMDLINE`] printable ASCII characters.
pub fn cmdline(field: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_CMDLINE {
        return Err(invalid(field, "max-length", "invalid_field", format!("longer than {MAX_CMDLINE} characters")));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid(
            field,
            "printable",
            "invalid_field",
            "only printable ASCII characters (no newlines or control characters)".into(),
        ));
    }
    Ok(())
}

/// An import URL: `http://` or `https://` with a host, no spaces or control characters.
pub fn import_url(field: &str, value: &str) -> Result<(), Invalid> {
    let lower = value.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or("")).unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    let ok = rest.is_some()
        && !host.is_empty()
        && !host.starts_with(':')
        && value.len() <= 2048
        && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "http-url", "invalid_field", "must be an http:// or https:// URL with a host".into()))
    }
}

fn file_source(role: ImageFileRole, s: &ImageFileSource) -> Result<(), Invalid> {
    let field = |f: &str| format!("files.{}.{f}", role.as_str());
    if s.url.is_some() && s.path.is_some() {
        return Err(invalid(
            &format!("files.{}", role.as_str()),
            "one-source",
            "invalid_field",
            "give url or path (or neither, to upload), not both".into(),
        ));
    }
    if let Some(u) = &s.url {
        import_url(&field("url"), u)?;
    }
    if let Some(p) = &s.path {
        let ok = p.starts_with('/') && p.len() <= 4096 && !p.chars().any(char::is_control);
        if !ok {
            return Err(invalid(&field("path"), "absolute-path", "invalid_field", "must be an absolute path".into()));
        }
    }
    if let Some(h) = &s.sha256 {
        sha256_hex(&field("sha256"), h)?;
    }
    Ok(())
}

/// Checks an image registration: its name, description, labels, each file's source, and
/// that the files and command line fit how it boots (`disk`: exactly a disk; `direct`: a
/// kernel, optionally an initrd and a disk, and a command line).
pub fn image(b: &ImageCreate) -> Result<(), Invalid> {
    dns_label("name", &b.name)?;
    if let Some(d) = &b.description {
        text("description", d, 1024)?;
    }
    labels("labels", &b.labels)?;
    for (role, s) in &b.files {
        file_source(*role, s)?;
    }
    let has = |r: ImageFileRole| b.files.contains_key(&r);
    match b.boot {
        ImageBoot::Disk => {
            if !has(ImageFileRole::Disk) || b.files.len() != 1 {
                return Err(invalid(
                    "files",
                    "disk-image-files",
                    "invalid_field",
                    "a disk image has exactly one file, `disk`".into(),
                ));
            }
            if b.cmdline.is_some() {
                return Err(invalid(
                    "cmdline",
                    "direct-boot-only",
                    "invalid_field",
                    "only direct-boot images have a kernel command line".into(),
                ));
            }
        }
        ImageBoot::Direct => {
            if !has(ImageFileRole::Kernel) {
                return Err(invalid(
                    "files.kernel",
                    "required",
                    "invalid_field",
                    "a direct-boot image needs a `kernel` file".into(),
                ));
            }
            match &b.cmdline {
                Some(c) if !c.trim().is_empty() => cmdline("cmdline", c)?,
                _ => {
                    return Err(invalid(
                        "cmdline",
                        "required",
                        "invalid_field",
                        "a direct-boot image needs a kernel command line".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image_create(boot: ImageBoot, roles: &[ImageFileRole], cmdline: Option<&str>) -> ImageCreate {
        ImageCreate {
            project_id: None,
            name: "debian-12".into(),
            description: None,
            boot,
            cmdline: cmdline.map(str::to_string),
            files: roles.iter().map(|r| (*r, ImageFileSource::default())).collect(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn images_need_the_files_their_boot_takes() {
        use ImageFileRole::*;
        assert!(image(&image_create(ImageBoot::Disk, &[Disk], None)).is_ok());
        assert!(image(&image_create(ImageBoot::Disk, &[], None)).is_err());
        assert!(image(&image_create(ImageBoot::Disk, &[Disk, Kernel], None)).is_err());
        assert!(image(&image_create(ImageBoot::Disk, &[Disk], Some("console=ttyS0"))).is_err());
        assert!(image(&image_create(ImageBoot::Direct, &[Kernel], Some("console=ttyS0"))).is_ok());
        assert!(image(&image_create(ImageBoot::Direct, &[Kernel, Initrd, Disk], Some("root=/dev/vda"))).is_ok());
        assert!(image(&image_create(ImageBoot::Direct, &[Kernel], None)).is_err());
        assert!(image(&image_create(ImageBoot::Direct, &[Initrd], Some("x"))).is_err());
        assert_eq!(image(&image_create(ImageBoot::Direct, &[Kernel], Some("a\nb"))).unwrap_err().rule, "printable");
        let long = "x".repeat(MAX_CMDLINE + 1);
        assert_eq!(image(&image_create(ImageBoot::Direct, &[Kernel], Some(&long))).unwrap_err().rule, "max-length");
    }

    #[test]
    fn image_sources_are_checked() {
        let mut b = image_create(ImageBoot::Disk, &[ImageFileRole::Disk], None);
        let set = |b: &mut ImageCreate, s: ImageFileSource| {
            b.files.insert(ImageFileRole::Disk, s);
        };
        for ok in ["http://mirror.example/debian.qcow2", "https://user@host:8443/x?y=1"] {
            set(&mut b, ImageFileSource { url: Some(ok.into()), ..Default::default() });
            assert!(image(&b).is_ok(), "{ok}");
        }
        for bad in ["file:///etc/passwd", "ftp://x/y", "http://", "https:///path", "http://a b/"] {
            set(&mut b, ImageFileSource { url: Some(bad.into()), ..Default::default() });
            assert_eq!(image(&b).unwrap_err().rule, "http-url", "{bad}");
        }
        set(&mut b, ImageFileSource { path: Some("relative/x.img".into()), ..Default::default() });
        assert_eq!(image(&b).unwrap_err().rule, "absolute-path");
        set(&mut b, ImageFileSource { path: Some("/x".into()), url: Some("http://h/x".into()), sha256: None });
        assert_eq!(image(&b).unwrap_err().rule, "one-source");
        set(&mut b, ImageFileSource { sha256: Some("AB".repeat(32)), ..Default::default() });
        assert_eq!(image(&b).unwrap_err().rule, "sha256-hex");
        set(&mut b, ImageFileSource { sha256: Some("ab".repeat(32)), ..Default::default() });
        assert!(image(&b).is_ok());
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert!(dns_label("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"a".repeat(64), "é"] {
            let e = dns_label("name", bad).unwrap_err();
            assert_eq!(e.code, "invalid_name");
            assert_eq!(e.rule, "dns-label");
        }
    }

    fn base_shape() -> ShapeCreate {
        ShapeCreate {
            name: "c1.small".into(),
            description: None,
            vcpus: 2,
            memory_mib: 2048,
            disk_gib: 10,
            gpu: None,
            cpu_policy: CpuPolicy::Shared,
            hugepages: Hugepages::None,
            runtime_class: RuntimeClass::Vm,
        }
    }

    #[test]
    fn shapes_refuse_nonsense() {
        assert!(shape(&base_shape()).is_ok());
        let s = ShapeCreate { vcpus: 0, ..base_shape() };
        assert_eq!(shape(&s).unwrap_err().field, "vcpus");
        let s = ShapeCreate { hugepages: Hugepages::OneGiB, memory_mib: 1536, ..base_shape() };
        assert_eq!(shape(&s).unwrap_err().rule, "hugepage-multiple");
        let s = ShapeCreate {
            runtime_class: RuntimeClass::Microvm,
            gpu: Some(plinth_api::shapes::GpuRequest { class: "nvidia-h100-80gb".into(), count: 1 }),
            ..base_shape()
        };
        assert_eq!(shape(&s).unwrap_err().field, "gpu");
    }

    proptest! {
        #[test]
        fn dns_label_accepts_exactly_the_rfc1123_alphabet(s in "\\PC{0,70}") {
            let expected = !s.is_empty() && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-') && !s.ends_with('-');
            prop_assert_eq!(dns_label("n", &s).is_ok(), expected);
        }
    }
}

//! The NoCloud seed disk: a small FAT image labelled `CIDATA` holding `meta-data`,
//! `user-data` and `network-config`, built in memory with the `fatfs` crate (no `mkdosfs`
//! or `genisoimage` at run time) and attached to the guest read-only.
//!
//! The label is in the boot sector (what `blkid`, cloud-init's `LABEL=cidata` lookup and
//! busybox `findfs` read when the root directory has no label entry). File times are
//! fixed (fatfs without its `chrono` feature), so the same seed gives the same bytes.
//!
//! Owns `cidata.img` in the guest's directory.

use plinth_api::CloudInitSeed;
use std::io::{Cursor, Write};
use std::path::Path;

/// The volume label (FAT: 11 bytes, space padded).
pub const LABEL: &[u8; 11] = b"CIDATA     ";

/// The image size for `content` bytes of files: at least 1 MiB, with room for the FAT and
/// directory, in whole MiB.
fn image_size(content: usize) -> u64 {
    let need = content as u64 + 512 * 1024;
    need.div_ceil(1 << 20).max(1) << 20
}

/// The FAT image of `seed`.
pub fn build(seed: &CloudInitSeed) -> std::io::Result<Vec<u8>> {
    let mut files: Vec<(&str, &str)> =
        vec![("meta-data", &seed.meta_data), ("user-data", &seed.user_data), ("network-config", &seed.network_config)];
    if !seed.vendor_data.is_empty() {
        files.push(("vendor-data", &seed.vendor_data));
    }
    let content: usize = files.iter().map(|(_, t)| t.len()).sum();
    let size = image_size(content);
    let len = usize::try_from(size).map_err(|_| std::io::Error::other("seed too large"))?;
    let mut disk = Cursor::new(vec![0u8; len]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new().volume_label(*LABEL).volume_id(0x504c_4e54).bytes_per_cluster(512),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, text) in files {
                let mut f = root.create_file(name)?;
                f.truncate()?;
                f.write_all(text.as_bytes())?;
                f.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// Writes the seed image to `path` (0600, atomically: a temporary file renamed).
pub fn write(path: &Path, seed: &CloudInitSeed) -> std::io::Result<()> {
    let bytes = build(seed)?;
    crate::state::write_private(path, &bytes, false).map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn seed() -> CloudInitSeed {
        CloudInitSeed {
            meta_data: "instance-id: \"ins_1\"\nlocal-hostname: \"web-1\"\n".into(),
            user_data: "#!/bin/sh\necho hi\n".into(),
            network_config: "version: 2\nethernets: {}\n".into(),
            vendor_data: String::new(),
        }
    }

    #[test]
    fn the_image_holds_the_three_files_under_the_cidata_label() {
        let img = build(&seed()).expect("build");
        assert_eq!(img.len(), 1 << 20);
        let fs = fatfs::FileSystem::new(Cursor::new(img.clone()), fatfs::FsOptions::new()).expect("mount");
        assert_eq!(fs.volume_label(), "CIDATA");
        let mut names: Vec<String> = fs.root_dir().iter().map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        assert_eq!(names, ["meta-data", "network-config", "user-data"]);
        let mut text = String::new();
        fs.root_dir().open_file("user-data").expect("open").read_to_string(&mut text).expect("read");
        assert_eq!(text, "#!/bin/sh\necho hi\n");
        // Reproducible.
        assert_eq!(build(&seed()).expect("build"), img);
    }

    #[test]
    fn blkid_sees_a_vfat_volume_labelled_cidata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cidata.img");
        write(&path, &seed()).expect("write");
        let out = std::process::Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&path)
            .output()
            .expect("blkid (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("LABEL=CIDATA"), "{text}");
        assert!(text.contains("TYPE=vfat"), "{text}");
    }

    #[test]
    fn a_large_user_data_gets_a_larger_image() {
        let mut s = seed();
        s.user_data = "x".repeat(3 << 20);
        let img = build(&s).expect("build");
        assert_eq!(img.len(), 4 << 20);
        let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).expect("mount");
        let mut text = String::new();
        fs.root_dir().open_file("user-data").expect("open").read_to_string(&mut text).expect("read");
        assert_eq!(text.len(), 3 << 20);
    }
}

//! Volume files: `qemu-img create` and `resize` of a qcow2 file (LUKS-encrypted with the
//! volume's key, the key given to `qemu-img` on its standard input as a `secret` object, so
//! it is never on a command line, in the environment or on a disk), and the byte range of a file's
//! encryption header (the qcow2 header extension `0x0537be77`), which crypto-erase
//! overwrites.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// PBKDF2 time spent on the key slot, in ms: the key is 256 random bits, not a password
/// anyone could guess, so stretching it buys nothing (the default is 2,000 ms to make, and
/// as long again at every open).
pub const LUKS_ITER_TIME_MS: u32 = 10;

/// Makes the qcow2 file `path` of `size_bytes` (sparse; LUKS inside with `key` when given).
pub fn create(path: &Path, size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    if key.is_some() {
        args.extend(["--object".into(), "secret,id=sec0,file=/dev/stdin".into(), "-o".into()]);
        args.push(format!("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time={LUKS_ITER_TIME_MS}"));
    }
    args.extend([path.display().to_string(), size_bytes.to_string()]);
    calibrated(path, || qemu_img(&args, key))
}

/// Makes the qcow2 file `path` from the image file `src` (in `format`: `raw` or `qcow2`),
/// LUKS inside with `key` when given; its size is the image's.
pub fn convert(src: &Path, format: &str, path: &Path, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> =
        vec!["convert".into(), "-q".into(), "-f".into(), format.into(), "-O".into(), "qcow2".into()];
    if key.is_some() {
        args.extend(["--object".into(), "secret,id=sec0,file=/dev/stdin".into(), "-o".into()]);
        args.push(format!("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time={LUKS_ITER_TIME_MS}"));
    }
    args.extend([src.display().to_string(), path.display().to_string()]);
    calibrated(path, || qemu_img(&args, key))
}

/// Runs `make` (a `qemu-img` that writes `path`), again when it failed only because QEMU
/// calibrates PBKDF2 by the thread's CPU time, which on a busy host can read as no time at
/// all ("Unable to get accurate CPU usage").
fn calibrated(path: &Path, make: impl Fn() -> Result<String, String>) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        match make() {
            Err(e) if e.contains("Unable to get accurate CPU usage") && attempt < CALIBRATION_ATTEMPTS => {
                tracing::debug!(attempt, "qemu-img: {e}; trying again");
                let _ = std::fs::remove_file(path);
                attempt += 1;
                // It fails at its first measurement, so an attempt is cheap; a moment's
                // pause lets a busy host's other work move on.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.map(drop),
        }
    }
}

/// How many times a `qemu-img` whose PBKDF2 calibration failed is tried (under a full
/// CI run, 5 in a row failed once).
const CALIBRATION_ATTEMPTS: u32 = 50;

/// Runs `qemu-img` with `args`, the key (when given) on its standard input for the
/// `secret` object `sec0` reading `/dev/stdin`.
fn qemu_img(args: &[String], key: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-img: {e} (is qemu-utils installed?)"))?;
    if let Some(mut stdin) = child.stdin.take()
        && let Some(k) = key
    {
        stdin.write_all(k.as_bytes()).map_err(|e| format!("qemu-img: handing over the key: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!("qemu-img {}: {}: {}", args[0], out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The virtual size of the qcow2 file `path` (read from its header; no key needed).
pub fn virtual_size(path: &Path) -> Result<u64, String> {
    let text = qemu_img(&["info".into(), "--output=json".into(), "-U".into(), path.display().to_string()], None)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("qemu-img info: {e}"))?;
    v["virtual-size"].as_u64().ok_or_else(|| "qemu-img info: no virtual-size".to_string())
}

/// Grows the qcow2 file `path` to `size_bytes` (opening its encryption with `key`).
pub fn resize(path: &Path, size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["resize".into(), "-q".into()];
    match key {
        Some(_) => {
            args.extend(["--object".into(), "secret,id=sec0,file=/dev/stdin".into(), "--image-opts".into()]);
            args.push(format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", path.display()));
        }
        None => args.extend(["-f".into(), "qcow2".into(), path.display().to_string()]),
    }
    args.push(size_bytes.to_string());
    qemu_img(&args, key).map(drop)
}

/// The qcow2 header extension naming the encryption header's place in the file.
const FDE_HEADER_EXTENSION: u32 = 0x0537_be77;

/// `(offset, length)` of the encryption header of the qcow2 file `path` (`None`: the file
/// is not an encrypted qcow2 file, or its header does not read as one).
pub fn crypto_header(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f = std::fs::File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    head.truncate(got);
    Ok(parse_crypto_header(&head))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The encryption header's `(offset, length)` from a qcow2 file's first bytes.
pub fn parse_crypto_header(head: &[u8]) -> Option<(u64, u64)> {
    if head.get(0..4)? != b"QFI\xfb" {
        return None;
    }
    // Version 2 headers end at 72 bytes; version 3 says how long theirs is.
    let mut at = match be32(head, 4)? {
        2 => 72,
        3 => be32(head, 100)? as usize,
        _ => return None,
    };
    loop {
        let (kind, len) = (be32(head, at)?, be32(head, at + 4)? as usize);
        if kind == 0 {
            return None;
        }
        if kind == FDE_HEADER_EXTENSION && len >= 16 {
            return Some((be64(head, at + 8)?, be64(head, at + 16)?));
        }
        at += 8 + len.div_ceil(8) * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_crypto_header;

    fn header(extensions: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut h = vec![0u8; 112];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        for (kind, data) in extensions {
            h.extend_from_slice(&kind.to_be_bytes());
            h.extend_from_slice(&(data.len() as u32).to_be_bytes());
            h.extend_from_slice(data);
            h.resize(h.len() + (8 - data.len() % 8) % 8, 0);
        }
        h.extend_from_slice(&[0u8; 8]);
        h
    }

    #[test]
    fn the_encryption_header_is_found_past_other_extensions() {
        let fde = [262_144u64.to_be_bytes(), 2_068_480u64.to_be_bytes()].concat();
        let h = header(&[(0x6803_f857, vec![1, 2, 3]), (0x0537_be77, fde)]);
        assert_eq!(parse_crypto_header(&h), Some((262_144, 2_068_480)));
    }

    #[test]
    fn a_plain_or_foreign_file_has_none() {
        assert_eq!(parse_crypto_header(&header(&[(0x6803_f857, vec![0; 16])])), None);
        assert_eq!(parse_crypto_header(b"not a qcow2 file at all"), None);
        assert_eq!(parse_crypto_header(&header(&[])[..50]), None, "a truncated header reads as none");
    }
}

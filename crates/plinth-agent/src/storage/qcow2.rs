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
    make(path, None, size_bytes, key)
}

/// `qemu-img create` of `path` (over the file named `lower`, not opened, when given).
fn make(path: &Path, lower: Option<&str>, size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    if let Some(l) = lower {
        args.extend(["-u".into(), "-b".into(), l.into(), "-F".into(), "qcow2".into()]);
    }
    args.extend(luks_out(key));
    args.extend([path.display().to_string(), size_bytes.to_string()]);
    calibrated(path, || qemu_img(&args, key))
}

/// The options that make a new file LUKS inside, keyed by the secret `sec0` read from
/// standard input (none without a key).
fn luks_out(key: Option<&str>) -> Vec<String> {
    let mut args = secret_arg(key);
    if key.is_some() {
        args.extend(["-o".into(), luks_opts("sec0")]);
    }
    args
}

/// `-o` options for LUKS inside a new qcow2 file, keyed by the secret object `secret`.
fn luks_opts(secret: &str) -> String {
    format!("encrypt.format=luks,encrypt.key-secret={secret},encrypt.iter-time={LUKS_ITER_TIME_MS}")
}

/// Makes the qcow2 file `path` from the image file `src` (in `format`: `raw` or `qcow2`),
/// LUKS inside with `key` when given; its size is the image's.
pub fn convert(src: &Path, format: &str, path: &Path, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> =
        vec!["convert".into(), "-q".into(), "-f".into(), format.into(), "-O".into(), "qcow2".into()];
    args.extend(luks_out(key));
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
    Ok(layer_info(path)?.0)
}

/// Grows the qcow2 file `path` to `size_bytes` (opening its encryption with `key`).
pub fn resize(path: &Path, size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["resize".into(), "-q".into()];
    args.extend(secret_arg(key));
    match key {
        Some(_) => args.extend(["--image-opts".into(), format!("{},encrypt.key-secret=sec0", file_opts(path))]),
        None => args.extend(["-f".into(), "qcow2".into(), path.display().to_string()]),
    }
    args.push(size_bytes.to_string());
    qemu_img(&args, key).map(drop)
}

/// Makes the qcow2 layer `path` of `size_bytes` over the file named `lower` (in the same
/// directory; not opened), LUKS inside with `key` when given: a snapshot's new top.
pub fn create_layer(path: &Path, lower: &str, size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    make(path, Some(lower), size_bytes, key)
}

/// The chain `files` (bottom first) as one image for `qemu-img`: a `json:` description
/// naming every layer (so the files' own backing names are not relied on), each opened
/// with the secret `secret` when given.
pub fn chain_image(files: &[&Path], secret: Option<&str>) -> String {
    let mut node = serde_json::Value::Null;
    for f in files {
        let mut n = serde_json::json!({ "driver": "qcow2", "file": { "driver": "file", "filename": f.display().to_string() },
            "backing": node });
        if let Some(s) = secret {
            n["encrypt"] = serde_json::json!({ "key-secret": s });
        }
        node = n;
    }
    format!("json:{node}")
}

fn secret_arg(key: Option<&str>) -> Vec<String> {
    match key {
        Some(_) => vec!["--object".into(), "secret,id=sec0,file=/dev/stdin".into()],
        None => Vec::new(),
    }
}

/// Writes the top file of `chain` (bottom first, at least two) into the one below it
/// (what `qemu-img commit` does; the top is left as it was, to be wiped).
pub fn commit(chain: &[&Path], key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["commit".into(), "-q".into(), "-d".into()];
    args.extend(secret_arg(key));
    args.push(chain_image(chain, key.map(|_| "sec0")));
    qemu_img(&args, key).map(drop)
}

/// Names `lower` (in the same directory) as the backing file of the layer `path`, without
/// reading or copying data (`qemu-img rebase -u`).
pub fn rebase_unsafe(path: &Path, lower: &str, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["rebase".into(), "-q".into(), "-u".into(), "-b".into(), lower.into()];
    args.extend(["-F".into(), "qcow2".into()]);
    args.extend(secret_arg(key));
    match key {
        Some(_) => args.extend(["--image-opts".into(), format!("{},encrypt.key-secret=sec0", file_opts(path))]),
        None => args.extend(["-f".into(), "qcow2".into(), path.display().to_string()]),
    }
    qemu_img(&args, key).map(drop)
}

/// `driver=qcow2,file.filename=…` for `--image-opts` (commas in the path doubled).
fn file_opts(path: &Path) -> String {
    format!("driver=qcow2,file.filename={}", path.display().to_string().replace(',', ",,"))
}

/// Grows the top of `chain` (bottom first) to `size_bytes`.
pub fn resize_chain(chain: &[&Path], size_bytes: u64, key: Option<&str>) -> Result<(), String> {
    if chain.len() == 1 {
        return resize(chain[0], size_bytes, key);
    }
    let mut args: Vec<String> = vec!["resize".into(), "-q".into()];
    args.extend(secret_arg(key));
    args.extend([chain_image(chain, key.map(|_| "sec0")), size_bytes.to_string()]);
    qemu_img(&args, key).map(drop)
}

/// Makes the qcow2 file `path` holding what the chain `src` (bottom first, opened with
/// `src_key`) reads as, LUKS inside with `key` when given. The two keys reach `qemu-img`
/// on two pipes (`/dev/fd/3`, `/dev/fd/4`), never a disk or its command line.
pub fn convert_chain(src: &[&Path], src_key: Option<&str>, path: &Path, key: Option<&str>) -> Result<(), String> {
    let mut args: Vec<String> = vec!["convert".into(), "-q".into(), "-U".into()];
    let mut keys = Vec::new();
    if let Some(k) = src_key {
        args.extend(["--object".into(), format!("secret,id=src,file=/dev/fd/{}", 3 + keys.len())]);
        keys.push(k);
    }
    if let Some(k) = key {
        args.extend(["--object".into(), format!("secret,id=dst,file=/dev/fd/{}", 3 + keys.len())]);
        keys.push(k);
    }
    args.push(chain_image(src, src_key.map(|_| "src")));
    args.extend(["-O".into(), "qcow2".into()]);
    if key.is_some() {
        args.push("-o".into());
        args.push(luks_opts("dst"));
    }
    args.push(path.display().to_string());
    calibrated(path, || qemu_img_keys(&args, &keys))
}

/// Runs `qemu-img` with `keys[i]` readable on its fd `3 + i` (each a pipe filled and
/// closed before it starts).
fn qemu_img_keys(args: &[String], keys: &[&str]) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut sources = Vec::new();
    for k in keys {
        let (r, mut w) = std::io::pipe().map_err(|e| format!("qemu-img: a pipe for a key: {e}"))?;
        w.write_all(k.as_bytes()).map_err(|e| format!("qemu-img: handing over a key: {e}"))?;
        drop(w);
        // Above every target number, so no dup2 in the child overwrites a source.
        sources.push(crate::fdpass::dup_above(&r, 16).map_err(|e| format!("qemu-img: {e}"))?);
    }
    let moves: Vec<(i32, i32)> = sources.iter().enumerate().map(|(i, f)| (f.as_raw_fd(), 3 + i as i32)).collect();
    let mut cmd = Command::new("qemu-img");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; only dup2, which is async-signal-safe,
    // over the `moves` copy it owns.
    unsafe {
        cmd.pre_exec(move || crate::fdpass::move_into_place(&moves));
    }
    let out = cmd.output().map_err(|e| format!("qemu-img: {e} (is qemu-utils installed?)"))?;
    drop(sources);
    if !out.status.success() {
        return Err(format!("qemu-img {}: {}: {}", args[0], out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The name of the backing file the qcow2 file `path` names in its header (`None`: it
/// has none).
pub fn backing_of(path: &Path) -> Result<Option<String>, String> {
    Ok(layer_info(path)?.1)
}

/// The virtual size of the qcow2 file `path` and the backing file its header names, read
/// from the header itself (a pool pass asks this of every volume: no `qemu-img` process).
pub fn layer_info(path: &Path) -> Result<(u64, Option<String>), String> {
    use std::io::{Seek, SeekFrom};
    let bad = |what: &str| format!("{}: {what}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    let mut head = [0u8; 32];
    f.read_exact(&mut head).map_err(|_| bad("shorter than a qcow2 header"))?;
    let (size, backing) = parse_header(&head).ok_or_else(|| bad("not a qcow2 file"))?;
    let name = match backing {
        None => None,
        Some((offset, len)) => {
            let mut name = vec![0u8; len];
            f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(&mut name)).map_err(|e| bad(&e.to_string()))?;
            Some(String::from_utf8(name).map_err(|_| bad("a backing file name that is not UTF-8"))?)
        }
    };
    Ok((size, name))
}

/// The virtual size and the backing file name's `(offset, length)` from a qcow2 file's
/// first 32 bytes (`None`: not a qcow2 header).
pub fn parse_header(head: &[u8]) -> Option<(u64, Option<(u64, usize)>)> {
    if head.get(0..4)? != b"QFI\xfb" || !matches!(be32(head, 4)?, 2 | 3) {
        return None;
    }
    let (offset, len) = (be64(head, 8)?, be32(head, 16)? as usize);
    // QEMU caps a backing file name at 1023 bytes.
    let backing = (offset != 0 && len > 0 && len < 1024).then_some((offset, len));
    Some((be64(head, 24)?, backing))
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
    fn the_size_and_backing_name_are_read_from_the_header() {
        let mut h = vec![0u8; 32];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(super::parse_header(&h), Some((1 << 40, None)));
        h[8..16].copy_from_slice(&512u64.to_be_bytes());
        h[16..20].copy_from_slice(&14u32.to_be_bytes());
        assert_eq!(super::parse_header(&h), Some((1 << 40, Some((512, 14)))));
        assert_eq!(super::parse_header(b"QFI\xfb\0\0\0\x09 and the rest of the header"), None, "version 9");
        assert_eq!(super::parse_header(&h[..20]), None, "too short");
    }

    #[test]
    fn a_plain_or_foreign_file_has_none() {
        assert_eq!(parse_crypto_header(&header(&[(0x6803_f857, vec![0; 16])])), None);
        assert_eq!(parse_crypto_header(b"not a qcow2 file at all"), None);
        assert_eq!(parse_crypto_header(&header(&[])[..50]), None, "a truncated header reads as none");
    }
}

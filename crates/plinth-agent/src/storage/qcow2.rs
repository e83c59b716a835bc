//! Volume files: `qemu-img create` of a qcow2 file (LUKS-encrypted with the volume's key,
//! the key given to `qemu-img` on its standard input as a `secret` object, so it is never
//! on a command line, in the environment or on a disk), and the byte range of a file's
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
    let mut cmd = Command::new("qemu-img");
    cmd.arg("create").arg("-q").arg("-f").arg("qcow2");
    if key.is_some() {
        cmd.args(["--object", "secret,id=sec0,file=/dev/stdin", "-o"])
            .arg(format!("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time={LUKS_ITER_TIME_MS}"));
    }
    cmd.arg(path).arg(size_bytes.to_string());
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("qemu-img: {e} (is qemu-utils installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An unencrypted create reads nothing; closing its stdin is all it sees.
        if let Some(k) = key {
            stdin.write_all(k.as_bytes()).map_err(|e| format!("qemu-img: handing over the key: {e}"))?;
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(|e| format!("qemu-img: {e}"))?;
    if !status.success() {
        return Err(format!("qemu-img create: {}: {}", status, err.trim()));
    }
    Ok(())
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

//! The NoCloud seed of an instance: `meta-data`, `user-data` and `network-config`
//! (version 2), rendered from what the instance is. Pure: the agent writes the files onto
//! a read-only `CIDATA` disk.
//!
//! - `meta-data`: `instance-id`, `local-hostname` (the instance's name) and the SSH keys as
//!   `public-keys`. cloud-init's `cc_ssh` installs the datasource's public keys *and* any
//!   `ssh_authorized_keys` of the user-data for the default user
//!   (`cloudinit/config/cc_ssh.py`, `DataSource.get_public_ssh_keys` reads
//!   `metadata["public-keys"]`), so the instance's keys reach the guest even when the user
//!   brings their own user-data.
//! - `user-data`: the user's own, verbatim, if given; otherwise a `#cloud-config` with
//!   `ssh_authorized_keys` (the same keys again; cloud-init takes the union).
//! - `network-config` v2: one ethernet per NIC, matched by MAC (quoted: an unquoted MAC
//!   of digits and colons is a YAML 1.1 base-60 number) and keeping the kernel's name for
//!   it (no `set-name`: no rename races with udev); the ids `ethN` are labels. The
//!   addresses are **static**: IPAM fixed them when the NIC was made and they never change
//!   for its lifetime, so the guest needs no DHCP answer to come up (DHCP is not on the
//!   boot-critical path; the host's dnsmasq still answers the same address for images
//!   that ignore `network-config`). MTU on every NIC; the default route only on the
//!   primary (slot 0).
//!
//! - `vendor-data` (when the primary NIC's VPC has a DNS domain): a `#cloud-config` that
//!   writes `/etc/resolv.conf` with the primary's gateway as the nameserver and the VPC's
//!   domain as the search list. The static network-config cannot carry it on Debian: its
//!   renderer (ifupdown) hands nameservers to `resolvconf`, which a minimal image lacks.
//!   The user's own user-data wins over vendor-data where both set something.
//!
//! Every string is written as a YAML double-quoted scalar, so no value can change the
//! document's structure.

use plinth_api::CloudInitSeed;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// One NIC of the instance, as the guest should configure it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedNic {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its private address.
    pub ipv4: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The subnet's gateway.
    pub gateway: Ipv4Addr,
    /// The subnet's MTU.
    pub mtu: u32,
    /// Its VPC's DNS domain (the gateway answers names under it), if any.
    pub dns_domain: Option<String>,
}

/// What a seed is rendered from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedInput<'a> {
    /// The instance id (cloud-init's `instance-id`: a new one re-runs per-instance modules).
    pub instance_id: &'a str,
    /// The guest's hostname (the instance's name).
    pub hostname: &'a str,
    /// The instance's SSH public keys.
    pub ssh_keys: &'a [String],
    /// The user's own user-data, if any.
    pub user_data: Option<&'a str>,
    /// The NICs in slot order; the first is the primary.
    pub nics: &'a [SeedNic],
}

/// Renders the three NoCloud files.
pub fn render(input: &SeedInput<'_>) -> CloudInitSeed {
    CloudInitSeed {
        meta_data: meta_data(input),
        user_data: user_data(input),
        network_config: network_config(input.nics),
        vendor_data: vendor_data(input.nics),
    }
}

fn vendor_data(nics: &[SeedNic]) -> String {
    let Some((nic, domain)) = nics.first().and_then(|n| n.dns_domain.as_ref().map(|d| (n, d))) else {
        return String::new();
    };
    let mut out = String::from("#cloud-config\nwrite_files:\n  - path: \"/etc/resolv.conf\"\n");
    let _ = writeln!(out, "    permissions: \"0644\"");
    let _ = writeln!(out, "    content: {}", quote(&format!("nameserver {}\nsearch {domain}\n", nic.gateway)));
    out
}

/// A YAML double-quoted scalar holding `s` exactly.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{85}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key_list(out: &mut String, indent: &str, keys: &[String]) {
    for k in keys {
        let k = k.trim();
        if !k.is_empty() {
            let _ = writeln!(out, "{indent}- {}", quote(k));
        }
    }
}

fn has_keys(keys: &[String]) -> bool {
    keys.iter().any(|k| !k.trim().is_empty())
}

fn meta_data(input: &SeedInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "instance-id: {}", quote(input.instance_id));
    let _ = writeln!(out, "local-hostname: {}", quote(input.hostname));
    if has_keys(input.ssh_keys) {
        out.push_str("public-keys:\n");
        key_list(&mut out, "  ", input.ssh_keys);
    }
    out
}

fn user_data(input: &SeedInput<'_>) -> String {
    if let Some(own) = input.user_data {
        return own.to_string();
    }
    let mut out = String::from("#cloud-config\n");
    if has_keys(input.ssh_keys) {
        out.push_str("ssh_authorized_keys:\n");
        key_list(&mut out, "  ", input.ssh_keys);
    }
    out
}

fn network_config(nics: &[SeedNic]) -> String {
    let mut out = String::from("version: 2\nethernets:\n");
    if nics.is_empty() {
        // No NIC: an empty map, not a document cloud-init would read as "configure DHCP on
        // whatever it finds".
        return "version: 2\nethernets: {}\n".into();
    }
    for (slot, nic) in nics.iter().enumerate() {
        let _ = writeln!(out, "  eth{slot}:");
        let _ = writeln!(out, "    match:");
        let _ = writeln!(out, "      macaddress: {}", quote(&nic.mac.to_ascii_lowercase()));
        let _ = writeln!(out, "    dhcp4: false");
        let _ = writeln!(out, "    addresses:");
        let _ = writeln!(out, "      - {}", quote(&format!("{}/{}", nic.ipv4, nic.prefix_len)));
        let _ = writeln!(out, "    mtu: {}", nic.mtu);
        if slot == 0 {
            // `gateway4`, not a `routes` entry: Debian's renderer (ifupdown) turns a route
            // into `post-up route add default gw …`, and a minimal image has no `route`
            // (net-tools), so the guest came up without a default route; `gateway4` becomes
            // ifupdown's own `gateway` (and networkd's and netplan's default route).
            let _ = writeln!(out, "    gateway4: {}", quote(&nic.gateway.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mac: &str, ip: [u8; 4], gw: [u8; 4]) -> SeedNic {
        SeedNic { mac: mac.into(), ipv4: ip.into(), prefix_len: 24, gateway: gw.into(), mtu: 1450, dns_domain: None }
    }

    fn keys() -> Vec<String> {
        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop".into(), "  ".into()]
    }

    #[test]
    fn meta_data_names_the_instance_and_carries_the_keys() {
        let k = keys();
        let nics = [nic("02:00:00:00:00:05", [10, 0, 0, 5], [10, 0, 0, 1])];
        let s =
            render(&SeedInput { instance_id: "ins_01", hostname: "web-1", ssh_keys: &k, user_data: None, nics: &nics });
        assert_eq!(
            s.meta_data,
            "instance-id: \"ins_01\"\nlocal-hostname: \"web-1\"\npublic-keys:\n  - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop\"\n"
        );
        assert_eq!(
            s.user_data,
            "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop\"\n"
        );
    }

    #[test]
    fn the_users_own_user_data_is_kept_verbatim_and_keys_stay_in_meta_data() {
        let k = keys();
        let own = "#!/bin/sh\necho hello > /run/hello\n";
        let s = render(&SeedInput { instance_id: "i", hostname: "h", ssh_keys: &k, user_data: Some(own), nics: &[] });
        assert_eq!(s.user_data, own);
        assert!(s.meta_data.contains("public-keys:\n  - \"ssh-ed25519"), "{}", s.meta_data);
    }

    #[test]
    fn no_keys_no_key_lists() {
        let s = render(&SeedInput { instance_id: "i", hostname: "h", ssh_keys: &[], user_data: None, nics: &[] });
        assert_eq!(s.meta_data, "instance-id: \"i\"\nlocal-hostname: \"h\"\n");
        assert_eq!(s.user_data, "#cloud-config\n");
        assert_eq!(s.network_config, "version: 2\nethernets: {}\n");
    }

    #[test]
    fn network_config_matches_by_quoted_mac_and_routes_only_the_primary() {
        let nics = [
            nic("02:AB:00:00:00:05", [10, 0, 0, 5], [10, 0, 0, 1]),
            nic("02:00:00:00:01:09", [10, 1, 0, 9], [10, 1, 0, 1]),
        ];
        let s = render(&SeedInput { instance_id: "i", hostname: "h", ssh_keys: &[], user_data: None, nics: &nics });
        assert_eq!(
            s.network_config,
            "version: 2\nethernets:\n\
             \x20 eth0:\n    match:\n      macaddress: \"02:ab:00:00:00:05\"\n    dhcp4: false\n\
             \x20   addresses:\n      - \"10.0.0.5/24\"\n    mtu: 1450\n    gateway4: \"10.0.0.1\"\n\
             \x20 eth1:\n    match:\n      macaddress: \"02:00:00:00:01:09\"\n    dhcp4: false\n\
             \x20   addresses:\n      - \"10.1.0.9/24\"\n    mtu: 1450\n"
        );
        assert_eq!(s.network_config.matches("gateway4:").count(), 1);
    }

    #[test]
    fn quoting_cannot_break_out_of_a_scalar() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quote("x\u{1}y"), "\"x\\u0001y\"");
        let k = vec!["ssh-rsa AAA\"\nevil: 1".to_string()];
        let s = render(&SeedInput { instance_id: "i", hostname: "h", ssh_keys: &k, user_data: None, nics: &[] });
        assert!(!s.meta_data.contains("\nevil"), "{}", s.meta_data);
    }
}

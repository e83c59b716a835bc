//! What the kernel's `plinth` nftables tables of one namespace hold, in a form that
//! compares with the rendered [`Ruleset`]: each table's structure (chains, rules, set
//! declarations; `nft -j -n`, handles and elements stripped) and each set's elements,
//! canonical ([`Canon`]: the kernel lists `10.0.0.0-10.0.0.255` as a prefix, the renderer
//! as a range; both become the same span).
//!
//! A verification compares the structure with the one read after the tables were last
//! loaded whole (set element updates never change it), and the elements with the ruleset
//! the agent loaded, so a verification after any number of change applies is a read and a
//! compare, not a replacement of both tables. [`Writes`] says which sets were written
//! since a read began (a read taken beside change applies, a survey, trusts no set
//! written meanwhile: those are left to the next one).

use super::cmd;
use super::filter::Ruleset;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The families of the three tables.
pub const FAMILIES: [&str; 3] = ["bridge", "inet", "ip"];

/// One field of a set element: a name (an interface, a MAC address), an inclusive span of
/// numbers (an address, a port, a mark, an ICMP type; one value is a span of one), or
/// the `:` between a map element's key and value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Atom {
    /// An interface name or a MAC address, as written.
    Name(String),
    /// The numbers from the first to the second, inclusive.
    Span(u64, u64),
    /// A map element's key ends here.
    To,
}

/// One set element, field by field.
pub type Canon = Vec<Atom>;

/// The tables as read: per family present, its structure; per set (`"<family> <set>"`,
/// the [`Ruleset::sets`] key), its elements.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// Per family (`inet`): the table's objects, elements and handles stripped.
    pub structure: BTreeMap<String, String>,
    /// Per set or map: its elements.
    pub sets: BTreeMap<String, BTreeSet<Canon>>,
}

/// The families whose tables `structure` (rendered text) declares.
pub fn families(structure: &str) -> impl Iterator<Item = &'static str> + '_ {
    FAMILIES.into_iter().filter(move |f| structure.contains(&format!("table {f} plinth {{")))
}

/// Reads the tables of `families` in namespace `ns` (a table missing is left out of the
/// listing; any other failure is an error); `elements`: the sets' elements too, else the
/// structure only (`nft -t`: the same structure, read in a fraction of the time).
pub fn read<'a>(ns: &str, families: impl Iterator<Item = &'a str>, elements: bool) -> Result<Listing, String> {
    let mut out = Listing::default();
    let args: &[&str] = if elements { &["-j", "-n"] } else { &["-j", "-n", "-t"] };
    for family in families {
        let args: Vec<&str> = args.iter().copied().chain(["list", "table", family, "plinth"]).collect();
        let text = match cmd::in_ns(ns, "nft", &args, None) {
            Ok(t) => t,
            Err(e) if e.contains("No such file or directory") => continue,
            Err(e) => return Err(e),
        };
        let mut v = cmd::json(&text)?;
        let mut structure = Vec::new();
        if let Some(items) = v.get_mut("nftables").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                if item.get("metainfo").is_some() {
                    continue;
                }
                let kind = if item.get("set").is_some() { "set" } else { "map" };
                if let Some(set) = item.get_mut(kind).and_then(Value::as_object_mut) {
                    let name = set.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let elems = set.remove("elem");
                    let mut canon = BTreeSet::new();
                    for e in elems.as_ref().and_then(Value::as_array).into_iter().flatten() {
                        canon.insert(of_json(e).ok_or_else(|| format!("nft listed an element of {name} as {e}"))?);
                    }
                    out.sets.insert(format!("{family} {name}"), canon);
                }
                strip(item);
                structure.push(item.to_string());
            }
        }
        out.structure.insert(family.to_owned(), structure.join("\n"));
    }
    Ok(out)
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

/// How the kernel's listing differs from what `structure` and `rs` say it holds, sets in
/// `skip` aside: `None` when it agrees, else the first difference found (for the log).
pub fn differs(
    listing: &Listing,
    structure: &BTreeMap<String, String>,
    rs: &Ruleset,
    skip: impl Fn(&str) -> bool,
) -> Option<String> {
    for (family, want) in structure {
        match listing.structure.get(family) {
            None => return Some(format!("table {family} plinth is missing")),
            Some(have) if have != want => return Some(format!("table {family} plinth's chains or sets changed")),
            Some(_) => {}
        }
    }
    let none = BTreeSet::new();
    let keys: BTreeSet<&String> = rs.sets.keys().chain(listing.sets.keys()).collect();
    for key in keys.into_iter().filter(|k| !skip(k)) {
        let have = listing.sets.get(key).unwrap_or(&none);
        let want = rs.sets.get(key).map(|s| s.iter().map(|e| of_text(e)).collect::<Option<BTreeSet<Canon>>>());
        match want {
            Some(None) => return Some(format!("an element of set {key} did not parse")),
            Some(Some(w)) if &w != have => return Some(format!("set {key}'s elements changed")),
            None if !have.is_empty() => return Some(format!("set {key} holds elements none was loaded into")),
            _ => {}
        }
    }
    None
}

/// A rendered element (`"tap1" . 0a:b7:… . 10.0.0.5`, `10.0.0.0-10.0.0.255 . 80-443`,
/// `"tap1" : 5`) in canonical form.
pub fn of_text(e: &str) -> Option<Canon> {
    let mut out = Vec::new();
    for (i, side) in e.split(" : ").enumerate() {
        if i > 0 {
            out.push(Atom::To);
        }
        for part in side.split(" . ") {
            let part = part.trim();
            out.push(if let Some(name) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Atom::Name(name.to_owned())
            } else if let Some((lo, hi)) = part.split_once('-') {
                Atom::Span(number(lo)?, number(hi)?)
            } else {
                match number(part) {
                    Some(v) => Atom::Span(v, v),
                    None => Atom::Name(part.to_owned()),
                }
            });
        }
    }
    Some(out)
}

fn number(s: &str) -> Option<u64> {
    s.parse::<Ipv4Addr>().map(|a| u64::from(u32::from(a))).ok().or_else(|| s.parse().ok())
}

/// An element of `nft -j -n`'s listing in canonical form (`None`: a form the renderer
/// never loads).
pub fn of_json(v: &Value) -> Option<Canon> {
    if let Some(m) = v.get("elem") {
        return of_json(m.get("val")?);
    }
    if let Some([key, value]) = v.as_array().map(Vec::as_slice) {
        let mut out = fields(key)?;
        out.push(Atom::To);
        out.extend(fields(value)?);
        return Some(out);
    }
    fields(v)
}

fn fields(v: &Value) -> Option<Vec<Atom>> {
    match v.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().map(atom).collect(),
        None => Some(vec![atom(v)?]),
    }
}

fn scalar(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => number(s),
        _ => None,
    }
}

fn atom(v: &Value) -> Option<Atom> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| Atom::Span(n, n)),
        Value::String(s) => Some(match number(s) {
            Some(n) => Atom::Span(n, n),
            None => Atom::Name(s.clone()),
        }),
        Value::Object(m) => {
            if let Some([lo, hi]) = m.get("range").and_then(Value::as_array).map(Vec::as_slice) {
                return Some(Atom::Span(scalar(lo)?, scalar(hi)?));
            }
            let p = m.get("prefix")?;
            let addr = u32::from(p.get("addr")?.as_str()?.parse::<Ipv4Addr>().ok()?);
            let len = p.get("len")?.as_u64().filter(|l| *l <= 32)?;
            let host = if len == 0 { u32::MAX } else { (1u32 << (32 - len)).wrapping_sub(1) };
            Some(Atom::Span(u64::from(addr & !host), u64::from(addr | host)))
        }
        _ => None,
    }
}

/// One namespace's filter writes, on a clock that ticks as each write starts and as it
/// ends (odd: a write in flight): a read that began at tick `since` cannot trust a set
/// written at or after it ([`Writes::raced`]).
#[derive(Clone, Debug, Default)]
pub struct Writes {
    clock: u64,
    whole: u64,
    sets: BTreeMap<String, u64>,
}

impl Writes {
    /// The tick a read starting now records.
    pub fn now(&self) -> u64 {
        self.clock
    }

    /// A write of these sets starts (`None`: both tables whole).
    pub fn begin<'a>(&mut self, sets: Option<impl Iterator<Item = &'a String>>) {
        self.clock += 1;
        match sets {
            Some(sets) => {
                for s in sets {
                    self.sets.insert(s.clone(), self.clock);
                }
            }
            None => self.whole = self.clock,
        }
    }

    /// The write in flight ended (applied or refused).
    pub fn end(&mut self) {
        self.clock += 1;
    }

    /// Whether set `key` was written at or after tick `since`.
    pub fn raced(&self, since: u64, key: &str) -> bool {
        self.whole >= since.max(1) || self.sets.get(key).is_some_and(|w| *w >= since.max(1))
    }

    /// Whether both tables were written whole at or after tick `since`.
    pub fn raced_whole(&self, since: u64) -> bool {
        self.whole >= since.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Atom, Writes, of_json, of_text};
    use serde_json::json;

    #[test]
    fn the_kernels_forms_and_the_renderers_agree() {
        let pairs = [
            ("\"tap1\" . 0a:b7:00:00:00:01 . 10.0.0.5", json!({"concat": ["tap1", "0a:b7:00:00:00:01", "10.0.0.5"]})),
            ("\"tap1\" : 5", json!(["tap1", 5])),
            (
                "10.0.0.0-10.0.0.255 . 80-443",
                json!({"concat": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, {"range": [80, 443]}]}),
            ),
            ("10.0.3.1-10.0.3.6 . 1000", json!({"concat": [{"range": ["10.0.3.1", "10.0.3.6"]}, 1000]})),
            ("0.0.0.0-255.255.255.255", json!({"prefix": {"addr": "0.0.0.0", "len": 0}})),
            ("0-255 . 0-255", json!({"concat": [{"range": [0, 255]}, {"range": [0, 255]}]})),
            ("198.51.100.5 : 10.0.0.5", json!(["198.51.100.5", "10.0.0.5"])),
            ("10.9.9.9", json!({"elem": {"val": "10.9.9.9", "counter": {"packets": 0, "bytes": 0}}})),
        ];
        for (text, listed) in pairs {
            assert_eq!(of_text(text), of_json(&listed), "{text} vs {listed}");
        }
        assert_eq!(of_text("10.0.0.0-10.0.0.255"), Some(vec![Atom::Span(0x0a00_0000, 0x0a00_00ff)]));
        assert_ne!(of_text("10.0.0.0-10.0.0.254"), of_json(&json!({"prefix": {"addr": "10.0.0.0", "len": 24}})));
        assert_eq!(of_json(&json!({"set": "@x"})), None);
    }

    #[test]
    fn a_read_trusts_no_set_written_since_it_began() {
        let mut w = Writes::default();
        assert!(!w.raced(w.now(), "inet g0_in_tcp"), "nothing was ever written");
        w.begin(None::<std::iter::Empty<&String>>);
        w.end();
        let before = w.now();
        let set = "inet g0_in_tcp".to_owned();
        w.begin(Some([&set].into_iter()));
        let during = w.now();
        w.end();
        let after = w.now();
        assert!(w.raced(before, &set) && w.raced(during, &set), "written during or after the read began");
        assert!(!w.raced(after, &set), "written before the read began");
        assert!(!w.raced(before, "inet g0_in_udp"), "another set");
        assert!(!w.raced_whole(before));
    }
}

//! Names to ids: everywhere a caller takes an object it may be given its id or its name.
//! A name is looked up in the caller's scope: the list the server answers this caller,
//! narrowed to that name by the list's `name` filter (one request; budgets, which have no
//! such filter, are compared here over every page). It must name exactly one object.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::resources::Named;

/// Whether `s` is a Plinth id of any kind: `prefix_` and a ULID (`tnt_01j…`).
pub fn is_any_id(s: &str) -> bool {
    s.split_once('_').is_some_and(|(prefix, _)| plinth_api::is_id_of(prefix, s))
}

/// The id of the `R` that `given` names: `given` itself when it is an id of that kind,
/// otherwise the one object of that name the caller can see.
pub async fn resolve<R: Named>(c: &Client, given: &str) -> Result<String> {
    resolve_in::<R>(c, given, R::by_name(given)).await
}

/// Like [`resolve`], looking only among the objects that pass `filter` (a project's
/// instances, a tenant's projects); the name is added to `filter`.
pub async fn resolve_in<R: Named>(c: &Client, given: &str, filter: R::Filter) -> Result<String> {
    if given.strip_prefix(R::ID_PREFIX).is_some_and(|rest| rest.starts_with('_')) {
        // An id of this kind (or a malformed one, which the server refuses by name).
        return Ok(given.to_string());
    }
    if is_any_id(given) {
        return Err(Error::WrongKind { kind: R::KIND, given: given.to_string() });
    }
    // Narrowed on the server, this is one page (unless over 1000 objects share the name).
    let all = c.list_all::<R>(&R::with_name(filter, given)).await?;
    let named: Vec<&R::Item> = all.iter().filter(|i| R::name(i) == given).collect();
    let live: Vec<&R::Item> = named.iter().copied().filter(|i| R::live(i)).collect();
    let pick = if live.is_empty() { named } else { live };
    match pick.as_slice() {
        [one] => Ok(R::id(one).to_string()),
        [] => Err(Error::NotFound { kind: R::KIND, name: given.to_string() }),
        many => Err(Error::Ambiguous { kind: R::KIND, name: given.to_string(), matches: many.len() }),
    }
}

/// The first object named `name` the caller can see (a live one first), if any.
pub async fn find<R: Named>(c: &Client, name: &str) -> Result<Option<R::Item>> {
    let mut named: Vec<R::Item> =
        c.list_all::<R>(&R::by_name(name)).await?.into_iter().filter(|i| R::name(i) == name).collect();
    let live = named.iter().position(|i| R::live(i)).unwrap_or(0);
    Ok((!named.is_empty()).then(|| named.swap_remove(live)))
}

/// [`resolve`] of an optional flag.
pub async fn resolve_opt<R: Named>(c: &Client, given: Option<&str>) -> Result<Option<String>> {
    match given {
        Some(g) => Ok(Some(resolve::<R>(c, g).await?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_any_kind_are_told_from_names() {
        assert!(is_any_id("ins_01jz8x3m5q2v7w9k4r6t8y0b1c"));
        assert!(is_any_id("tnt_01jz8x3m5q2v7w9k4r6t8y0b1c"));
        assert!(!is_any_id("demo-vm"));
        assert!(!is_any_id("c1.small"));
        assert!(!is_any_id("ins_short"));
    }
}

//! Cursor pagination: every list takes `?limit=&cursor=` and answers with `next_cursor`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Default page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// Query parameters every list accepts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Largest number of items to return (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items on this page, in id (creation) order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

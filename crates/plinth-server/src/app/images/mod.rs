//! Images: registering, uploading, importing, changing and deleting them, and the files
//! behind them (content-addressed blobs, the checks a file passes before it is kept).

pub mod blobs;
pub mod checks;
pub mod files;

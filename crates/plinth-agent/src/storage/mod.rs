//! The host's volume pool: a directory of qcow2 files, one per volume (`<volume id>.qcow2`,
//! LUKS inside when the volume is encrypted), made and wiped as the server's spec says.
//!
//! - [`pool`]: the pool itself (its filesystem checked: overwriting in place must reach
//!   the blocks the data was on, which copy-on-write filesystems do not), converging it to
//!   the spec and reporting each volume;
//! - [`qcow2`]: making a volume file with `qemu-img` (the key handed over a pipe, never
//!   on a command line or a disk) and finding its encryption header;
//! - [`wipe`]: overwriting in place and removing, with the bytes it overwrote.
//!
//! Keys are fetched from the server only to make a file and dropped at once; nothing here
//! writes or logs one.

pub mod pool;
pub mod qcow2;
pub mod wipe;

pub use pool::VolumePool;

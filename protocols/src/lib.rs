//! placeholder
pub mod fd;

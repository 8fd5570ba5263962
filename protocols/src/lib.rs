//! placeholder
pub mod election;
pub mod mutex;
pub mod testkit;

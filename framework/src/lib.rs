//! Troupe's actor runtime.
pub mod ids;
pub mod membership;
pub mod sansio;
pub mod transport;

pub use ids::{ActorPath, NodeId};

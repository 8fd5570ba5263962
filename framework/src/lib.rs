//! Troupe's actor runtime.
pub mod clock;
pub mod ids;
pub mod membership;
pub mod sansio;
pub mod transport;

pub use clock::{ClockOrdering, LamportClock, LamportStamp, VectorClock};
pub use ids::{ActorPath, NodeId};

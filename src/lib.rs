//! Troupe facade.
pub use troupe_framework as framework;
pub use troupe_protocols as protocols;
pub use troupe_transports as transports;

//! Troupe protocols as sans-IO cores: mutual exclusion ([`mutex`]), leader
//! election ([`election`]), and a deterministic simulator to test them
//! ([`testkit`]).
pub mod election;
pub mod mutex;
pub mod testkit;

//! Delivery: claim due deliveries, transform each once through its webhook's plugin, sign
//! the exact bytes, send, and record the attempt and the next state.

pub mod client;
pub mod pace;
pub mod report;
pub mod request;
pub mod retry;
pub mod sign;
pub mod worker;

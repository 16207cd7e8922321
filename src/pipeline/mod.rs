//! The real-time pipeline: ingest → register → range → adapt → link, one thread per stage,
//! joined by lock-free rings; frames past their deadline end in a hold.

pub mod hop;
pub mod telemetry;
pub mod work;

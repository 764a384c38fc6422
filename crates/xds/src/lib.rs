//! placeholder
pub mod resource;
pub mod snapshot;
pub mod translate;

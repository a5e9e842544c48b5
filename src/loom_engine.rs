//! A second copy of the engine's concurrent core on loom's model-checked
//! primitives, compiled only with `--features loom` for the models in
//! `loom-tests/`.
//!
//! The modules below are the very files of `crate::engine::{flight, ring,
//! registry}`; only their `super::sync` alias differs (here it is
//! `crate::sync::loom_impl`), so the models check the code that ships.
#![allow(dead_code)]

pub(crate) use crate::sync::loom_impl as sync;

#[path = "engine/flight.rs"]
pub(crate) mod flight;
#[path = "engine/registry.rs"]
pub(crate) mod registry;
#[path = "engine/ring.rs"]
pub(crate) mod ring;

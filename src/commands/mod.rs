//! The operator's commands, run from a terminal instead of serving MCP.

pub(crate) mod doctor;
pub(crate) mod install;
pub(crate) mod jobs;
pub(crate) mod settings;

//! The commands, one module per group of `berth …`, each with its clap arguments next to its
//! handler (`run`); [`crate::execute`] dispatches to them. They use the helper modules
//! (`client`, `ctx`, `format`, `stream`, `detach`), which never use them.

pub(crate) mod access;
pub(crate) mod attach;
pub(crate) mod audit;
pub(crate) mod budget;
pub(crate) mod doctor;
pub(crate) mod egress;
pub(crate) mod exec;
pub(crate) mod image;
pub(crate) mod login;
pub(crate) mod mcp;
pub(crate) mod notify;
pub(crate) mod secret;
pub(crate) mod session;
pub(crate) mod task;
pub(crate) mod template;
pub(crate) mod tenant;
pub(crate) mod token;
pub(crate) mod usage;
pub(crate) mod user;
pub(crate) mod version;
pub(crate) mod whoami;
pub(crate) mod workspace;

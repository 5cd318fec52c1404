mod auth;
mod cli;
mod egress;
mod oom;
mod secrets;
mod sessions;
mod tasks;
mod workspaces;

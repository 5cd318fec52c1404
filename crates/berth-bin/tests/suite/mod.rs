mod auth;
mod cli;
mod egress;
mod oom;
mod sessions;
mod tasks;
mod workspaces;

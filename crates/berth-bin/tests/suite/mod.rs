mod auth;
mod cli;
mod oom;
mod sessions;
mod tasks;
mod workspaces;

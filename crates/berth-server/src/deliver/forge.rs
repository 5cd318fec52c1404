//! Pull-request providers ("forges"): which one a git remote belongs to, where its API is, the
//! one documented REST call that opens a pull (merge) request, and what its answer means.
//! Pure functions, no I/O: the caller makes the HTTP call.
//!
//! The remote URL is the workspace's word, so it only ever chooses *which repository* on a
//! known provider; the API base is the provider's public one or the operator's override
//! (`BERTH_GITHUB_API_URL`, `BERTH_GITLAB_API_URL`, `BERTH_AZURE_DEVOPS_API_URL`), never a host
//! the workspace names. Path segments are checked to be plain (no `..`, no separators), so they
//! cannot steer the call to another API path.

use base64::Engine as _;
use berth_domain::ErrorCode;
use serde_json::{json, Value};

use crate::config::ForgeEnv;
use crate::error::{ApiError, ApiResult};

/// A provider berth can open pull requests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Azure,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Azure => "azure",
        }
    }
}

/// The repository a remote names, on a known provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub provider: Provider,
    /// The API base berth calls (no trailing slash).
    pub api_base: String,
    /// The host a secret must be bound to for berth to use it on this API.
    pub api_host: String,
    /// The repository's path segments: `[owner, repo]` (GitHub), the project's full path
    /// (GitLab), `[organization, project, repo]` (Azure DevOps).
    pub path: Vec<String>,
}

/// A prepared API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub url: String,
    /// Header name and value (the credential is among them: never log a `Call`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// What the pull request is.
#[derive(Debug, Clone)]
pub struct PullRequest<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub head: &'a str,
    pub base: &'a str,
    pub draft: bool,
}

/// Splits a remote URL into its lower-cased host and path segments (`.git` dropped). Takes
/// `https://[user@]host[:port]/path`, `http://…`, `ssh://[user@]host[:port]/path` and scp-like
/// `[user@]host:path`; anything else is `None`.
pub fn split_remote(url: &str) -> Option<(String, Vec<String>)> {
    let url = url.trim();
    let (authority, path) = if let Some(rest) = ["https://", "http://", "ssh://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
    {
        rest.split_once('/')?
    } else if !url.contains("://") {
        url.split_once(':')?
    } else {
        return None;
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = hostport.split(':').next()?.to_ascii_lowercase();
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return None;
    }
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segs: Vec<String> = path.split('/').map(str::to_owned).collect();
    segs.iter()
        .all(|s| plain_segment(s))
        .then_some((host, segs))
}

/// A path segment that cannot change the API path it is put into.
fn plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~%-".contains(c))
}

/// The override's host, lower-cased.
fn override_host(base: Option<&str>) -> Option<String> {
    let u = reqwest::Url::parse(base?).ok()?;
    u.host_str().map(str::to_ascii_lowercase)
}

fn base(over: Option<&str>, default: &str) -> String {
    over.unwrap_or(default).trim_end_matches('/').to_owned()
}

/// The repository `url` names on a provider berth knows, or 422 `forge_unknown`.
pub fn detect(url: &str, env: &ForgeEnv) -> ApiResult<Repo> {
    let unknown = |why: &str| {
        ApiError::new(
            ErrorCode::ForgeUnknown,
            format!("the remote is {why}: berth opens pull requests on github.com, gitlab.com and dev.azure.com, and on a self-hosted instance the operator configured (BERTH_GITHUB_API_URL, BERTH_GITLAB_API_URL, BERTH_AZURE_DEVOPS_API_URL)"),
        )
    };
    let (host, segs) = split_remote(url).ok_or_else(|| unknown("not a URL berth can read"))?;
    let gh = env.github_api.as_deref();
    let gl = env.gitlab_api.as_deref();
    let az = env.azure_devops_api.as_deref();
    let repo = |provider, api_base, api_host: &str, path: Vec<String>| Repo {
        provider,
        api_base,
        api_host: api_host.to_owned(),
        path,
    };
    let self_hosted = |over: Option<&str>| override_host(over).is_some_and(|h| h == host);
    if host == "github.com" || self_hosted(gh) {
        let [owner, name] =
            <[String; 2]>::try_from(segs).map_err(|_| unknown("on GitHub but not OWNER/REPO"))?;
        let api_host = if host == "github.com" {
            "api.github.com"
        } else {
            &host
        };
        let b = base(gh, "https://api.github.com");
        return Ok(repo(Provider::GitHub, b, api_host, vec![owner, name]));
    }
    if host == "gitlab.com" || self_hosted(gl) {
        if segs.len() < 2 {
            return Err(unknown("on GitLab but not GROUP/PROJECT"));
        }
        return Ok(repo(
            Provider::GitLab,
            base(gl, "https://gitlab.com"),
            &host,
            segs,
        ));
    }
    let azure_host = host == "dev.azure.com" || host == "ssh.dev.azure.com";
    let vs_org = host.strip_suffix(".visualstudio.com").map(str::to_owned);
    if azure_host || vs_org.is_some() || self_hosted(az) {
        let path = azure_path(&host, vs_org, segs).ok_or_else(|| {
            unknown("on Azure DevOps but not ORGANIZATION/PROJECT/_git/REPOSITORY")
        })?;
        let api_host = if azure_host || host.ends_with(".visualstudio.com") {
            "dev.azure.com"
        } else {
            &host
        };
        let b = base(az, "https://dev.azure.com");
        return Ok(repo(Provider::Azure, b, api_host, path));
    }
    Err(unknown(&format!("on {host}")))
}

/// `[organization, project, repo]` from an Azure DevOps remote's path.
fn azure_path(host: &str, vs_org: Option<String>, segs: Vec<String>) -> Option<Vec<String>> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (org, project, name) = match (host, vs_org, s.as_slice()) {
        // git@ssh.dev.azure.com:v3/ORG/PROJECT/REPO
        ("ssh.dev.azure.com", _, ["v3", org, project, name]) => (*org, *project, *name),
        (_, Some(org), ["DefaultCollection", project, "_git", name] | [project, "_git", name]) => {
            return Some(vec![org, (*project).to_owned(), (*name).to_owned()])
        }
        (_, None, [org, project, "_git", name]) => (*org, *project, *name),
        _ => return None,
    };
    Some(vec![org.to_owned(), project.to_owned(), name.to_owned()])
}

/// The call that opens `pr` on `repo` with `token`.
pub fn request(repo: &Repo, pr: &PullRequest<'_>, token: &str) -> Call {
    let b = &repo.api_base;
    let p = &repo.path;
    match repo.provider {
        Provider::GitHub => Call {
            url: format!("{b}/repos/{}/{}/pulls", p[0], p[1]),
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("accept", "application/vnd.github+json".to_owned()),
                ("x-github-api-version", "2022-11-28".to_owned()),
            ],
            body: json!({"title": pr.title, "head": pr.head, "base": pr.base,
                         "body": pr.body, "draft": pr.draft}),
        },
        Provider::GitLab => {
            let title = if pr.draft {
                format!("Draft: {}", pr.title)
            } else {
                pr.title.to_owned()
            };
            Call {
                url: format!("{b}/api/v4/projects/{}/merge_requests", p.join("%2F")),
                headers: vec![("private-token", token.to_owned())],
                body: json!({"source_branch": pr.head, "target_branch": pr.base,
                             "title": title, "description": pr.body}),
            }
        }
        Provider::Azure => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{token}"));
            Call {
                url: format!(
                    "{b}/{}/{}/_apis/git/repositories/{}/pullrequests?api-version=7.1",
                    p[0], p[1], p[2]
                ),
                headers: vec![("authorization", format!("Basic {basic}"))],
                body: json!({"sourceRefName": format!("refs/heads/{}", pr.head),
                             "targetRefName": format!("refs/heads/{}", pr.base),
                             "title": pr.title, "description": pr.body, "isDraft": pr.draft}),
            }
        }
    }
}

/// The pull request's web URL and number from the provider's success answer.
pub fn created(repo: &Repo, v: &Value) -> Option<(String, u64)> {
    let (url, number) = match repo.provider {
        Provider::GitHub => (v["html_url"].as_str()?.to_owned(), v["number"].as_u64()?),
        Provider::GitLab => (v["web_url"].as_str()?.to_owned(), v["iid"].as_u64()?),
        Provider::Azure => {
            let id = v["pullRequestId"].as_u64()?;
            let web = match v["repository"]["webUrl"].as_str() {
                Some(w) => w.trim_end_matches('/').to_owned(),
                None => format!(
                    "https://dev.azure.com/{}/{}/_git/{}",
                    repo.path[0], repo.path[1], repo.path[2]
                ),
            };
            (format!("{web}/pullrequest/{id}"), id)
        }
    };
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_control);
    ok.then_some((url, number))
}

/// The provider's own error message from a refusal (GitHub adds `errors[].message`), one line.
pub fn refusal(v: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    match &v["message"] {
        Value::String(s) => parts.push(s.clone()),
        Value::Null => {}
        other => parts.push(other.to_string()),
    }
    if let Some(errs) = v["errors"].as_array() {
        parts.extend(errs.iter().filter_map(|e| {
            e["message"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| e.as_str().map(str::to_owned))
        }));
    }
    let text = parts.join("; ").replace(['\n', '\r'], " ");
    text.chars().take(300).collect()
}

#[cfg(test)]
#[path = "forge_tests.rs"]
mod tests;

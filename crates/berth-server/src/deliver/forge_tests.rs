use super::*;

fn env() -> ForgeEnv {
    ForgeEnv::default()
}

#[test]
fn remotes_split_into_host_and_path() {
    let gh = Some(("github.com".to_owned(), vec!["acme".into(), "app".into()]));
    for url in [
        "https://github.com/acme/app.git",
        "https://x-access-token:berth-placeholder-x@github.com/acme/app",
        "git@github.com:acme/app.git",
        "ssh://git@GitHub.com:22/acme/app.git/",
    ] {
        assert_eq!(split_remote(url), gh, "{url}");
    }
    for bad in [
        "file:///srv/app.git",
        "https://github.com/acme/../admin",
        "https://github.com/acme/a?b",
        "https://github.com/acme//app",
        "https://gith ub.com/acme/app",
        "/srv/app.git",
    ] {
        assert_eq!(split_remote(bad), None, "{bad}");
    }
}

#[test]
fn providers_are_detected_with_their_api() {
    let r = detect("https://github.com/acme/app.git", &env()).unwrap();
    assert_eq!(
        (r.provider, r.api_base.as_str(), r.api_host.as_str()),
        (Provider::GitHub, "https://api.github.com", "api.github.com")
    );
    let r = detect("git@gitlab.com:acme/sub/web.git", &env()).unwrap();
    assert_eq!((r.provider, r.path.len()), (Provider::GitLab, 3));
    assert_eq!(r.api_host, "gitlab.com");
    for url in [
        "https://acme@dev.azure.com/acme/Web%20App/_git/web",
        "git@ssh.dev.azure.com:v3/acme/Web%20App/web",
        "https://acme.visualstudio.com/Web%20App/_git/web",
        "https://acme.visualstudio.com/DefaultCollection/Web%20App/_git/web",
    ] {
        let r = detect(url, &env()).unwrap();
        assert_eq!(r.provider, Provider::Azure, "{url}");
        assert_eq!(r.path, ["acme", "Web%20App", "web"], "{url}");
        assert_eq!(r.api_host, "dev.azure.com", "{url}");
    }
    let e = detect("https://git.example.com/acme/app.git", &env()).unwrap_err();
    assert_eq!(e.code, ErrorCode::ForgeUnknown);
    // Only the operator makes a self-hosted instance known; the override is where berth calls.
    let own = ForgeEnv {
        github_api: Some("https://ghe.corp.example/api/v3/".into()),
        gitlab_api: Some("http://127.0.0.1:9000".into()),
        azure_devops_api: None,
    };
    let r = detect("https://ghe.corp.example/acme/app.git", &own).unwrap();
    assert_eq!(r.api_base, "https://ghe.corp.example/api/v3");
    assert_eq!(r.api_host, "ghe.corp.example");
    let r = detect("https://gitlab.com/acme/web", &own).unwrap();
    assert_eq!(r.api_base, "http://127.0.0.1:9000");
    assert_eq!(r.api_host, "gitlab.com", "the secret is still gitlab.com's");
}

#[test]
fn requests_follow_each_providers_documentation() {
    let pr = PullRequest {
        title: "Fix it",
        body: "summary",
        head: "feature/x",
        base: "main",
        draft: true,
    };
    let gh = detect("https://github.com/acme/app", &env()).unwrap();
    let c = request(&gh, &pr, "T0K");
    assert_eq!(c.url, "https://api.github.com/repos/acme/app/pulls");
    assert!(c.headers.contains(&("authorization", "Bearer T0K".into())));
    assert_eq!(c.body["draft"], true);
    assert_eq!(c.body["head"], "feature/x");

    let gl = detect("https://gitlab.com/acme/sub/web.git", &env()).unwrap();
    let c = request(&gl, &pr, "T0K");
    assert_eq!(
        c.url,
        "https://gitlab.com/api/v4/projects/acme%2Fsub%2Fweb/merge_requests"
    );
    assert_eq!(c.body["title"], "Draft: Fix it");
    assert_eq!(c.body["target_branch"], "main");
    assert!(c.headers.contains(&("private-token", "T0K".into())));

    let az = detect("https://dev.azure.com/acme/proj/_git/web", &env()).unwrap();
    let c = request(&az, &pr, "T0K");
    assert_eq!(
        c.url,
        "https://dev.azure.com/acme/proj/_apis/git/repositories/web/pullrequests?api-version=7.1"
    );
    assert_eq!(c.body["sourceRefName"], "refs/heads/feature/x");
    assert_eq!(c.body["isDraft"], true);
    assert!(c
        .headers
        .contains(&("authorization", "Basic OlQwSw==".into())));
}

#[test]
fn answers_are_read_and_checked() {
    let gh = detect("https://github.com/acme/app", &env()).unwrap();
    let v = json!({"html_url": "https://github.com/acme/app/pull/7", "number": 7});
    assert_eq!(
        created(&gh, &v),
        Some(("https://github.com/acme/app/pull/7".into(), 7))
    );
    assert_eq!(
        created(&gh, &json!({"html_url": "javascript:x", "number": 7})),
        None
    );
    let az = detect("https://dev.azure.com/acme/proj/_git/web", &env()).unwrap();
    let v = json!({"pullRequestId": 12, "repository": {"webUrl": "https://dev.azure.com/acme/proj/_git/web"}});
    assert_eq!(
        created(&az, &v).unwrap().0,
        "https://dev.azure.com/acme/proj/_git/web/pullrequest/12"
    );
    let v = json!({"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]});
    assert_eq!(
        refusal(&v),
        "Validation Failed; A pull request already exists"
    );
}
